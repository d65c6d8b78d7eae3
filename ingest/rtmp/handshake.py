"""The server side of the RTMP handshake (C0/C1/C2 against S0/S1/S2).

Two client flavours exist. The plain one (RTMP spec 5.2) sends 1536 random
bytes in C1 with a zero version field; the server answers S1 (its own random
bytes) and S2 (an echo of C1). Flash-era clients (ffmpeg, librtmp, OBS) send
a "digest" C1: a non-zero version field and an HMAC-SHA256 digest hidden at an
offset derived from C1 itself (scheme 0 counts from byte 8, scheme 1 from byte
772). Players check that the server proved knowledge of the same key, so for
those we place a digest in S1 and sign S2 with a key derived from C1's
digest; publishers do not check, but answering in kind costs nothing.

Usage: feed bytes to :meth:`ServerHandshake.receive_data` until :attr:`done`;
it returns whatever bytes followed C2 (the first chunks), which the caller
hands to the chunk layer. Send :meth:`data_to_send` after each call.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from ingest.rtmp.errors import RtmpProtocolError, RtmpUsageError

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
CLIENT_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
"""The key Flash-style clients sign C1 with (its first 30 bytes)."""
SERVER_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
"""The key a server signs S1 with (its first 36 bytes) and derives the S2 key
from (all 68 bytes)."""
CLIENT_KEY_SHORT = CLIENT_KEY[:30]
SERVER_KEY_SHORT = SERVER_KEY[:36]

SERVER_VERSION = bytes((4, 5, 0, 1))
"""Version field of a digest S1 (what Flash Media Server 4.5 sends)."""


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_offset(block: bytes, scheme: int) -> int:
    """Where the digest sits inside a 1536-byte C1/S1 for ``scheme`` (0 or 1)."""
    base = 8 if scheme == 0 else 772
    return sum(block[base : base + 4]) % 728 + base + 4


def block_digest(block: bytes, offset: int, key: bytes) -> bytes:
    """The HMAC of ``block`` with its 32 digest bytes at ``offset`` left out."""
    return hmac_sha256(key, block[:offset] + block[offset + DIGEST_SIZE :])


def find_client_digest(c1: bytes) -> tuple[int, bytes] | None:
    """Return ``(scheme, digest)`` when ``c1`` carries a valid client digest."""
    for scheme in (1, 0):
        offset = digest_offset(c1, scheme)
        expected = block_digest(c1, offset, CLIENT_KEY_SHORT)
        if hmac.compare_digest(expected, c1[offset : offset + DIGEST_SIZE]):
            return scheme, expected
    return None


def make_digest_block(prefix: bytes, random_part: bytes, scheme: int, key: bytes) -> bytes:
    """Build a 1536-byte C1/S1: ``prefix`` (time and version, 8 bytes), then
    ``random_part`` with a digest written in at ``scheme``'s offset."""
    block = bytearray(prefix + random_part)
    if len(block) != HANDSHAKE_SIZE:
        raise RtmpUsageError("a handshake block is 1536 bytes")
    offset = digest_offset(bytes(block), scheme)
    block[offset : offset + DIGEST_SIZE] = block_digest(bytes(block), offset, key)
    return bytes(block)


def sign_s2(random_part: bytes, client_digest: bytes) -> bytes:
    """A digest S2: 1504 random bytes and their HMAC under a key derived from
    the client's C1 digest."""
    if len(random_part) != HANDSHAKE_SIZE - DIGEST_SIZE:
        raise RtmpUsageError("the S2 random part is 1504 bytes")
    key = hmac_sha256(SERVER_KEY, client_digest)
    return random_part + hmac_sha256(key, random_part)


class ServerHandshake:
    """Server handshake state. ``random_source(n)`` supplies random bytes
    (defaults to :func:`os.urandom`; tests pass a fixed one for exact
    vectors); ``epoch`` is the server's time field in S1."""

    def __init__(self, random_source: Callable[[int], bytes] | None = None, epoch: int = 0) -> None:
        self._random: Callable[[int], bytes] = random_source or os.urandom
        self._epoch = epoch & 0xFFFFFFFF
        self._buf = bytearray()
        self._out = bytearray()
        self._sent_reply = False
        self.done = False
        self.digest_scheme: int | None = None
        """0 or 1 when the client used the digest variant, else ``None``."""

    def receive_data(self, data: bytes) -> bytes:
        """Consume handshake bytes; return the bytes after C2 once done.

        Raises :class:`RtmpProtocolError` when C0 asks for another version
        (6 and 8 are RTMPE, which we do not speak).
        """
        if self.done:
            raise RtmpUsageError("the handshake is already complete")
        self._buf += data
        if not self._sent_reply:
            if not self._buf:
                return b""
            if self._buf[0] != RTMP_VERSION:
                raise RtmpProtocolError(
                    f"unsupported RTMP version {self._buf[0]} in C0 (only 3; RTMPE is not supported)"
                )
            if len(self._buf) < 1 + HANDSHAKE_SIZE:
                return b""
            c1 = bytes(self._buf[1 : 1 + HANDSHAKE_SIZE])
            del self._buf[: 1 + HANDSHAKE_SIZE]
            self._reply(c1)
        if len(self._buf) < HANDSHAKE_SIZE:
            return b""
        # C2 echoes S1 (plain) or is signed with S1's digest; clients differ in
        # how faithfully they do either, so like other servers we do not check.
        rest = bytes(self._buf[HANDSHAKE_SIZE:])
        self._buf.clear()
        self.done = True
        return rest

    def _reply(self, c1: bytes) -> None:
        self._sent_reply = True
        rand = self._random
        time_field = struct.pack(">I", self._epoch)
        found = find_client_digest(c1) if c1[4:8] != b"\x00\x00\x00\x00" else None
        if found is None:
            s1 = time_field + b"\x00\x00\x00\x00" + bytes(rand(HANDSHAKE_SIZE - 8))
            s2 = c1
        else:
            scheme, client_digest = found
            self.digest_scheme = scheme
            s1 = make_digest_block(
                time_field + SERVER_VERSION, bytes(rand(HANDSHAKE_SIZE - 8)), scheme, SERVER_KEY_SHORT
            )
            s2 = sign_s2(bytes(rand(HANDSHAKE_SIZE - DIGEST_SIZE)), client_digest)
        self._out += bytes((RTMP_VERSION,)) + s1 + s2

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out
