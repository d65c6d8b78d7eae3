"""Encrypting HLS segments: which key each segment gets, its IV, whole-segment
AES-128, and the ``EXT-X-KEY`` tags that announce it.

A stream's :class:`SegmentProtection` (its scheme, where its keys come from
and how often they rotate) is given to the segmenter. The segmenter picks a
key period for each segment (:class:`drm.rotation.KeyRotation`, pure), asks the protection
for that period's key once, and, for AES-128, derives the segment's IV from
the period IV and the segment's number (:func:`segment_iv`); sample schemes
use the period IV. The playlist states the IV explicitly (``IV=0x...``), so
players never have to guess it from a media sequence number that another
rendition numbers differently.

AES-128 (RFC 8216bis 4.4.4.4, 5.2) encrypts a whole segment with AES-CBC and
PKCS7 padding. LL-HLS parts are encrypted the same way, each on its own with
its parent segment's key and IV: a part is fetched and decrypted alone
(hls.js decrypts each part with its fragment's key and IV and strips the
padding), and the parent segment is the encryption of its parts' clear bytes
joined, so a player that loads either gets the same media.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from drm.model import KEY_BYTES, KeyPeriod, Protection, SystemId
from drm.rotation import KeyRotation
from packager.errors import PackagerError
from packager.hls.playlist import KeyTag

KEYFORMAT_IDENTITY = "identity"
KEYFORMAT_FAIRPLAY = "com.apple.streamingkeydelivery"
_IV_MODULUS = 1 << (8 * KEY_BYTES)


class ProtectionError(PackagerError):
    """A stream's protection cannot be applied (a scheme this output cannot
    write, a key period the provider would not give)."""


def segment_iv(period_iv: bytes, sequence: int) -> bytes:
    """The IV of segment ``sequence``: the period IV plus the segment number,
    as 128-bit big-endian integers (modulo 2**128). Every segment of a period
    gets its own IV."""
    if len(period_iv) != KEY_BYTES or sequence < 0:
        raise ProtectionError("an IV is 16 bytes and a segment number is not negative")
    value = (int.from_bytes(period_iv, "big") + sequence) % _IV_MODULUS
    return value.to_bytes(KEY_BYTES, "big")


def encrypt_whole(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CBC with PKCS7 padding of a whole segment or part (in C)."""
    pad = KEY_BYTES - len(data) % KEY_BYTES
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.update(bytes((pad,)) * pad) + encryptor.finalize()


@dataclass(frozen=True, slots=True)
class SegmentKey:
    """The key and IV one segment (and each of its parts) is encrypted with."""

    period: KeyPeriod
    iv: bytes

    def __repr__(self) -> str:
        return f"SegmentKey(period={self.period.index}, kid={self.period.key.kid.hex()})"


KeyPeriods = Callable[[int], KeyPeriod]
"""Period index in, key period out; may block (a key service): it is called
only from the stream's job queue."""

SAMPLE_SCHEMES = (Protection.SAMPLE_AES, Protection.CBCS, Protection.CENC)


@dataclass(frozen=True, slots=True)
class SegmentProtection:
    """How one stream's (or asset's) segments are encrypted.

    ``key_uri`` maps a key ID to the URI players fetch the key from (the
    engine's ``/keys/NAME/KIDHEX``); the HTTP layer adds the viewer's token to
    it like to every other URI of the playlist.
    """

    scheme: Protection
    periods: KeyPeriods
    key_uri: Callable[[bytes], str]
    rotate_every: int = 0
    """Segments per key period (0: new periods only at discontinuities)."""
    first_period: Callable[[], int] = lambda: 0
    """The first segment's period; may block (it asks the key store for the
    name's highest period so far), so it is called from the stream's job
    queue, and must answer the same to every rendition of the stream."""

    def __post_init__(self) -> None:
        if not self.scheme.encrypted:
            raise ProtectionError("a segment protection needs an encrypting scheme")
        if self.rotate_every < 0:
            raise ProtectionError("key rotation counts are not negative")

    def rotation(self) -> KeyRotation:
        """A new counter of segments into key periods, for one segmenter."""
        return KeyRotation(self.rotate_every, self.first_period())

    @property
    def whole_segment(self) -> bool:
        """AES-128: the segmenter encrypts muxed bytes; otherwise the muxer
        encrypts samples."""
        return self.scheme is Protection.AES_128


