"""AV1: the ``av1C`` record and the sequence header fields the packager uses.

References: AV1 Codec ISOBMFF Binding §2.3 (av1C) and the AV1 bitstream
specification §5.5 (sequence_header_obu). The sequence header is read only up
to the maximum frame size, which is the picture size for the live encoders
the engine receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from engine.codecs.bits import BitReader
from engine.codecs.errors import CodecError

OBU_SEQUENCE_HEADER = 1


@dataclass(frozen=True, slots=True)
class Av1Config:
    """The fields of an ``av1C`` record; ``config_obus`` holds the OBUs that
    follow the four fixed bytes (normally one sequence header)."""

    profile: int
    level: int
    tier: int
    bit_depth: int
    monochrome: bool
    subsampling_x: int
    subsampling_y: int
    chroma_sample_position: int
    config_obus: bytes


@dataclass(frozen=True, slots=True)
class Av1SequenceHeader:
    profile: int
    width: int
    height: int
    frame_rate: Fraction | None


def parse_av1c(data: bytes) -> Av1Config:
    """Parse an ``av1C`` record (the AV1 track's extradata)."""
    if len(data) < 4:
        raise CodecError(f"av1C record too short ({len(data)} bytes)")
    if data[0] != 0x81:
        raise CodecError(f"av1C marker/version byte is {data[0]:#04x}, expected 0x81")
    b1, b2 = data[1], data[2]
    high_bitdepth = bool(b2 & 0x40)
    twelve_bit = bool(b2 & 0x20)
    return Av1Config(
        profile=b1 >> 5,
        level=b1 & 0x1F,
        tier=b2 >> 7,
        bit_depth=(12 if twelve_bit else 10) if high_bitdepth else 8,
        monochrome=bool(b2 & 0x10),
        subsampling_x=(b2 >> 3) & 1,
        subsampling_y=(b2 >> 2) & 1,
        chroma_sample_position=b2 & 0x03,
        config_obus=bytes(data[4:]),
    )


def iter_obus(data: bytes) -> list[tuple[int, bytes]]:
    """Split low-overhead OBUs into ``(obu_type, payload)`` pairs."""
    out = []
    pos = 0
    while pos < len(data):
        header = data[pos]
        if header & 0x80:
            raise CodecError("OBU forbidden bit is set")
        obu_type = (header >> 3) & 0x0F
        pos += 2 if header & 0x04 else 1
        if pos > len(data):
            raise CodecError("OBU header truncated")
        if header & 0x02:
            size, pos = _leb128(data, pos)
        else:
            size = len(data) - pos
        if pos + size > len(data):
            raise CodecError(f"OBU size {size} runs past the data")
        out.append((obu_type, data[pos : pos + size]))
        pos += size
    return out


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    """Read a ``leb128()`` value at ``pos``; return it and the next position."""
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise CodecError("OBU size field truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise CodecError("OBU size field longer than 8 bytes")


def parse_sequence_header(payload: bytes) -> Av1SequenceHeader:
    """Parse a sequence header OBU payload up to the maximum frame size."""
    r = BitReader(payload)
    profile = r.u(3)
    r.skip(1)  # still_picture
    reduced = r.flag()
    frame_rate = None
    if reduced:
        r.skip(5)  # seq_level_idx[0]
    else:
        decoder_model = False
        buffer_delay_bits = 0
        if r.flag():  # timing_info_present_flag
            units = r.u(32)
            scale = r.u(32)
            ticks = r.uvlc() + 1 if r.flag() else 0
            if units and scale and ticks:
                frame_rate = Fraction(scale, units * ticks)
            decoder_model = r.flag()
            if decoder_model:
                buffer_delay_bits = r.u(5) + 1
                r.skip(32 + 5 + 5)
        initial_delay = r.flag()
        for _ in range(r.u(5) + 1):
            r.skip(12)  # operating_point_idc
            if r.u(5) > 7:
                r.skip(1)  # seq_tier
            if decoder_model and r.flag():
                r.skip(2 * buffer_delay_bits + 1)
            if initial_delay and r.flag():
                r.skip(4)
    width_bits = r.u(4) + 1
    height_bits = r.u(4) + 1
    width = r.u(width_bits) + 1
    height = r.u(height_bits) + 1
    return Av1SequenceHeader(profile, width, height, frame_rate)


def sequence_header(config: Av1Config) -> Av1SequenceHeader | None:
    """The parsed sequence header among the record's config OBUs, if any."""
    for obu_type, payload in iter_obus(config.config_obus):
        if obu_type == OBU_SEQUENCE_HEADER:
            return parse_sequence_header(payload)
    return None


def av1_codec_string(config: Av1Config) -> str:
    """RFC 6381 ``av01.P.LLT.DD`` (profile, level, tier, bit depth); the
    optional colour fields are left out, as their defaults apply."""
    tier = "H" if config.tier else "M"
    return f"av01.{config.profile}.{config.level:02d}{tier}.{config.bit_depth:02d}"
