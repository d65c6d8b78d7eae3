"""H.264: the ``avcC`` decoder configuration record (parsed, and built from
parameter sets that arrive in-band or in an encoder's Annex B header), the
SPS fields the packager needs (picture size after cropping, frame rate from
VUI timing), and Annex B access units turned into the engine's packets.

References: ISO/IEC 14496-15 §5.3.3 (avcC) and ITU-T H.264 §7.3.2.1.1 (SPS),
§E.1.1 (VUI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from engine.codecs.bits import BitReader, unescape_rbsp
from engine.codecs.errors import CodecError
from engine.codecs.nal import join_avcc, read_record_units, split_annexb

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

OUT_OF_BAND = frozenset({NAL_SPS, NAL_PPS, NAL_AUD})
"""NAL types an AVCC packet leaves out: parameter sets live in the ``avcC``
record, and length prefixes make access unit delimiters pointless."""

MAX_SPS = 31
MAX_PPS = 255
MAX_PARAMETER_SET = 0xFFFF
"""An ``avcC`` record counts SPS in 5 bits, PPS in 8 and stores each
parameter set's length in 16 bits."""

#: Profiles whose SPS carries chroma format, bit depth and scaling lists.
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """The fields of an ``avcC`` record."""

    profile: int
    compatibility: int
    level: int
    nal_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AvcSps:
    """The SPS fields the engine uses: the displayed size (cropping applied)
    and the frame rate when the VUI carries timing information."""

    profile: int
    level: int
    chroma_format_idc: int
    width: int
    height: int
    frame_rate: Fraction | None
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8
    # What a slice header's syntax depends on (H.264 §7.3.3):
    sps_id: int = 0
    separate_colour_plane: bool = False
    log2_max_frame_num: int = 4
    poc_type: int = 0
    log2_max_poc_lsb: int = 4
    delta_pic_order_always_zero: bool = False
    frame_mbs_only: bool = True


def parse_avcc(data: bytes) -> AvcConfig:
    """Parse an ``avcC`` record (the H.264 track's extradata)."""
    if len(data) < 7:
        raise CodecError(f"avcC record too short ({len(data)} bytes)")
    if data[0] != 1:
        raise CodecError(f"avcC configurationVersion {data[0]} is not 1 (is this Annex B extradata?)")
    pos = 6
    count = data[5] & 0x1F
    sps, pos = read_record_units(data, pos, count, "avcC SPS")
    if pos >= len(data):
        raise CodecError("avcC record truncated before the PPS count")
    count = data[pos]
    pps, pos = read_record_units(data, pos + 1, count, "avcC PPS")
    return AvcConfig(
        profile=data[1],
        compatibility=data[2],
        level=data[3],
        nal_length_size=(data[4] & 0x03) + 1,
        sps=sps,
        pps=pps,
    )


def build_avcc(sps: Sequence[bytes], pps: Sequence[bytes], length_size: int = 4) -> bytes:
    """Build an ``avcC`` record (ISO/IEC 14496-15 §5.3.3.1) from parameter
    sets, for sources that carry them in-band or in an Annex B header.

    Profile, compatibility and level come from the first SPS. For the
    profiles whose SPS carries chroma format and bit depth, the record ends
    with those fields, read from that SPS (so a High profile SPS must parse).
    """
    if not sps or not pps:
        raise CodecError("an avcC record needs at least one SPS and one PPS")
    if len(sps) > MAX_SPS or len(pps) > MAX_PPS:
        raise CodecError(f"{len(sps)} SPS and {len(pps)} PPS do not fit an avcC record")
    if length_size not in (1, 2, 4):
        raise CodecError(f"NAL length size {length_size} is not 1, 2 or 4")
    first = sps[0]
    if len(first) < 4:
        raise CodecError(f"SPS of {len(first)} bytes is too short")
    out = bytearray([1, first[1], first[2], first[3], 0xFC | (length_size - 1), 0xE0 | len(sps)])
    for unit in sps:
        _append_unit(out, unit, NAL_SPS)
    out.append(len(pps))
    for unit in pps:
        _append_unit(out, unit, NAL_PPS)
    if first[1] in _HIGH_PROFILES:
        info = parse_sps(first)
        out += bytes([
            0xFC | info.chroma_format_idc,
            0xF8 | (info.bit_depth_luma - 8),
            0xF8 | (info.bit_depth_chroma - 8),
            0,  # numOfSequenceParameterSetExt
        ])
    return bytes(out)


def _append_unit(out: bytearray, unit: bytes, kind: int) -> None:
    if not unit or len(unit) > MAX_PARAMETER_SET:
        raise CodecError(f"parameter set of {len(unit)} bytes does not fit an avcC record")
    if unit[0] & 0x9F != kind:  # forbidden bit clear, type as listed
        raise CodecError(f"NAL unit of type {unit[0] & 0x1F} listed as type {kind}")
    out += len(unit).to_bytes(2, "big") + unit


