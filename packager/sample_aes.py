"""HLS SAMPLE-AES for MPEG-TS elementary streams (Apple's "MPEG-2 Stream
Encryption Format for HTTP Live Streaming").

Only parts of each sample are encrypted, with AES-128-CBC and the IV reset
at every sample, so that a demuxer can still find frames and headers:

- H.264: NAL units of type 1 and 5 (slices) longer than 48 bytes. The first
  32 bytes (NAL header and slice header) stay clear; after them, one 16-byte
  block of every ten is encrypted, the blocks chained in CBC. A block is
  encrypted only when at least one byte follows it, so a NAL unit always
  ends in clear bytes. The NAL unit is encrypted as it is carried (with its
  own emulation prevention bytes); emulation prevention is then applied
  again to the result, since ciphertext can form start codes. A decryptor
  removes one level of emulation prevention, decrypts, and has the original
  NAL unit back.
- AAC in ADTS: the ADTS header and the first 16 bytes of the raw frame stay
  clear; every whole 16-byte block after them is encrypted (CBC); a last
  partial block stays clear.

Everything per block runs in C (``cryptography``); this module only picks
the byte ranges.
"""

from __future__ import annotations

import re

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
NAL_CLEAR_LEAD = 32
NAL_MIN_ENCRYPTED = 48
"""NAL units of this length or shorter are left clear."""
NAL_STRIDE = 160
"""One encrypted block, then nine clear ones."""
AAC_CLEAR_LEAD = 16
ENCRYPTED_NAL_TYPES = (1, 5)


def _cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


_NEEDS_EPB = re.compile(rb"\x00\x00(?=[\x00-\x03])")
_EPB = re.compile(rb"\x00\x00\x03")


def escape(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes (H.264 7.4.1): a 0x03 after two
    zero bytes that a byte of 0x00 to 0x03 follows, and after a trailing
    pair of zero bytes. (The regular expression runs in C; a match consumes
    its two zeros, so the byte that follows starts the next count, as the
    standard's byte-by-byte rule does.)"""
    if b"\x00\x00" not in rbsp:
        return rbsp
    out = _NEEDS_EPB.sub(b"\x00\x00\x03", rbsp)
    return out + b"\x03" if out.endswith(b"\x00\x00") else out


def unescape(data: bytes) -> bytes:
    """Remove emulation prevention bytes: every 0x03 after two zero bytes."""
    if b"\x00\x00\x03" not in data:
        return data
    return _EPB.sub(b"\x00\x00", data)


def nal_blocks(length: int) -> range:
    """Offsets of the encrypted blocks of a NAL unit of ``length`` bytes
    (after one level of emulation prevention is removed)."""
    return range(NAL_CLEAR_LEAD, max(NAL_CLEAR_LEAD, length - BLOCK), NAL_STRIDE)


def encrypt_nal(key: bytes, iv: bytes, nal: bytes) -> bytes:
    """One H.264 NAL unit (header byte first, no start code) as carried in
    a SAMPLE-AES stream: unchanged unless it is a slice of more than 48
    bytes."""
    if len(nal) <= NAL_MIN_ENCRYPTED or (nal[0] & 0x1F) not in ENCRYPTED_NAL_TYPES:
        return nal
    offsets = nal_blocks(len(nal))
    if not offsets:
        return nal
    selected = b"".join(nal[o : o + BLOCK] for o in offsets)
    cipher = _cbc(key, iv, selected)
    out = bytearray(nal)
    for n, o in enumerate(offsets):
        out[o : o + BLOCK] = cipher[n * BLOCK : (n + 1) * BLOCK]
    return escape(bytes(out))


def encrypt_aac_frame(key: bytes, iv: bytes, frame: bytes) -> bytes:
    """One raw AAC frame (without its ADTS header) as carried in a
    SAMPLE-AES stream."""
    end = len(frame) - (len(frame) - AAC_CLEAR_LEAD) % BLOCK if len(frame) > AAC_CLEAR_LEAD else 0
    if end - AAC_CLEAR_LEAD < BLOCK:
        return frame
    return frame[:AAC_CLEAR_LEAD] + _cbc(key, iv, frame[AAC_CLEAR_LEAD:end]) + frame[end:]
