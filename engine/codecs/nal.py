"""NAL unit framing for H.264 and HEVC: length-prefixed (AVCC/HVCC, the
engine's convention) and Annex B start codes (what MPEG-TS and WebRTC
packetizers want), plus the per-packet questions outputs ask (which NAL
types, is it a random access point).
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.codecs.errors import CodecError
from engine.media import Codec

START_CODE = b"\x00\x00\x00\x01"


def iter_avcc(data: bytes, length_size: int = 4) -> Iterator[bytes]:
    """Yield the NAL units of a length-prefixed packet."""
    if length_size not in (1, 2, 4):
        raise CodecError(f"NAL length size {length_size} is not 1, 2 or 4")
    pos = 0
    end = len(data)
    while pos < end:
        if pos + length_size > end:
            raise CodecError("length-prefixed packet truncated in a length field")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > end:
            raise CodecError(f"NAL unit length {size} does not fit the packet ({end - pos} bytes left)")
        yield data[pos : pos + size]
        pos += size


def avcc_to_annexb(data: bytes, length_size: int = 4) -> bytes:
    """Convert a length-prefixed packet to Annex B with 4-byte start codes."""
    return b"".join(START_CODE + nal for nal in iter_avcc(data, length_size))


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream into NAL units (start codes and the
    trailing zero bytes before the next start code removed)."""
    units = []
    start = data.find(b"\x00\x00\x01")
    if start < 0:
        if data.strip(b"\x00"):
            raise CodecError("Annex B data has no start code")
        return []
    if data[:start].strip(b"\x00"):
        raise CodecError("Annex B data does not begin with a start code")
    pos = start + 3
    while True:
        nxt = data.find(b"\x00\x00\x01", pos)
        end = len(data) if nxt < 0 else nxt
        nal = data[pos:end].rstrip(b"\x00")
        if nal:
            units.append(nal)
        if nxt < 0:
            return units
        pos = nxt + 3


def annexb_to_avcc(data: bytes, length_size: int = 4) -> bytes:
    """Convert Annex B to length-prefixed NAL units."""
    if length_size not in (1, 2, 4):
        raise CodecError(f"NAL length size {length_size} is not 1, 2 or 4")
    out = []
    limit = 1 << (8 * length_size)
    for nal in split_annexb(data):
        if len(nal) >= limit:
            raise CodecError(f"NAL unit of {len(nal)} bytes does not fit a {length_size}-byte length")
        out.append(len(nal).to_bytes(length_size, "big") + nal)
    return b"".join(out)


def nal_type(nal: bytes, codec: Codec) -> int:
    """The NAL unit type from a NAL unit's header."""
    if not nal:
        raise CodecError("empty NAL unit")
    if codec is Codec.H264:
        return nal[0] & 0x1F
    if codec is Codec.HEVC:
        return (nal[0] >> 1) & 0x3F
    raise CodecError(f"{codec.value} has no NAL units")


def nal_unit_types(data: bytes, codec: Codec, length_size: int = 4) -> list[int]:
    """The NAL unit types of a length-prefixed packet, in order."""
    return [nal_type(nal, codec) for nal in iter_avcc(data, length_size)]


def is_random_access(data: bytes, codec: Codec, length_size: int = 4) -> bool:
    """Whether a length-prefixed packet holds an IDR slice (H.264) or an
    IRAP picture (HEVC types 16 to 23)."""
    types = nal_unit_types(data, codec, length_size)
    if codec is Codec.H264:
        return 5 in types
    return any(16 <= t <= 23 for t in types)
