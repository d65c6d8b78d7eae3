"""Segment containers for HLS: CMAF fMP4 and MPEG-TS behind one interface."""

from __future__ import annotations

from collections.abc import Sequence

from drm.cenc import CencEncryption, cenc_lane
from drm.model import KeyPeriod, Protection
from engine.media import Packet, Track
from packager.fmp4 import Fmp4Writer
from packager.hls.config import SegmentFormat
from packager.hls.keys import ProtectionError, SegmentKey
from packager.hls.segmenter import MuxerFactory, SegmentMuxer
from packager.mpegts import TsWriter


class Fmp4SegmentMuxer:
    """CMAF: one init segment, then one ``moof``/``mdat`` fragment per segment.

    With ``encryption`` (common encryption, ``cbcs`` or ``cenc``) samples
    are encrypted with each segment's key period; the init segment names the
    period the muxer was made with, and a later period (rotation every N
    segments) is named in the fragment's ``seig`` group."""

    extension = ".m4s"

    def __init__(self, tracks: tuple[Track, ...], encryption: CencEncryption | None = None, lane: int = 0) -> None:
        self._lane = lane
        self._ctr = encryption is not None and encryption.scheme is Protection.CENC
        if encryption is not None:
            encryption = CencEncryption(encryption.scheme, self._in_lane(encryption.period))
        self._writer = Fmp4Writer(tracks, encryption)

    def init_segment(self) -> bytes | None:
        return self._writer.init_segment()

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        if self._writer.encryption is None:
            return self._writer.fragment(packets, sequence + 1)
        if key is None:
            raise ProtectionError("an encrypted fMP4 segment needs its key period")
        return self._writer.fragment(packets, sequence + 1, self._in_lane(key.period))

    def _in_lane(self, period: KeyPeriod) -> KeyPeriod:
        """``cenc``: this variant's own per-sample IVs (see :func:`drm.cenc.cenc_lane`);
        ``cbcs`` keeps the constant IV its init segment states."""
        if not self._ctr:
            return period
        return KeyPeriod(period.content_id, period.index, cenc_lane(period.key, self._lane), period.systems)


class TsSegmentMuxer:
    """MPEG-TS: self-contained segments (PAT and PMT at the start of each);
    with ``sample_aes``, slices and audio frames are encrypted with each
    segment's key and IV."""

    extension = ".ts"

    def __init__(self, tracks: tuple[Track, ...], sample_aes: bool = False) -> None:
        self._writer = TsWriter(tracks, sample_aes=sample_aes)

    def init_segment(self) -> bytes | None:
        return None

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        if not self._writer.sample_aes:
            return self._writer.segment(packets)
        if key is None:
            raise ProtectionError("a SAMPLE-AES segment needs its key")
        return self._writer.segment(packets, (key.period.key.key, key.iv))


def common_scheme(fmt: SegmentFormat, scheme: Protection) -> Protection | None:
    """The common-encryption scheme an fMP4 stream's samples get: ``cbcs``
    for ``cbcs`` and for ``sample-aes`` (HLS's SAMPLE-AES in CMAF is
    ``cbcs``), ``cenc`` for ``cenc``; ``None`` otherwise."""
    if fmt is not SegmentFormat.FMP4:
        return None
    if scheme in (Protection.SAMPLE_AES, Protection.CBCS):
        return Protection.CBCS
    if scheme is Protection.CENC:
        return Protection.CENC
    return None


def check_protection(fmt: SegmentFormat, scheme: Protection) -> None:
    """Refuse, before a stream starts, a scheme these muxers cannot write:
    common encryption (``cbcs``, ``cenc``) needs CMAF segments."""
    if fmt is SegmentFormat.MPEGTS and scheme.common_encryption:
        raise ProtectionError(f"{scheme.value} is common encryption for fMP4; MPEG-TS streams use sample-aes")


def muxer_factory(fmt: SegmentFormat, scheme: Protection = Protection.NONE, lane: int = 0) -> MuxerFactory:
    """``lane``: the variant's place among its stream's variants, which
    share keys (``cenc`` IVs are kept apart by it)."""
    check_protection(fmt, scheme)
    common = common_scheme(fmt, scheme)

    def make(tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> SegmentMuxer:
        # ``period`` comes with sample-encrypted streams only: a common
        # encryption init segment names it; MPEG-TS SAMPLE-AES takes its key
        # per segment instead.
        if fmt is SegmentFormat.FMP4:
            if common is None:
                return Fmp4SegmentMuxer(tracks)
            if period is None:
                raise ProtectionError(f"{common.value} fMP4 needs the key period of its init segment")
            return Fmp4SegmentMuxer(tracks, CencEncryption(common, period), lane)
        return TsSegmentMuxer(tracks, sample_aes=scheme is Protection.SAMPLE_AES)

    return make
