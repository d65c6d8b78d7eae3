"""Common encryption of samples (ISO/IEC 23001-7): ``cbcs`` and ``cenc``.

What the fMP4 writer asks of this module, per track and fragment: encrypt
these samples with this key, and say for each what ``senc`` must carry
(its per-sample IV, its subsample list).

- ``cbcs`` (§10.4): AES-128-CBC. Video follows the 1:9 pattern (one 16-byte
  block encrypted, nine skipped) over each subsample's protected range, the
  chain starting again from the constant IV at every subsample; audio has
  no subsamples and every whole block of the sample is encrypted (pattern
  0:0). A trailing partial block stays clear. The IV is the key period's
  constant 16-byte IV (``tenc``), so samples carry none.
- ``cenc`` (§10.1): AES-128-CTR. Video has subsamples whose protected parts
  are whole blocks, one keystream running on across a sample's protected
  parts; audio is encrypted whole. Each sample has its own 8-byte IV (the
  counter block is the IV followed by a 64-bit block counter from 0),
  derived from the period's base IV and the sample's place in the stream
  (:func:`cenc_iv_index`), so an IV is never reused under one key.

The work runs in OpenSSL through ``cryptography``: protected ranges are
gathered into one buffer per subsample (numpy strided views pick the
pattern's blocks), encrypted in one call, and scattered back. One context
serves a key for good. CBC: restarting the chain from the constant IV is
done by XOR-ing the first block of a subsample with the previous
ciphertext block and the IV, which is what a fresh context would compute.
CTR: the counter blocks of a sample are encrypted in one ECB call and the
keystream XOR-ed in by numpy, which is CTR mode without a context per
sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from drm.errors import SampleEncryptionError
from drm.model import ContentKey, KeyPeriod, Protection
from drm.subsamples import BLOCK, Subsample, SubsampleMap
from engine.media import Codec, MediaKind, Track

#: The ``cbcs`` video pattern: crypt_byte_block, skip_byte_block.
CBCS_VIDEO_PATTERN = (1, 9)
CENC_IV_SIZE = 8
SUBSAMPLE_CODECS = frozenset({Codec.H264, Codec.HEVC})
WHOLE_SAMPLE_CODECS = frozenset({Codec.AAC, Codec.OPUS})
_MASK64 = (1 << 64) - 1
_MAX_TRACK_ID = 64
_MAX_SAMPLES = 1 << 20


@dataclass(frozen=True, slots=True)
class CencEncryption:
    """What an fMP4 writer encrypts with: a scheme and the key period its
    init segment announces (fragments may name later periods)."""

    scheme: Protection
    period: KeyPeriod

    def __post_init__(self) -> None:
        if not self.scheme.common_encryption:
            raise SampleEncryptionError(f"{self.scheme.value} is not cbcs or cenc")


@dataclass(frozen=True, slots=True)
class EncryptedSample:
    """A sample's encrypted bytes and its ``senc`` entry: the per-sample IV
    (empty under a constant IV) and the subsamples (empty when the whole
    sample is protected)."""

    data: bytes
    iv: bytes
    subsamples: tuple[Subsample, ...]


def cenc_iv_index(sequence_number: int, track_id: int, sample_index: int) -> int:
    """The offset of a sample's IV from the period's base IV under ``cenc``.

    Unique for every (fragment sequence number, track, sample of the
    fragment) as long as a key period never repeats a sequence number, and
    computed without state, so a writer rebuilt mid-stream can never reuse
    an IV: sequence numbers take the top 32 bits of the 58, track IDs 6,
    sample positions 20.
    """
    if not 1 <= track_id <= _MAX_TRACK_ID:
        raise SampleEncryptionError(f"track ID {track_id} is outside 1..{_MAX_TRACK_ID}")
    if not 0 <= sample_index < _MAX_SAMPLES:
        raise SampleEncryptionError(f"a fragment holds at most {_MAX_SAMPLES} samples of a track")
    if not 0 <= sequence_number <= 0xFFFFFFFF:
        raise SampleEncryptionError(f"sequence number {sequence_number} does not fit 32 bits")
    return (((sequence_number << 6) | (track_id - 1)) << 20) | sample_index


def cenc_sample_iv(key: ContentKey, index: int) -> bytes:
    """The 8-byte IV of the sample at ``index`` (see :func:`cenc_iv_index`):
    the first 8 bytes of the period's IV, plus ``index``, modulo 2**64."""
    return ((int.from_bytes(key.iv[:CENC_IV_SIZE], "big") + index) & _MASK64).to_bytes(CENC_IV_SIZE, "big")


