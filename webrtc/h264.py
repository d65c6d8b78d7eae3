"""H.264 framing between WebRTC (Annex B access units) and the media model
(AVCC packets with an ``avcC`` record).

Sans-I/O and pure: WHIP ingest feeds each depayloaded access unit to
:class:`AnnexBToAvcc`, which keeps the latest SPS and PPS seen in-band and
reports a new ``avcC`` record whenever they change (the caller then restarts
its track set); WHEP playback turns AVCC packets back into Annex B with
:func:`avcc_to_annexb_keyframe`, repeating the parameter sets before every
keyframe so a viewer can start on any of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.codecs import CodecError, avcc_to_annexb, iter_avcc, parse_avc_sps, split_annexb
from webrtc.errors import BitstreamError

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
START_CODE = b"\x00\x00\x00\x01"

MAX_PARAMETER_SET = 0xFFFF
"""An avcC record stores parameter-set lengths in 16 bits."""


def build_avcc(sps: Sequence[bytes], pps: Sequence[bytes], length_size: int = 4) -> bytes:
    """Build an ``avcC`` record (ISO/IEC 14496-15 §5.3.3.1) from parameter
    sets. Profile, compatibility and level come from the first SPS."""
    if not sps or not pps:
        raise BitstreamError("an avcC record needs at least one SPS and one PPS")
    if len(sps) > 31 or len(pps) > 255:
        raise BitstreamError("too many parameter sets for an avcC record")
    if length_size not in (1, 2, 4):
        raise BitstreamError(f"NAL length size {length_size} is not 1, 2 or 4")
    first = sps[0]
    if len(first) < 4:
        raise BitstreamError("SPS too short")
    out = bytearray([1, first[1], first[2], first[3], 0xFC | (length_size - 1), 0xE0 | len(sps)])
    for unit in sps:
        _append_unit(out, unit)
    out.append(len(pps))
    for unit in pps:
        _append_unit(out, unit)
    # High profiles carry chroma format and bit depth after the PPS list;
    # players accept the record without them, so they are left out.
    return bytes(out)


def _append_unit(out: bytearray, unit: bytes) -> None:
    if not unit or len(unit) > MAX_PARAMETER_SET:
        raise BitstreamError(f"parameter set of {len(unit)} bytes does not fit an avcC record")
    out += len(unit).to_bytes(2, "big") + unit


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One access unit in the engine's convention.

    ``avcc`` holds the slice and SEI NAL units (parameter sets and access unit
    delimiters removed: they live in the record). ``new_config`` is the
    ``avcC`` record when this access unit brought new parameter sets,
    ``None`` otherwise. ``width``/``height`` describe the current SPS.
    """

    avcc: bytes
    keyframe: bool
    new_config: bytes | None
    width: int
    height: int


class AnnexBToAvcc:
    """Turns depayloaded Annex B access units into AVCC, tracking the
    parameter sets seen in-band.

    Call :meth:`push` once per access unit. Until the first SPS and PPS have
    arrived it returns ``None`` (nothing can be decoded without them); after
    that every call returns an :class:`AccessUnit`. Malformed input raises
    :class:`BitstreamError`.
    """

    def __init__(self) -> None:
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        self._config: bytes | None = None
        self.width = 0
        self.height = 0

    @property
    def config(self) -> bytes | None:
        """The current ``avcC`` record."""
        return self._config

    def push(self, annexb: bytes) -> AccessUnit | None:
        try:
            units = split_annexb(annexb)
        except CodecError as exc:
            raise BitstreamError(f"H.264 access unit: {exc}") from exc
        changed = False
        body: list[bytes] = []
        keyframe = False
        for nal in units:
            kind = nal[0] & 0x1F
            if nal[0] & 0x80:
                raise BitstreamError("H.264 NAL unit with the forbidden bit set")
            if kind == NAL_SPS:
                if nal != self._sps:
                    self._set_sps(nal)
                    changed = True
            elif kind == NAL_PPS:
                if nal != self._pps:
                    self._pps = nal
                    changed = True
            elif kind == NAL_AUD:
                continue
            else:
                if kind == NAL_IDR:
                    keyframe = True
                if len(nal) >= 1 << 32:
                    raise BitstreamError("NAL unit too large")
                body.append(len(nal).to_bytes(4, "big") + nal)
        if changed and self._sps is not None and self._pps is not None:
            config = build_avcc([self._sps], [self._pps])
            new_config: bytes | None = config if config != self._config else None
            self._config = config
        else:
            new_config = None
        if self._config is None or not body:
            return None
        return AccessUnit(b"".join(body), keyframe, new_config, self.width, self.height)

    def _set_sps(self, nal: bytes) -> None:
        try:
            sps = parse_avc_sps(nal)
        except CodecError as exc:
            raise BitstreamError(f"H.264 SPS: {exc}") from exc
        self._sps = nal
        self.width, self.height = sps.width, sps.height


def avcc_to_annexb_keyframe(
    data: bytes, keyframe: bool, parameter_sets: Sequence[bytes], length_size: int = 4
) -> bytes:
    """Annex B for a WebRTC packetiser: the packet's NAL units with start
    codes, preceded by ``parameter_sets`` when it is a keyframe that does not
    carry its own SPS."""
    try:
        body = avcc_to_annexb(data, length_size)
        if keyframe and parameter_sets:
            has_sps = any(nal and nal[0] & 0x1F == NAL_SPS for nal in iter_avcc(data, length_size))
            if not has_sps:
                body = b"".join(START_CODE + ps for ps in parameter_sets) + body
    except CodecError as exc:
        raise BitstreamError(f"H.264 packet: {exc}") from exc
    return body


def vp8_is_keyframe(frame: bytes) -> bool:
    """Whether a VP8 frame is a key frame (RFC 6386 §9.1: bit 0 of the frame
    tag is 0 for key frames)."""
    return bool(frame) and not frame[0] & 0x01
