"""Where a slice header ends: the byte count of a slice NAL unit that holds
its NAL header and its slice header (H.264 §7.3.3), which common encryption
must leave clear (ISO/IEC 23001-7 §10.4 ``cbcs``, §9.5 subsample encryption).

The header's syntax depends on the picture and sequence parameter sets it
names, so :class:`AvcSliceHeaders` keeps the parameter sets of a track (from
its ``avcC`` record, and any that arrive in-band) by ID. Only the prefix of a
NAL unit that can hold a header is unescaped, and the end is mapped back to
the escaped bytes, emulation prevention bytes included.

The HEVC counterpart is :mod:`engine.codecs.hevc_slice`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.codecs.avc import NAL_IDR, NAL_PPS, NAL_SLICE, NAL_SPS, AvcSps, parse_avcc, parse_sps
from engine.codecs.bits import BitReader
from engine.codecs.errors import CodecError

#: Bytes unescaped first; a longer header (rare: big weight tables, many
#: memory management operations) is read again from the whole NAL unit.
FIRST_PREFIX = 256

_P, _B, _I, _SP, _SI = 0, 1, 2, 3, 4


class RbspPrefix:
    """The first bytes of an escaped NAL unit payload, unescaped, with the
    positions of the emulation prevention bytes removed from them."""

    __slots__ = ("_removed", "_start", "complete", "data")

    def __init__(self, nal: bytes, start: int, limit: int) -> None:
        end = min(len(nal), start + limit)
        self.complete = end == len(nal)
        out = bytearray()
        removed: list[int] = []  # RBSP index of the byte each removed 03 preceded
        pos = start
        while True:
            hit = nal.find(b"\x00\x00\x03", pos, end)
            if hit < 0:
                out += nal[pos:end]
                break
            out += nal[pos : hit + 2]
            removed.append(len(out))
            pos = hit + 3
        self.data = bytes(out)
        self._removed = removed
        self._start = start

    def escaped_end(self, rbsp_bytes: int) -> int:
        """The escaped offset, in the whole NAL unit, just past the first
        ``rbsp_bytes`` bytes of the payload (the emulation prevention bytes
        among them counted)."""
        return self._start + rbsp_bytes + sum(1 for index in self._removed if index < rbsp_bytes)


def read_header(nal: bytes, start: int, parse: Callable[[BitReader], int]) -> int:
    """Run ``parse`` on the payload from ``start``: on a prefix first, on the
    whole unit when the prefix ran out. ``parse`` returns the bits the
    header takes; this returns the escaped end offset of its last byte."""
    prefix = RbspPrefix(nal, start, FIRST_PREFIX)
    try:
        bits = parse(BitReader(prefix.data))
    except CodecError:
        if prefix.complete:
            raise
        prefix = RbspPrefix(nal, start, len(nal))
        bits = parse(BitReader(prefix.data))
    return prefix.escaped_end((bits + 7) // 8)


@dataclass(frozen=True, slots=True)
class AvcPps:
    """The PPS fields a slice header depends on."""

    pps_id: int
    sps_id: int
    entropy_coding_mode: bool
    bottom_field_pic_order_in_frame_present: bool
    num_slice_groups: int
    num_ref_idx_l0_default: int
    num_ref_idx_l1_default: int
    weighted_pred: bool
    weighted_bipred_idc: int
    deblocking_filter_control_present: bool
    redundant_pic_cnt_present: bool


def parse_pps(nal: bytes) -> AvcPps:
    """Parse the front of an H.264 PPS (§7.3.2.2) up to the fields slice
    headers need."""
    if not nal or nal[0] & 0x1F != NAL_PPS:
        raise CodecError("not an H.264 PPS NAL unit")
    r = BitReader(RbspPrefix(nal, 1, len(nal)).data)
    pps_id = r.ue()
    sps_id = r.ue()
    if pps_id > 255 or sps_id > 31:
        raise CodecError(f"PPS ids out of range ({pps_id}, {sps_id})")
    entropy = r.flag()
    bottom_field = r.flag()
    groups = r.ue() + 1
    if groups > 1:
        # Flexible macroblock ordering (Baseline only): slice headers then
        # depend on slice group maps this reader does not follow.
        raise CodecError("PPS with slice groups (FMO) is not supported")
    l0 = r.ue() + 1
    l1 = r.ue() + 1
    if l0 > 32 or l1 > 32:
        raise CodecError("PPS reference index defaults out of range")
    weighted_pred = r.flag()
    bipred = r.u(2)
    r.se()  # pic_init_qp_minus26
    r.se()  # pic_init_qs_minus26
    r.se()  # chroma_qp_index_offset
    deblocking = r.flag()
    r.skip(1)  # constrained_intra_pred_flag
    redundant = r.flag()
    return AvcPps(pps_id, sps_id, entropy, bottom_field, groups, l0, l1, weighted_pred, bipred, deblocking, redundant)


class AvcSliceHeaders:
    """Measures H.264 slice headers of one track.

    Make one per track from its ``avcC`` record; pass every NAL unit of
    every sample, in order, to :meth:`clear_size` (parameter sets that come
    in-band replace those of the record, as they do for a decoder).
    """

    def __init__(self, avcc: bytes) -> None:
        config = parse_avcc(avcc)
        self.nal_length_size = config.nal_length_size
        self._sps: dict[int, AvcSps] = {}
        self._pps: dict[int, AvcPps] = {}
        for unit in config.sps:
            self.observe(unit)
        for unit in config.pps:
            self.observe(unit)

    def observe(self, nal: bytes) -> None:
        """Take note of a parameter set (other NAL units are ignored)."""
        kind = nal[0] & 0x1F if nal else 0
        if kind == NAL_SPS:
            sps = parse_sps(nal)
            self._sps[sps.sps_id] = sps
        elif kind == NAL_PPS:
            pps = parse_pps(nal)
            self._pps[pps.pps_id] = pps

    def is_slice(self, nal: bytes) -> bool:
        return bool(nal) and nal[0] & 0x1F in (NAL_SLICE, NAL_IDR)

    def header_size(self, nal: bytes) -> int:
        """Bytes of ``nal`` (escaped) from its first byte through the last
        byte holding slice header bits. Raises :class:`CodecError` when the
        header cannot be read (unknown parameter set, truncated unit)."""
        if not self.is_slice(nal):
            raise CodecError("not an H.264 slice NAL unit")
        nal_type = nal[0] & 0x1F
        ref_idc = (nal[0] >> 5) & 3
        return read_header(nal, 1, lambda r: self._parse(r, nal_type, ref_idc))

    def _parse(self, r: BitReader, nal_type: int, ref_idc: int) -> int:
        r.ue()  # first_mb_in_slice
        slice_type = r.ue()
        if slice_type > 9:
            raise CodecError(f"slice_type {slice_type} out of range")
        slice_type %= 5
        pps = self._pps.get(r.ue())
        if pps is None:
            raise CodecError("slice names an unknown PPS")
        sps = self._sps.get(pps.sps_id)
        if sps is None:
            raise CodecError("PPS names an unknown SPS")
        if sps.separate_colour_plane:
            r.skip(2)  # colour_plane_id
        r.skip(sps.log2_max_frame_num)  # frame_num
        field_pic = False
        if not sps.frame_mbs_only:
            field_pic = r.flag()
            if field_pic:
                r.skip(1)  # bottom_field_flag
        if nal_type == NAL_IDR:
            r.ue()  # idr_pic_id
        if sps.poc_type == 0:
            r.skip(sps.log2_max_poc_lsb)
            if pps.bottom_field_pic_order_in_frame_present and not field_pic:
                r.se()
        elif sps.poc_type == 1 and not sps.delta_pic_order_always_zero:
            r.se()
            if pps.bottom_field_pic_order_in_frame_present and not field_pic:
                r.se()
        if pps.redundant_pic_cnt_present:
            r.ue()
        if slice_type == _B:
            r.skip(1)  # direct_spatial_mv_pred_flag
        l0, l1 = pps.num_ref_idx_l0_default, pps.num_ref_idx_l1_default
        if slice_type in (_P, _SP, _B) and r.flag():  # num_ref_idx_active_override_flag
            l0 = r.ue() + 1
            if slice_type == _B:
                l1 = r.ue() + 1
            if l0 > 32 or l1 > 32:
                raise CodecError("slice reference index counts out of range")
        if slice_type not in (_I, _SI):
            _ref_pic_list_modification(r)
            if slice_type == _B:
                _ref_pic_list_modification(r)
        chroma_array_type = 0 if sps.separate_colour_plane else sps.chroma_format_idc
        if (pps.weighted_pred and slice_type in (_P, _SP)) or (pps.weighted_bipred_idc == 1 and slice_type == _B):
            r.ue()  # luma_log2_weight_denom
            if chroma_array_type:
                r.ue()  # chroma_log2_weight_denom
            for count in (l0, l1) if slice_type == _B else (l0,):
                for _ in range(count):
                    if r.flag():
                        r.se()
                        r.se()
                    if chroma_array_type and r.flag():
                        for _ in range(4):
                            r.se()
        if ref_idc:
            if nal_type == NAL_IDR:
                r.skip(2)  # no_output_of_prior_pics_flag, long_term_reference_flag
            elif r.flag():  # adaptive_ref_pic_marking_mode_flag
                for _ in range(66):
                    op = r.ue()
                    if op == 0:
                        break
                    if op in (1, 3):
                        r.ue()
                    if op == 2:
                        r.ue()
                    if op in (3, 6):
                        r.ue()
                    if op == 4:
                        r.ue()
                else:
                    raise CodecError("too many memory management operations")
        if pps.entropy_coding_mode and slice_type not in (_I, _SI):
            r.ue()  # cabac_init_idc
        r.se()  # slice_qp_delta
        if slice_type in (_SP, _SI):
            if slice_type == _SP:
                r.skip(1)
            r.se()
        if pps.deblocking_filter_control_present:
            if r.ue() != 1:  # disable_deblocking_filter_idc
                r.se()
                r.se()
        return r.position


def _ref_pic_list_modification(r: BitReader) -> None:
    if not r.flag():
        return
    for _ in range(66):
        idc = r.ue()
        if idc == 3:
            return
        if idc > 5:
            raise CodecError(f"modification_of_pic_nums_idc {idc} out of range")
        r.ue()
    raise CodecError("reference list modification does not end")
