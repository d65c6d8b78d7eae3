"""NAL unit framing for H.264 and HEVC: length-prefixed (AVCC/HVCC, the
engine's convention) and Annex B start codes (what MPEG-TS and WebRTC
packetizers want), plus the per-packet questions outputs and stages ask
(which NAL types, is it a random access point, may it be dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from engine.codecs.errors import CodecError
from engine.media import Codec

START_CODE = b"\x00\x00\x00\x01"

_SPS_TYPES = {Codec.H264: 7, Codec.HEVC: 33}
_H264_SLICE = 1
_H264_IDR = 5


def _check_length_size(length_size: int) -> None:
    if length_size not in (1, 2, 4):
        raise CodecError(f"NAL length size {length_size} is not 1, 2 or 4")


def iter_avcc(data: bytes, length_size: int = 4) -> Iterator[bytes]:
    """Yield the NAL units of a length-prefixed packet.

    The length is always read as a length, even when its bytes look like an
    Annex B start code (a 4-byte length of 256..511 begins ``00 00 01``).
    """
    _check_length_size(length_size)
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


def join_avcc(units: Iterable[bytes], length_size: int = 4) -> bytes:
    """Length-prefix NAL units (the inverse of :func:`iter_avcc`)."""
    _check_length_size(length_size)
    limit = 1 << (8 * length_size)
    out = []
    for nal in units:
        if not nal or len(nal) >= limit:
            raise CodecError(f"NAL unit of {len(nal)} bytes does not fit a {length_size}-byte length")
        out.append(len(nal).to_bytes(length_size, "big") + nal)
    return b"".join(out)


def avcc_to_annexb(
    data: bytes, length_size: int = 4, parameter_sets: Sequence[bytes] = (), codec: Codec = Codec.H264
) -> bytes:
    """Convert a length-prefixed packet to Annex B with 4-byte start codes.

    ``parameter_sets`` (the track record's units, see
    :func:`~engine.codecs.describe.parameter_sets`) are written first unless
    the packet carries its own SPS: Annex B receivers (MPEG-TS, WebRTC) have
    no out-of-band record, so callers pass them for keyframes, where a
    receiver may start decoding.
    """
    nals = list(iter_avcc(data, length_size))
    if parameter_sets and not any(nal_type(nal, codec) == _SPS_TYPES.get(codec) for nal in nals):
        nals = [*parameter_sets, *nals]
    return b"".join(START_CODE + nal for nal in nals)


def read_record_units(data: bytes, pos: int, count: int, what: str) -> tuple[tuple[bytes, ...], int]:
    """Read ``count`` NAL units with 16-bit lengths from a decoder
    configuration record (the list shape avcC and hvcC share), starting at
    ``pos``; returns them and the position after the last. ``what`` names
    the list in errors."""
    units = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise CodecError(f"{what} list truncated in a length field")
        size = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if size == 0 or pos + size > len(data):
            raise CodecError(f"{what} length {size} does not fit the record")
        units.append(data[pos : pos + size])
        pos += size
    return tuple(units), pos


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
    """Convert Annex B to length-prefixed NAL units, all of them kept (see
    :func:`~engine.codecs.avc.annexb_access_unit_to_avcc` for the engine's
    H.264 packet convention)."""
    return join_avcc(split_annexb(data), length_size)


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


def is_disposable(data: bytes, codec: Codec, length_size: int = 4) -> bool:
    """Whether nothing can refer to a length-prefixed packet, so a stage that
    falls behind may drop it before decode.

    H.264: every slice has ``nal_ref_idc`` 0 (a packet without slices is not
    disposable). Other codecs answer ``False``: an HEVC sub-layer
    non-reference picture may still be referenced from a higher temporal
    sub-layer, so only the H.264 answer is certain.
    """
    if codec is not Codec.H264:
        return False
    slices = 0
    for nal in iter_avcc(data, length_size):
        if (nal[0] & 0x1F) in (_H264_SLICE, _H264_IDR):
            slices += 1
            if nal[0] & 0x60:
                return False
    return slices > 0