def key_uri_under(base: str, content_id: str) -> Callable[[bytes], str]:
    """``BASE/CONTENT_ID/KIDHEX``: where the key endpoint serves a key."""
    prefix = base.rstrip("/")
    return lambda kid: f"{prefix}/{content_id}/{kid.hex()}"


def key_tags(protection: SegmentProtection, key: SegmentKey, fmp4: bool) -> tuple[KeyTag, ...]:
    """The ``EXT-X-KEY`` tags of a segment encrypted with ``key``.

    AES-128, and SAMPLE-AES in MPEG-TS: the identity key at the engine's key
    endpoint with the segment's IV (and FairPlay's ``skd://`` URI when the
    provider gave one). ``cbcs`` in fMP4 (``SAMPLE-AES`` in HLS, the constant
    IV is in the init segment) and ``cenc`` (``SAMPLE-AES-CTR``, which Shaka
    Player and Widevine/PlayReady players take; Safari and hls.js do not):
    one tag per DRM system that HLS can name:
    a ``pssh`` in a ``data:`` URI for ClearKey and Widevine, FairPlay's
    ``skd://`` URI; and the identity key at the engine's key endpoint when
    the key is the engine's to hand out (ClearKey) or no system is named.
    """
    period = key.period
    uri = protection.key_uri(period.key.kid)
    scheme = protection.scheme
    if scheme is Protection.AES_128:
        return (KeyTag("AES-128", uri, iv=key.iv, key_format=KEYFORMAT_IDENTITY, key_format_versions="1"),)
    if scheme is Protection.CENC and not fmp4:
        raise ProtectionError("cenc (AES-CTR) is common encryption for fMP4")
    # Common encryption in CMAF: SAMPLE-AES is cbcs, SAMPLE-AES-CTR cenc.
    method = "SAMPLE-AES-CTR" if scheme is Protection.CENC else "SAMPLE-AES"
    fairplay = tuple(
        KeyTag(method, s.hls_key_uri, key_format=s.hls_key_format, key_format_versions="1", own_uri=False)
        for s in period.systems
        if s.hls_key_format is not None and s.hls_key_uri is not None
    )
    if not fmp4:
        identity = KeyTag("SAMPLE-AES", uri, iv=key.iv, key_format=KEYFORMAT_IDENTITY, key_format_versions="1")
        return (identity, *fairplay)
    tags = [
        KeyTag(method, data_uri(s.pssh), key_format=f"urn:uuid:{s.system_id}", key_format_versions="1",
               own_uri=False)
        for s in period.systems
        if s.pssh is not None and s.hls_key_uri is None and s.system_id in _PSSH_IN_HLS
    ]
    tags.extend(fairplay)
    clearkey = any(s.system_id == SystemId.CLEARKEY.value for s in period.systems)
    if clearkey or not tags:
        # The engine hands this key out itself: the identity key at its key
        # endpoint too, which HLS readers that know no ClearKey KEYFORMAT
        # (Shaka's) turn into a ClearKey key with the init segment's key ID.
        tags.append(KeyTag(method, uri, key_format=KEYFORMAT_IDENTITY, key_format_versions="1"))
    return tuple(tags)


_PSSH_IN_HLS = (SystemId.CLEARKEY.value, SystemId.WIDEVINE.value)


def data_uri(payload: bytes) -> str:
    """A ``data:`` URI carrying a ``pssh`` box, as HLS ``EXT-X-KEY`` URIs do."""
    return "data:text/plain;base64," + base64.b64encode(payload).decode("ascii")
