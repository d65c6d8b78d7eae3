"""HEVC: the ``hvcC`` decoder configuration record and the SPS picture size.

References: ISO/IEC 14496-15 §8.3.3 (hvcC), ITU-T H.265 §7.3.2.2 (SPS) and
§7.3.3 (profile_tier_level). The SPS is read only up to the conformance
window: that is all HLS needs (RESOLUTION), and everything after it
(reference picture sets, VUI) is costly to parse for no gain here.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from engine.codecs.bits import BitReader, unescape_rbsp
from engine.codecs.errors import CodecError
from engine.codecs.nal import read_record_units

NAL_BLA_W_LP = 16
NAL_RSV_IRAP_23 = 23
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35

_HVCC_HEADER = 23


@dataclass(frozen=True, slots=True)
class HevcConfig:
    """The fields of an ``hvcC`` record. ``arrays`` maps each NAL unit type
    to its units, in record order."""

    profile_space: int
    tier: int
    profile_idc: int
    compatibility_flags: int
    constraint_flags: bytes
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    avg_frame_rate: int
    nal_length_size: int
    arrays: tuple[tuple[int, tuple[bytes, ...]], ...]

    def units(self, nal_type: int) -> tuple[bytes, ...]:
        return tuple(u for t, units in self.arrays if t == nal_type for u in units)

    @property
    def frame_rate(self) -> Fraction | None:
        """``avgFrameRate`` is in frames per 256 s; 0 means unknown."""
        return Fraction(self.avg_frame_rate, 256) if self.avg_frame_rate else None


@dataclass(frozen=True, slots=True)
class HevcSps:
    profile_idc: int
    level_idc: int
    chroma_format_idc: int
    width: int
    height: int
    frame_rate: Fraction | None


def parse_hvcc(data: bytes) -> HevcConfig:
    """Parse an ``hvcC`` record (the HEVC track's extradata)."""
    if len(data) < _HVCC_HEADER:
        raise CodecError(f"hvcC record too short ({len(data)} bytes)")
    if data[0] != 1:
        raise CodecError(f"hvcC configurationVersion {data[0]} is not 1 (is this Annex B extradata?)")
    pos = _HVCC_HEADER
    arrays = []
    for _ in range(data[22]):
        if pos + 3 > len(data):
            raise CodecError("hvcC record truncated in the array headers")
        nal_type = data[pos] & 0x3F
        count = int.from_bytes(data[pos + 1 : pos + 3], "big")
        pos += 3
        units, pos = read_record_units(data, pos, count, f"hvcC type {nal_type} NAL unit")
        arrays.append((nal_type, units))
    return HevcConfig(
        profile_space=data[1] >> 6,
        tier=(data[1] >> 5) & 1,
        profile_idc=data[1] & 0x1F,
        compatibility_flags=int.from_bytes(data[2:6], "big"),
        constraint_flags=bytes(data[6:12]),
        level_idc=data[12],
        chroma_format_idc=data[16] & 0x03,
        bit_depth_luma=(data[17] & 0x07) + 8,
        bit_depth_chroma=(data[18] & 0x07) + 8,
        avg_frame_rate=int.from_bytes(data[19:21], "big"),
        nal_length_size=(data[21] & 0x03) + 1,
        arrays=tuple(arrays),
    )


def parse_sps(nal: bytes) -> HevcSps:
    """Parse an HEVC SPS NAL unit (with its two-byte header, escaped)."""
    if len(nal) < 2 or (nal[0] >> 1) & 0x3F != NAL_SPS:
        raise CodecError("not an HEVC SPS NAL unit")
    r = BitReader(unescape_rbsp(nal[2:]))
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise CodecError(f"SPS sps_max_sub_layers_minus1 = {max_sub_layers_minus1} is out of range")
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile_idc, level_idc = _profile_tier_level(r, max_sub_layers_minus1)
    if r.ue() > 15:
        raise CodecError("SPS sps_seq_parameter_set_id is out of range")
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise CodecError(f"SPS chroma_format_idc = {chroma_format_idc} is out of range")
    separate_planes = r.flag() if chroma_format_idc == 3 else False
    width = r.ue()
    height = r.ue()
    left = right = top = bottom = 0
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
    chroma_array_type = 0 if separate_planes else chroma_format_idc
    sub_width = 2 if chroma_array_type in (1, 2) else 1
    sub_height = 2 if chroma_array_type == 1 else 1
    width -= sub_width * (left + right)
    height -= sub_height * (top + bottom)
    if width <= 0 or height <= 0:
        raise CodecError(f"SPS conformance window leaves no picture ({width}x{height})")
    frame_rate = _sps_tail_frame_rate(r, max_sub_layers_minus1)
    return HevcSps(profile_idc, level_idc, chroma_format_idc, width, height, frame_rate)


def _sps_tail_frame_rate(r: BitReader, max_sub_layers_minus1: int) -> Fraction | None:
    """Read the SPS from after the conformance window to the VUI timing
    information (H.265 §7.3.2.2.1 and §E.2.1)."""
    r.ue()  # bit_depth_luma_minus8
    r.ue()  # bit_depth_chroma_minus8
    poc_lsb_bits = _bounded(r.ue(), 12, "log2_max_pic_order_cnt_lsb_minus4") + 4
    ordering_all = r.flag()
    for _ in range(0 if ordering_all else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        r.ue()
        r.ue()
        r.ue()
    for _ in range(6):  # coding block, transform block sizes and depths
        r.ue()
    if r.flag() and r.flag():  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        _skip_scaling_list_data(r)
    r.skip(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.flag():  # pcm_enabled_flag
        r.skip(8)
        r.ue()
        r.ue()
        r.skip(1)
    num_sets = _bounded(r.ue(), 64, "num_short_term_ref_pic_sets")
    delta_pocs: list[int] = []
    for idx in range(num_sets):
        delta_pocs.append(_skip_st_ref_pic_set(r, idx, delta_pocs))
    if r.flag():  # long_term_ref_pics_present_flag
        for _ in range(_bounded(r.ue(), 32, "num_long_term_ref_pics_sps")):
            r.skip(poc_lsb_bits + 1)
    r.skip(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    if not r.flag():  # vui_parameters_present_flag
        return None
    if r.flag():  # aspect_ratio_info_present_flag
        if r.u(8) == 255:
            r.skip(32)
    if r.flag():  # overscan_info_present_flag
        r.skip(1)
    if r.flag():  # video_signal_type_present_flag
        r.skip(4)
        if r.flag():
            r.skip(24)
    if r.flag():  # chroma_loc_info_present_flag
        r.ue()
        r.ue()
    r.skip(3)  # neutral_chroma, field_seq, frame_field_info_present
    if r.flag():  # default_display_window_flag
        for _ in range(4):
            r.ue()
    if not r.flag():  # vui_timing_info_present_flag
        return None
    units = r.u(32)
    scale = r.u(32)
    return Fraction(scale, units) if units and scale else None


def _skip_scaling_list_data(r: BitReader) -> None:
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not r.flag():  # scaling_list_pred_mode_flag
                r.ue()
                continue
            if size_id > 1:
                r.se()
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                r.se()


def _skip_st_ref_pic_set(r: BitReader, idx: int, delta_pocs: list[int]) -> int:
    """Skip one st_ref_pic_set(idx) in the SPS; return its NumDeltaPocs."""
    if idx != 0 and r.flag():  # inter_ref_pic_set_prediction_flag
        r.skip(1)  # delta_rps_sign
        r.ue()  # abs_delta_rps_minus1
        count = 0
        for _ in range(delta_pocs[idx - 1] + 1):
            used = r.flag()
            if used or r.flag():
                count += 1
        return count
    negative = _bounded(r.ue(), 16, "num_negative_pics")
    positive = _bounded(r.ue(), 16, "num_positive_pics")
    for _ in range(negative + positive):
        r.ue()
        r.skip(1)
    return negative + positive


def _bounded(value: int, limit: int, name: str) -> int:
    if value > limit:
        raise CodecError(f"SPS {name} = {value} is out of range")
    return value


def _profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> tuple[int, int]:
    """Read profile_tier_level(1, max_sub_layers_minus1); return the general
    profile_idc and level_idc."""
    r.skip(2 + 1)  # general_profile_space, general_tier_flag
    profile_idc = r.u(5)
    r.skip(32 + 48)  # compatibility flags, constraint flags
    level_idc = r.u(8)
    sub_profile = []
    sub_level = []
    for _ in range(max_sub_layers_minus1):
        sub_profile.append(r.flag())
        sub_level.append(r.flag())
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))
    for has_profile, has_level in zip(sub_profile, sub_level, strict=True):
        if has_profile:
            r.skip(88)
        if has_level:
            r.skip(8)
    return profile_idc, level_idc


def parse_vps_frame_rate(nal: bytes) -> Fraction | None:
    """The frame rate from a VPS's timing information, when it has one.

    HEVC timing ticks are picture periods (unlike H.264's field ticks), so the
    rate is ``time_scale / num_units_in_tick``.
    """
    if len(nal) < 2 or (nal[0] >> 1) & 0x3F != NAL_VPS:
        raise CodecError("not an HEVC VPS NAL unit")
    r = BitReader(unescape_rbsp(nal[2:]))
    r.skip(4 + 1 + 1 + 6)  # id, base layer flags, vps_max_layers_minus1
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise CodecError(f"VPS vps_max_sub_layers_minus1 = {max_sub_layers_minus1} is out of range")
    r.skip(1 + 16)  # temporal id nesting, reserved 0xffff
    _profile_tier_level(r, max_sub_layers_minus1)
    ordering_all = r.flag()
    for _ in range(0 if ordering_all else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        r.ue()
        r.ue()
        r.ue()
    max_layer_id = r.u(6)
    num_layer_sets = r.ue() + 1
    if num_layer_sets > 1024:
        raise CodecError(f"VPS vps_num_layer_sets_minus1 = {num_layer_sets - 1} is out of range")
    r.skip((num_layer_sets - 1) * (max_layer_id + 1))
    if not r.flag():  # vps_timing_info_present_flag
        return None
    units = r.u(32)
    scale = r.u(32)
    return Fraction(scale, units) if units and scale else None


def hevc_codec_string(config: HevcConfig, entry: str = "hvc1") -> str:
    """RFC 6381 / ISO/IEC 14496-15 Annex E string, for example
    ``hvc1.1.6.L93.B0``: profile (with space prefix A/B/C), compatibility
    flags bit-reversed in hex, tier and level, then the constraint bytes with
    trailing zero bytes left out."""
    space = ("", "A", "B", "C")[config.profile_space]
    compat = int(f"{config.compatibility_flags:032b}"[::-1], 2)
    tier = "H" if config.tier else "L"
    constraints = bytearray(config.constraint_flags)
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [entry, f"{space}{config.profile_idc}", f"{compat:X}", f"{tier}{config.level_idc}"]
    parts += [f"{b:X}" for b in constraints]
    return ".".join(parts)
