"""Where an HEVC slice segment header ends (H.265 §7.3.6.1), for common
encryption, which must leave it clear (see :mod:`engine.codecs.slice_header`
for the H.264 counterpart and the shared prefix unescaping).

The header depends on the SPS (picture size in coding tree blocks, picture
order count bits, reference picture sets, long-term pictures, tool flags)
and the PPS it names, so :class:`HevcSliceHeaders` keeps both by ID, read
from the ``hvcC`` record and from in-band units. Screen content coding and
multi-layer extensions, which add slice header fields, are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.codecs.bits import BitReader
from engine.codecs.errors import CodecError
from engine.codecs.hevc import NAL_BLA_W_LP, NAL_PPS, NAL_RSV_IRAP_23, NAL_SPS, parse_hvcc
from engine.codecs.hevc import _profile_tier_level as profile_tier_level
from engine.codecs.hevc import _skip_scaling_list_data as skip_scaling_list_data
from engine.codecs.slice_header import RbspPrefix, read_header

_IDR_W_RADL = 19
_IDR_N_LP = 20
_LAST_VCL = 31
_B, _P, _I = 0, 1, 2


def _ceil_log2(value: int) -> int:
    return (value - 1).bit_length() if value > 1 else 0


@dataclass(frozen=True, slots=True)
class HevcSliceSps:
    """The SPS fields a slice segment header depends on."""

    sps_id: int
    chroma_array_type: int
    separate_colour_plane: bool
    pic_size_in_ctbs: int
    log2_max_poc_lsb: int
    sample_adaptive_offset: bool
    #: Per short-term reference picture set: (NumDeltaPocs, pictures used by the current one).
    st_rps: tuple[tuple[int, int], ...]
    long_term_present: bool
    lt_used_by_curr: tuple[bool, ...]
    temporal_mvp: bool


@dataclass(frozen=True, slots=True)
class HevcSlicePps:
    """The PPS fields a slice segment header depends on."""

    pps_id: int
    sps_id: int
    dependent_slice_segments: bool
    output_flag_present: bool
    num_extra_slice_header_bits: int
    cabac_init_present: bool
    num_ref_idx_l0_default: int
    num_ref_idx_l1_default: int
    slice_chroma_qp_offsets_present: bool
    weighted_pred: bool
    weighted_bipred: bool
    entry_points: bool
    loop_filter_across_slices: bool
    deblocking_override_enabled: bool
    deblocking_disabled: bool
    lists_modification_present: bool
    header_extension_present: bool
    chroma_qp_offset_list: bool


def _st_ref_pic_set(r: BitReader, idx: int, count: int, sets: list[tuple[int, int]]) -> tuple[int, int]:
    """Read st_ref_pic_set(idx) (§7.3.7); return (NumDeltaPocs, used count)."""
    if idx != 0 and r.flag():  # inter_ref_pic_set_prediction_flag
        delta_idx = r.ue() + 1 if idx == count else 1
        if delta_idx > idx:
            raise CodecError("short-term RPS predicted from a set that does not exist")
        r.skip(1)  # delta_rps_sign
        r.ue()  # abs_delta_rps_minus1
        total = used = 0
        for _ in range(sets[idx - delta_idx][0] + 1):
            if r.flag():  # used_by_curr_pic_flag
                total += 1
                used += 1
            elif r.flag():  # use_delta_flag
                total += 1
        return total, used
    negative = r.ue()
    positive = r.ue()
    if negative > 16 or positive > 16:
        raise CodecError("short-term RPS too large")
    used = 0
    for _ in range(negative + positive):
        r.ue()
        used += r.u(1)
    return negative + positive, used


def parse_slice_sps(nal: bytes) -> HevcSliceSps:
    """Parse an HEVC SPS up to the fields slice headers need (§7.3.2.2)."""
    if len(nal) < 2 or (nal[0] >> 1) & 0x3F != NAL_SPS:
        raise CodecError("not an HEVC SPS NAL unit")
    r = BitReader(RbspPrefix(nal, 2, len(nal)).data)
    r.skip(4)
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise CodecError("SPS sps_max_sub_layers_minus1 out of range")
    r.skip(1)
    profile_tier_level(r, max_sub_layers_minus1)
    sps_id = r.ue()
    chroma_format_idc = r.ue()
    if sps_id > 15 or chroma_format_idc > 3:
        raise CodecError("SPS id or chroma format out of range")
    separate = r.flag() if chroma_format_idc == 3 else False
    width = r.ue()
    height = r.ue()
    if r.flag():  # conformance_window_flag
        for _ in range(4):
            r.ue()
    r.ue()
    r.ue()  # bit depths
    log2_max_poc_lsb = r.ue() + 4
    if log2_max_poc_lsb > 16:
        raise CodecError("SPS log2_max_pic_order_cnt_lsb out of range")
    ordering_all = r.flag()
    for _ in range(0 if ordering_all else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        r.ue()
        r.ue()
        r.ue()
    min_cb = r.ue() + 3
    ctb = min_cb + r.ue()
    if ctb > 6 or min_cb > ctb:
        raise CodecError("SPS coding block sizes out of range")
    for _ in range(4):
        r.ue()
    if r.flag() and r.flag():  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        skip_scaling_list_data(r)
    r.skip(1)  # amp_enabled_flag
    sao = r.flag()
    if r.flag():  # pcm_enabled_flag
        r.skip(8)
        r.ue()
        r.ue()
        r.skip(1)
    count = r.ue()
    if count > 64:
        raise CodecError("SPS num_short_term_ref_pic_sets out of range")
    sets: list[tuple[int, int]] = []
    for idx in range(count):
        sets.append(_st_ref_pic_set(r, idx, count, sets))
    long_term = r.flag()
    lt_used: list[bool] = []
    if long_term:
        lt_count = r.ue()
        if lt_count > 32:
            raise CodecError("SPS num_long_term_ref_pics_sps out of range")
        for _ in range(lt_count):
            r.skip(log2_max_poc_lsb)
            lt_used.append(r.flag())
    temporal_mvp = r.flag()
    side = 1 << ctb
    pic_size = -(-width // side) * -(-height // side)
    if pic_size == 0:
        raise CodecError("SPS picture size is zero")
    return HevcSliceSps(
        sps_id, 0 if separate else chroma_format_idc, separate, pic_size, log2_max_poc_lsb, sao, tuple(sets),
        long_term, tuple(lt_used), temporal_mvp,
    )


def parse_slice_pps(nal: bytes) -> HevcSlicePps:
    """Parse an HEVC PPS up to the fields slice headers need (§7.3.2.3)."""
    if len(nal) < 2 or (nal[0] >> 1) & 0x3F != NAL_PPS:
        raise CodecError("not an HEVC PPS NAL unit")
    r = BitReader(RbspPrefix(nal, 2, len(nal)).data)
    pps_id = r.ue()
    sps_id = r.ue()
    if pps_id > 63 or sps_id > 15:
        raise CodecError("PPS ids out of range")
    dependent = r.flag()
    output_flag = r.flag()
    extra_bits = r.u(3)
    r.skip(1)  # sign_data_hiding_enabled_flag
    cabac_init = r.flag()
    l0 = r.ue() + 1
    l1 = r.ue() + 1
    if l0 > 15 or l1 > 15:
        raise CodecError("PPS reference index defaults out of range")
    r.se()  # init_qp_minus26
    r.skip(1)  # constrained_intra_pred_flag
    transform_skip = r.flag()
    if r.flag():  # cu_qp_delta_enabled_flag
        r.ue()
    r.se()
    r.se()  # cb, cr offsets
    chroma_offsets = r.flag()
    weighted_pred = r.flag()
    weighted_bipred = r.flag()
    r.skip(1)  # transquant_bypass_enabled_flag
    tiles = r.flag()
    wavefronts = r.flag()
    if tiles:
        columns = r.ue() + 1
        rows = r.ue() + 1
        if columns > 64 or rows > 64:
            raise CodecError("PPS tile grid out of range")
        if not r.flag():  # uniform_spacing_flag
            for _ in range(columns - 1 + rows - 1):
                r.ue()
        r.skip(1)  # loop_filter_across_tiles_enabled_flag
    across_slices = r.flag()
    override = disabled = False
    if r.flag():  # deblocking_filter_control_present_flag
        override = r.flag()
        disabled = r.flag()
        if not disabled:
            r.se()
            r.se()
    if r.flag():  # pps_scaling_list_data_present_flag
        skip_scaling_list_data(r)
    lists_modification = r.flag()
    r.ue()  # log2_parallel_merge_level_minus2
    header_extension = r.flag()
    chroma_qp_offset_list = False
    if r.flag():  # pps_extension_present_flag
        range_ext = r.flag()
        multilayer = r.flag()
        three_d = r.flag()
        scc = r.flag()
        r.skip(4)
        if range_ext:
            if transform_skip:
                r.ue()
            r.skip(1)  # cross_component_prediction_enabled_flag
            chroma_qp_offset_list = r.flag()
        if multilayer or three_d or scc:
            raise CodecError("PPS multi-layer, 3D or screen content extensions are not supported")
    return HevcSlicePps(
        pps_id, sps_id, dependent, output_flag, extra_bits, cabac_init, l0, l1, chroma_offsets, weighted_pred,
        weighted_bipred, tiles or wavefronts, across_slices, override, disabled, lists_modification,
        header_extension, chroma_qp_offset_list,
    )


class HevcSliceHeaders:
    """Measures HEVC slice segment headers of one track (the H.265
    counterpart of :class:`engine.codecs.slice_header.AvcSliceHeaders`)."""

    def __init__(self, hvcc: bytes) -> None:
        config = parse_hvcc(hvcc)
        self.nal_length_size = config.nal_length_size
        self._sps: dict[int, HevcSliceSps] = {}
        self._pps: dict[int, HevcSlicePps] = {}
        for unit in (*config.units(NAL_SPS), *config.units(NAL_PPS)):
            self.observe(unit)

    def observe(self, nal: bytes) -> None:
        """Take note of an SPS or PPS (other NAL units are ignored)."""
        kind = (nal[0] >> 1) & 0x3F if nal else -1
        if kind == NAL_SPS:
            sps = parse_slice_sps(nal)
            self._sps[sps.sps_id] = sps
        elif kind == NAL_PPS:
            pps = parse_slice_pps(nal)
            self._pps[pps.pps_id] = pps

    def is_slice(self, nal: bytes) -> bool:
        return len(nal) >= 2 and (nal[0] >> 1) & 0x3F <= _LAST_VCL

    def header_size(self, nal: bytes) -> int:
        """Bytes of ``nal`` (escaped) from its first byte through the end of
        the slice segment header (its ``byte_alignment()`` included)."""
        if not self.is_slice(nal):
            raise CodecError("not an HEVC slice segment NAL unit")
        if nal[0] & 1 or nal[1] >> 3:
            raise CodecError("slices of layers above 0 are not supported")
        nal_type = (nal[0] >> 1) & 0x3F
        return read_header(nal, 2, lambda r: self._parse(r, nal_type))

    def _parse(self, r: BitReader, nal_type: int) -> int:
        first = r.flag()
        if NAL_BLA_W_LP <= nal_type <= NAL_RSV_IRAP_23:
            r.skip(1)  # no_output_of_prior_pics_flag
        pps = self._pps.get(r.ue())
        if pps is None:
            raise CodecError("slice names an unknown PPS")
        sps = self._sps.get(pps.sps_id)
        if sps is None:
            raise CodecError("PPS names an unknown SPS")
        dependent = False
        if not first:
            if pps.dependent_slice_segments:
                dependent = r.flag()
            r.skip(_ceil_log2(sps.pic_size_in_ctbs))  # slice_segment_address
        if not dependent:
            self._independent_fields(r, nal_type, sps, pps)
        if pps.entry_points:
            offsets = r.ue()
            if offsets:
                size = r.ue() + 1
                if size > 32 or offsets > sps.pic_size_in_ctbs:
                    raise CodecError("entry point offsets out of range")
                r.skip(size * offsets)
        if pps.header_extension_present:
            r.skip(8 * r.ue())
        if not r.flag():  # alignment_bit_equal_to_one
            raise CodecError("slice segment header does not end with byte_alignment()")
        return r.position

    def _independent_fields(self, r: BitReader, nal_type: int, sps: HevcSliceSps, pps: HevcSlicePps) -> None:
        r.skip(pps.num_extra_slice_header_bits)
        slice_type = r.ue()
        if slice_type > 2:
            raise CodecError(f"slice_type {slice_type} out of range")
        if pps.output_flag_present:
            r.skip(1)
        if sps.separate_colour_plane:
            r.skip(2)
        pictures = 0  # NumPicTotalCurr
        temporal_mvp = False
        if nal_type not in (_IDR_W_RADL, _IDR_N_LP):
            r.skip(sps.log2_max_poc_lsb)
            count = len(sps.st_rps)
            if not r.flag():  # short_term_ref_pic_set_sps_flag
                pictures += _st_ref_pic_set(r, count, count, list(sps.st_rps))[1]
            else:
                if not count:
                    raise CodecError("slice uses an SPS short-term RPS but the SPS has none")
                idx = r.u(_ceil_log2(count))
                if idx >= count:
                    raise CodecError("short_term_ref_pic_set_idx out of range")
                pictures += sps.st_rps[idx][1]
            if sps.long_term_present:
                in_sps = len(sps.lt_used_by_curr)
                from_sps = r.ue() if in_sps else 0
                own = r.ue()
                if from_sps > in_sps or from_sps + own > 32:
                    raise CodecError("long-term picture counts out of range")
                for i in range(from_sps + own):
                    if i < from_sps:
                        idx = r.u(_ceil_log2(in_sps)) if in_sps > 1 else 0
                        if idx >= in_sps:
                            raise CodecError("lt_idx_sps out of range")
                        pictures += sps.lt_used_by_curr[idx]
                    else:
                        r.skip(sps.log2_max_poc_lsb)
                        pictures += r.u(1)
                    if r.flag():  # delta_poc_msb_present_flag
                        r.ue()
            if sps.temporal_mvp:
                temporal_mvp = r.flag()
        sao_luma = sao_chroma = False
        if sps.sample_adaptive_offset:
            sao_luma = r.flag()
            if sps.chroma_array_type:
                sao_chroma = r.flag()
        if slice_type in (_P, _B):
            l0, l1 = pps.num_ref_idx_l0_default, pps.num_ref_idx_l1_default
            if r.flag():  # num_ref_idx_active_override_flag
                l0 = r.ue() + 1
                if slice_type == _B:
                    l1 = r.ue() + 1
                if l0 > 15 or l1 > 15:
                    raise CodecError("slice reference index counts out of range")
            if pps.lists_modification_present and pictures > 1:
                bits = _ceil_log2(pictures)
                if r.flag():
                    r.skip(bits * l0)
                if slice_type == _B and r.flag():
                    r.skip(bits * l1)
            if slice_type == _B:
                r.skip(1)  # mvd_l1_zero_flag
            if pps.cabac_init_present:
                r.skip(1)
            if temporal_mvp:
                from_l0 = r.flag() if slice_type == _B else True
                if (from_l0 and l0 > 1) or (not from_l0 and l1 > 1):
                    r.ue()  # collocated_ref_idx
            if (pps.weighted_pred and slice_type == _P) or (pps.weighted_bipred and slice_type == _B):
                _pred_weight_table(r, sps.chroma_array_type, (l0, l1) if slice_type == _B else (l0,))
            r.ue()  # five_minus_max_num_merge_cand
        r.se()  # slice_qp_delta
        if pps.slice_chroma_qp_offsets_present:
            r.se()
            r.se()
        if pps.chroma_qp_offset_list:
            r.skip(1)
        disabled = pps.deblocking_disabled
        if pps.deblocking_override_enabled and r.flag():  # deblocking_filter_override_flag
            disabled = r.flag()
            if not disabled:
                r.se()
                r.se()
        if pps.loop_filter_across_slices and (sao_luma or sao_chroma or not disabled):
            r.skip(1)


def _pred_weight_table(r: BitReader, chroma: int, lists: tuple[int, ...]) -> None:
    r.ue()  # luma_log2_weight_denom
    if chroma:
        r.se()
    for count in lists:
        luma = [r.flag() for _ in range(count)]
        chroma_flags = [r.flag() for _ in range(count)] if chroma else [False] * count
        for has_luma, has_chroma in zip(luma, chroma_flags, strict=True):
            if has_luma:
                r.se()
                r.se()
            if has_chroma:
                for _ in range(4):
                    r.se()