IV_LANE_SHIFT = 58
""":func:`cenc_iv_index` values stay below 2**58: the top 6 bits of the
8-byte IV are free for lanes."""
IV_LANES = 1 << (64 - IV_LANE_SHIFT)


def cenc_lane(key: ContentKey, lane: int) -> ContentKey:
    """``key`` with its ``cenc`` IV base moved to lane ``lane`` (0-63).

    Outputs that encrypt with one key (a stream's renditions, a VOD ladder's
    rungs) number their fragments alike, so under the same base IV they
    would use the same per-sample IVs, and AES-CTR must never meet the same
    counter twice under one key. Each output takes its own lane: the lanes'
    IV ranges are disjoint. Players read each sample's IV from ``senc``,
    so the lane needs no signalling."""
    if not 0 <= lane < IV_LANES:
        raise SampleEncryptionError(f"an IV lane is 0..{IV_LANES - 1}, not {lane}")
    base = (int.from_bytes(key.iv[:CENC_IV_SIZE], "big") + (lane << IV_LANE_SHIFT)) & _MASK64
    return ContentKey(kid=key.kid, key=key.key, iv=base.to_bytes(CENC_IV_SIZE, "big") + key.iv[CENC_IV_SIZE:])


def _xor16(a: bytes | bytearray, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(BLOCK, "big")


class SampleCipher:
    """Encrypts samples under one key and one scheme (contexts reused)."""

    def __init__(self, scheme: Protection, key: ContentKey) -> None:
        if not scheme.common_encryption:
            raise SampleEncryptionError(f"{scheme.value} is not cbcs or cenc")
        self.scheme = scheme
        self._aes = algorithms.AES(key.key)
        self._iv = key.iv
        self._cbc: CipherContext | None = None
        self._last = key.iv
        if scheme is Protection.CBCS:
            self._cbc = Cipher(self._aes, modes.CBC(key.iv)).encryptor()
        else:
            self._ecb = Cipher(self._aes, modes.ECB()).encryptor()  # the CTR keystream, see _ctr

    def encrypt(self, data: bytes, subsamples: Sequence[Subsample], iv: bytes, skip_blocks: int) -> bytes:
        """``data`` encrypted. ``subsamples`` empty: the whole sample is one
        protected range. ``iv``: the sample's 8-byte IV under ``cenc``
        (ignored under ``cbcs``). ``skip_blocks``: 9 for the ``cbcs`` video
        pattern, 0 to encrypt every whole block."""
        ranges = _protected_ranges(len(data), subsamples)
        if not ranges:
            return data
        buffer = bytearray(data)
        if self._cbc is not None:
            self._cbcs(buffer, ranges, skip_blocks)
        else:
            self._ctr(buffer, ranges, iv)
        return bytes(buffer)

    def _cbcs(self, buffer: bytearray, ranges: list[tuple[int, int]], skip_blocks: int) -> None:
        assert self._cbc is not None
        view = np.frombuffer(buffer, dtype=np.uint8)
        stride = skip_blocks + 1
        for start, size in ranges:
            blocks = size // BLOCK
            if not blocks:
                continue
            grid = view[start : start + blocks * BLOCK].reshape(blocks, BLOCK)
            chosen = grid[::stride] if stride > 1 else grid
            plain = bytearray(chosen.tobytes())
            # Restart the chain at the constant IV: the context will XOR
            # the first block with the previous ciphertext block.
            plain[:BLOCK] = _xor16(plain[:BLOCK], _xor16(self._last, self._iv))
            cipher = self._cbc.update(bytes(plain))
            self._last = cipher[-BLOCK:]
            chosen[...] = np.frombuffer(cipher, dtype=np.uint8).reshape(-1, BLOCK)

    def _ctr(self, buffer: bytearray, ranges: list[tuple[int, int]], iv: bytes) -> None:
        if len(iv) != CENC_IV_SIZE:
            raise SampleEncryptionError(f"cenc samples take an {CENC_IV_SIZE}-byte IV, not {len(iv)}")
        total = sum(size for _, size in ranges)
        blocks = -(-total // BLOCK)
        # The counter blocks (IV, then a 64-bit big-endian block number from
        # 0) are built in numpy and encrypted in one ECB call of a context
        # kept for the key: CTR without a new context per sample.
        counters = np.empty((blocks, 2), dtype=">u8")
        counters[:, 0] = int.from_bytes(iv, "big")
        counters[:, 1] = np.arange(blocks, dtype=np.uint64)
        pad = np.frombuffer(self._ecb.update(counters.tobytes()), dtype=np.uint8)
        view = np.frombuffer(buffer, dtype=np.uint8)
        pos = 0
        for start, size in ranges:
            view[start : start + size] ^= pad[pos : pos + size]
            pos += size

def _protected_ranges(size: int, subsamples: Sequence[Subsample]) -> list[tuple[int, int]]:
    if not subsamples:
        return [(0, size)] if size else []
    ranges = []
    pos = 0
    for sub in subsamples:
        pos += sub.clear
        if sub.protected:
            ranges.append((pos, sub.protected))
        pos += sub.protected
    if pos != size:
        raise SampleEncryptionError(f"subsamples cover {pos} bytes of a {size}-byte sample")
    return ranges


class TrackEncryptor:
    """Encrypts one track's samples under one scheme, key after key.

    Holds the track's subsample map (video) and a cipher per key, the last
    few kept so that key rotation does not rebuild contexts.
    """

    _KEEP_KEYS = 4

    def __init__(self, track: Track, scheme: Protection) -> None:
        if not scheme.common_encryption:
            raise SampleEncryptionError(f"{scheme.value} is not cbcs or cenc")
        if track.codec not in SUBSAMPLE_CODECS | WHOLE_SAMPLE_CODECS:
            raise SampleEncryptionError(
                f"common encryption of {track.codec.value} is not supported "
                "(it needs a codec-specific subsample map; H.264, HEVC, AAC and Opus have one)"
            )
        self.scheme = scheme
        self.video = track.kind is MediaKind.VIDEO
        self.map = SubsampleMap(track.codec, track.extradata, scheme) if track.codec in SUBSAMPLE_CODECS else None
        self.per_sample_iv_size = CENC_IV_SIZE if scheme is Protection.CENC else 0
        if scheme is Protection.CBCS and self.video:
            self.pattern = CBCS_VIDEO_PATTERN
        else:
            self.pattern = (0, 0)
        self._ciphers: dict[bytes, SampleCipher] = {}

    def encrypt(self, samples: Sequence[bytes], key: ContentKey, sequence_number: int,
                track_id: int) -> list[EncryptedSample]:
        """Encrypt the samples one fragment holds of this track, in order."""
        cipher = self._cipher(key)
        skip = self.pattern[1]
        out = []
        for index, data in enumerate(samples):
            subsamples = tuple(self.map.subsamples(data)) if self.map is not None else ()
            iv = b""
            if self.per_sample_iv_size:
                iv = cenc_sample_iv(key, cenc_iv_index(sequence_number, track_id, index))
            out.append(EncryptedSample(cipher.encrypt(data, subsamples, iv, skip), iv, subsamples))
        return out

    def _cipher(self, key: ContentKey) -> SampleCipher:
        cipher = self._ciphers.get(key.kid)
        if cipher is None:
            if len(self._ciphers) >= self._KEEP_KEYS:
                self._ciphers.pop(next(iter(self._ciphers)))
            cipher = self._ciphers[key.kid] = SampleCipher(self.scheme, key)
        return cipher
