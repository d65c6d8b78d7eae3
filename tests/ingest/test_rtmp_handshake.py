"""Handshake byte vectors: plain and digest clients, fed whole, byte by byte
and with the first chunk bytes trailing."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtmp.errors import RtmpProtocolError, RtmpUsageError
from ingest.rtmp.handshake import (
    CLIENT_KEY_SHORT,
    SERVER_KEY,
    SERVER_KEY_SHORT,
    ServerHandshake,
    make_digest_block,
)


def pattern(n: int) -> bytes:
    return bytes((i * 13 + 5) % 256 for i in range(n))


C1_PLAIN = struct.pack(">II", 1234, 0) + (bytes(range(256)) * 6)[:1528]
C2 = bytes(1536)


def feed(hs: ServerHandshake, data: bytes, mode: str) -> bytes:
    rest = b""
    if mode == "whole":
        rest = hs.receive_data(data)
    else:
        for i in range(len(data)):
            rest += hs.receive_data(data[i : i + 1])
            if hs.done:
                rest += data[i + 1 :]
                break
    return rest


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
@pytest.mark.parametrize("trailing", [b"", b"\x03\x00\x00\x00"])
def test_plain_handshake_vector(mode: str, trailing: bytes) -> None:
    hs = ServerHandshake(random_source=pattern, epoch=7)
    rest = feed(hs, b"\x03" + C1_PLAIN + C2 + trailing, mode)
    assert hs.done
    assert rest == trailing
    assert hs.digest_scheme is None
    expected = b"\x03" + struct.pack(">II", 7, 0) + pattern(1528) + C1_PLAIN
    assert hs.data_to_send() == expected
    assert hs.data_to_send() == b""


def test_reply_is_sent_before_c2() -> None:
    hs = ServerHandshake(random_source=pattern)
    assert hs.receive_data(b"\x03" + C1_PLAIN) == b""
    assert not hs.done
    assert len(hs.data_to_send()) == 1 + 2 * 1536
    hs.receive_data(C2[:1535])
    assert not hs.done
    hs.receive_data(C2[1535:])
    assert hs.done


def _offset(block: bytes, scheme: int) -> int:
    # Written out independently of the module under test.
    if scheme == 0:
        return (block[8] + block[9] + block[10] + block[11]) % 728 + 12
    return (block[772] + block[773] + block[774] + block[775]) % 728 + 776


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


@pytest.mark.parametrize("scheme", [0, 1])
def test_digest_client_gets_signed_s1_and_s2(scheme: int) -> None:
    c1 = make_digest_block(struct.pack(">I", 0) + bytes((9, 0, 124, 2)), pattern(1528), scheme, CLIENT_KEY_SHORT)
    off = _offset(c1, scheme)
    client_digest = c1[off : off + 32]
    assert client_digest == _hmac(CLIENT_KEY_SHORT, c1[:off] + c1[off + 32 :])
    hs = ServerHandshake(random_source=pattern)
    hs.receive_data(b"\x03" + c1 + C2)
    assert hs.done and hs.digest_scheme == scheme
    out = hs.data_to_send()
    s1, s2 = out[1:1537], out[1537:]
    s_off = _offset(s1, scheme)
    assert s1[4:8] != b"\x00\x00\x00\x00"
    assert s1[s_off : s_off + 32] == _hmac(SERVER_KEY_SHORT, s1[:s_off] + s1[s_off + 32 :])
    assert s2[1504:] == _hmac(_hmac(SERVER_KEY, client_digest), s2[:1504])


def test_nonzero_version_without_valid_digest_gets_plain_reply() -> None:
    c1 = struct.pack(">I", 0) + bytes((9, 0, 124, 2)) + pattern(1528)
    hs = ServerHandshake(random_source=pattern)
    hs.receive_data(b"\x03" + c1 + C2)
    assert hs.digest_scheme is None
    assert hs.data_to_send()[1537:] == c1


@pytest.mark.parametrize("version", [0, 6, 8, 0xFF])
def test_other_versions_are_refused(version: int) -> None:
    with pytest.raises(RtmpProtocolError, match="version"):
        ServerHandshake().receive_data(bytes((version,)))


def test_feeding_after_done_is_a_usage_error() -> None:
    hs = ServerHandshake()
    hs.receive_data(b"\x03" + C1_PLAIN + C2)
    with pytest.raises(RtmpUsageError):
        hs.receive_data(b"x")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000), st.integers(1, 600))
def test_garbage_only_raises_protocol_errors(data: bytes, step: int) -> None:
    hs = ServerHandshake(random_source=pattern)
    try:
        for i in range(0, len(data), step):
            if hs.done:
                break
            hs.receive_data(data[i : i + step])
    except RtmpProtocolError:
        assert data[0] != 3
    else:
        assert hs.done == (len(data) >= 3073)
