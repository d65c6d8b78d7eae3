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

from engine.codecs import CodecError, avcc_to_annexb, join_avcc, parse_avc_sps, split_annexb
from engine.codecs import build_avcc as _build_avcc
from engine.codecs.avc import NAL_AUD, NAL_IDR, NAL_PPS, NAL_SPS
from webrtc.errors import BitstreamError


def build_avcc(sps: Sequence[bytes], pps: Sequence[bytes], length_size: int = 4) -> bytes:
    """:func:`engine.codecs.build_avcc` for a publisher's parameter sets: a
    record that cannot be built is the peer's fault (:class:`BitstreamError`)."""
    try:
        return _build_avcc(sps, pps, length_size)
    except CodecError as exc:
        raise BitstreamError(f"H.264 parameter sets: {exc}") from exc


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
        slices: list[bytes] = []
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
                slices.append(nal)
        try:
            body = join_avcc(slices)
        except CodecError as exc:
            raise BitstreamError(f"H.264 access unit: {exc}") from exc
        if changed and self._sps is not None and self._pps is not None:
            config = build_avcc([self._sps], [self._pps])
            new_config: bytes | None = config if config != self._config else None
            self._config = config
        else:
            new_config = None
        if self._config is None or not body:
            return None
        return AccessUnit(body, keyframe, new_config, self.width, self.height)

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
        return avcc_to_annexb(data, length_size, parameter_sets if keyframe else ())
    except CodecError as exc:
        raise BitstreamError(f"H.264 packet: {exc}") from exc


def vp8_is_keyframe(frame: bytes) -> bool:
    """Whether a VP8 frame is a key frame (RFC 6386 §9.1: bit 0 of the frame
    tag is 0 for key frames)."""
    return bool(frame) and not frame[0] & 0x01
