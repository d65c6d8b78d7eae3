"""H.264 bitstream shapes the transcoder has to reconcile.

Encoders hand back Annex B (start codes), parameter sets in-band or in an
Annex B ``extradata``; the engine's media model wants AVCC (4-byte lengths)
and an ``avcC`` record. These helpers convert between the two and answer the
one question the drop policy asks of a packet: can anything refer to it?
Pure functions over bytes; malformed input raises :class:`BitstreamError`.
"""

from __future__ import annotations

from collections.abc import Iterator

from transcode.errors import SourceError

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
MAX_NAL_UNITS = 4096
"""A named bound on how many NAL units one access unit may hold."""


class BitstreamError(SourceError, ValueError):
    """Bytes that are not the H.264 framing they claim to be."""


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B buffer, start codes and the trailing zero
    bytes before the next start code removed."""
    units: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    if i < 0:
        raise BitstreamError("no Annex B start code")
    start = i + 3
    while True:
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        unit = data[start:end]
        if nxt >= 0:
            unit = unit.rstrip(b"\x00")
        if unit:
            units.append(unit)
            if len(units) > MAX_NAL_UNITS:
                raise BitstreamError("too many NAL units in one access unit")
        if nxt < 0:
            return units
        start = nxt + 3


def iter_avcc(data: bytes, length_size: int = 4) -> Iterator[bytes]:
    """The NAL units of an AVCC buffer; raises on a length that overruns."""
    pos = 0
    count = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise BitstreamError("truncated NAL length")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise BitstreamError(f"NAL length {size} overruns the packet")
        count += 1
        if count > MAX_NAL_UNITS:
            raise BitstreamError("too many NAL units in one access unit")
        yield data[pos : pos + size]
        pos += size


def join_avcc(units: list[bytes]) -> bytes:
    return b"".join(len(u).to_bytes(4, "big") + u for u in units)


def annexb_to_avcc(data: bytes) -> bytes:
    """Convert one access unit, dropping SPS, PPS and AUD NAL units (they
    live in the ``avcC`` record in the AVCC convention)."""
    return join_avcc([u for u in split_annexb(data) if u[0] & 0x1F not in (NAL_SPS, NAL_PPS, NAL_AUD)])


def build_avcc(sps_list: list[bytes], pps_list: list[bytes]) -> bytes:
    """An ``avcC`` record (ISO/IEC 14496-15 5.3.3.1) for the parameter sets.

    The 4:2:0 8-bit extension fields are written for the high profiles, which
    is what the transcoder encodes; readers use the SPS for the truth.
    """
    if not sps_list or not pps_list:
        raise BitstreamError("avcC needs at least one SPS and one PPS")
    sps = sps_list[0]
    if len(sps) < 4:
        raise BitstreamError("SPS too short")
    if len(sps_list) > 31 or len(pps_list) > 255:
        raise BitstreamError("too many parameter sets")
    out = bytearray([1, sps[1], sps[2], sps[3], 0xFF, 0xE0 | len(sps_list)])
    for unit in sps_list:
        out += len(unit).to_bytes(2, "big") + unit
    out.append(len(pps_list))
    for unit in pps_list:
        out += len(unit).to_bytes(2, "big") + unit
    if sps[1] in (100, 110, 122, 144):
        out += bytes([0xFC | 1, 0xF8 | 0, 0xF8 | 0, 0])
    return bytes(out)


def parse_avcc(record: bytes) -> tuple[list[bytes], list[bytes]]:
    """The SPS and PPS lists of an ``avcC`` record."""
    if len(record) < 7 or record[0] != 1:
        raise BitstreamError("not an avcC record")
    pos = 6
    sps: list[bytes] = []
    pps: list[bytes] = []
    for count, into in ((record[5] & 0x1F, sps), (None, pps)):
        if count is None:
            if pos >= len(record):
                raise BitstreamError("avcC truncated before the PPS count")
            count = record[pos]
            pos += 1
        for _ in range(count):
            if pos + 2 > len(record):
                raise BitstreamError("avcC truncated")
            size = int.from_bytes(record[pos : pos + 2], "big")
            pos += 2
            if size == 0 or pos + size > len(record):
                raise BitstreamError("avcC parameter set overruns the record")
            into.append(record[pos : pos + size])
            pos += size
    return sps, pps


def extradata_to_avcc(extradata: bytes) -> bytes:
    """Normalise an encoder's global header to an ``avcC`` record."""
    if extradata[:1] == b"\x01":
        parse_avcc(extradata)
        return extradata
    units = split_annexb(extradata)
    sps = [u for u in units if u[0] & 0x1F == NAL_SPS]
    pps = [u for u in units if u[0] & 0x1F == NAL_PPS]
    return build_avcc(sps, pps)


def avcc_to_annexb(record: bytes) -> bytes:
    """The parameter sets of an ``avcC`` record as an Annex B buffer."""
    sps, pps = parse_avcc(record)
    return b"".join(b"\x00\x00\x00\x01" + u for u in sps + pps)


def is_disposable(data: bytes) -> bool:
    """True when every slice of an AVCC access unit has ``nal_ref_idc`` 0,
    so no other frame refers to it and it may be dropped before decode."""
    slices = 0
    for unit in iter_avcc(data):
        kind = unit[0] & 0x1F
        if kind in (NAL_SLICE, NAL_IDR):
            slices += 1
            if unit[0] & 0x60:
                return False
    return slices > 0