def extradata_to_avcc(extradata: bytes) -> bytes:
    """An encoder's global header as an ``avcC`` record: returned as is
    (after checking) when it already is one, built from its SPS and PPS
    when it is Annex B."""
    if extradata[:1] == b"\x01":
        parse_avcc(extradata)
        return extradata
    units = split_annexb(extradata)
    sps = [u for u in units if u[0] & 0x1F == NAL_SPS]
    pps = [u for u in units if u[0] & 0x1F == NAL_PPS]
    return build_avcc(sps, pps)


def avc_packet_from_annexb(data: bytes, length_size: int = 4) -> bytes:
    """One Annex B access unit as a packet in the engine's convention:
    length-prefixed, with SPS, PPS and AUD units left out (see
    :data:`OUT_OF_BAND`). Empty when nothing else was in it."""
    return join_avcc((u for u in split_annexb(data) if u[0] & 0x1F not in OUT_OF_BAND), length_size)


def parse_sps(nal: bytes) -> AvcSps:
    """Parse an H.264 SPS NAL unit (with its one-byte header, escaped)."""
    if not nal or nal[0] & 0x1F != NAL_SPS:
        raise CodecError("not an H.264 SPS NAL unit")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile = r.u(8)
    r.skip(8)  # constraint_set flags
    level = r.u(8)
    sps_id = _bounded(r.ue(), 31, "seq_parameter_set_id")
    chroma_format_idc = 1
    separate_planes = False
    depth_luma = depth_chroma = 8
    if profile in _HIGH_PROFILES:
        chroma_format_idc = _bounded(r.ue(), 3, "chroma_format_idc")
        if chroma_format_idc == 3:
            separate_planes = r.flag()
        depth_luma += _bounded(r.ue(), 6, "bit_depth_luma_minus8")
        depth_chroma += _bounded(r.ue(), 6, "bit_depth_chroma_minus8")
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma_format_idc == 3 else 8):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    log2_max_frame_num = _bounded(r.ue(), 12, "log2_max_frame_num_minus4") + 4
    poc_type = _bounded(r.ue(), 2, "pic_order_cnt_type")
    log2_max_poc_lsb = 4
    delta_pic_order_always_zero = False
    if poc_type == 0:
        log2_max_poc_lsb = _bounded(r.ue(), 12, "log2_max_pic_order_cnt_lsb_minus4") + 4
    elif poc_type == 1:
        delta_pic_order_always_zero = r.flag()
        r.se()
        r.se()
        for _ in range(_bounded(r.ue(), 255, "num_ref_frames_in_pic_order_cnt_cycle")):
            r.se()
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = _bounded(r.ue(), 1 << 16, "pic_width_in_mbs_minus1") + 1
    height_units = _bounded(r.ue(), 1 << 16, "pic_height_in_map_units_minus1") + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.flag():
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    chroma_array_type = 0 if separate_planes else chroma_format_idc
    sub_width = 2 if chroma_array_type in (1, 2) else 1
    sub_height = 2 if chroma_array_type == 1 else 1
    crop_x = sub_width
    crop_y = sub_height * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise CodecError(f"SPS cropping leaves no picture ({width}x{height})")
    frame_rate = _vui_frame_rate(r) if r.flag() else None
    return AvcSps(
        profile, level, chroma_format_idc, width, height, frame_rate, depth_luma, depth_chroma,
        sps_id=sps_id,
        separate_colour_plane=separate_planes,
        log2_max_frame_num=log2_max_frame_num,
        poc_type=poc_type,
        log2_max_poc_lsb=log2_max_poc_lsb,
        delta_pic_order_always_zero=delta_pic_order_always_zero,
        frame_mbs_only=bool(frame_mbs_only),
    )


def _vui_frame_rate(r: BitReader) -> Fraction | None:
    """Read the VUI up to timing_info; the rest of the VUI is not needed."""
    if r.flag():  # aspect_ratio_info_present_flag
        if r.u(8) == 255:  # Extended_SAR
            r.skip(32)
    if r.flag():  # overscan_info_present_flag
        r.skip(1)
    if r.flag():  # video_signal_type_present_flag
        r.skip(4)
        if r.flag():  # colour_description_present_flag
            r.skip(24)
    if r.flag():  # chroma_loc_info_present_flag
        r.ue()
        r.ue()
    if not r.flag():  # timing_info_present_flag
        return None
    num_units_in_tick = r.u(32)
    time_scale = r.u(32)
    if num_units_in_tick == 0 or time_scale == 0:
        return None
    # One frame is two ticks (a tick is a field period).
    return Fraction(time_scale, 2 * num_units_in_tick)


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = last if nxt == 0 else nxt


def _bounded(value: int, limit: int, name: str) -> int:
    if value > limit:
        raise CodecError(f"SPS {name} = {value} is out of range")
    return value


def avc_codec_string(config: AvcConfig) -> str:
    """RFC 6381 ``avc1.PPCCLL`` from the record's profile, compatibility and
    level bytes."""
    return f"avc1.{config.profile:02x}{config.compatibility:02x}{config.level:02x}"
