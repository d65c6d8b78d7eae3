"""Segment containers for HLS: CMAF fMP4 and MPEG-TS behind one interface."""

from __future__ import annotations

from collections.abc import Sequence

from drm.model import KeyPeriod, Protection
from engine.media import Packet, Track
from packager.fmp4 import Fmp4Writer
from packager.hls.config import SegmentFormat
from packager.hls.keys import ProtectionError, SegmentKey
from packager.hls.segmenter import MuxerFactory, SegmentMuxer
from packager.mpegts import TsWriter


class Fmp4SegmentMuxer:
    """CMAF: one init segment, then one ``moof``/``mdat`` fragment per segment."""

    extension = ".m4s"

    def __init__(self, tracks: tuple[Track, ...]) -> None:
        self._writer = Fmp4Writer(tracks)

    def init_segment(self) -> bytes | None:
        return self._writer.init_segment()

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        return self._writer.fragment(packets, sequence + 1)


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


def check_protection(fmt: SegmentFormat, scheme: Protection) -> None:
    """Refuse, before a stream starts, a scheme these muxers cannot write.

    ``cbcs`` fMP4 (``sample-aes`` and ``cbcs`` streams in CMAF) needs common
    encryption in the fMP4 writer; ``cenc`` is for DASH only."""
    if scheme is Protection.CENC:
        raise ProtectionError("cenc (AES-CTR) cannot be played from HLS; use cbcs")
    if fmt is SegmentFormat.FMP4 and scheme in (Protection.SAMPLE_AES, Protection.CBCS):
        raise ProtectionError(f"{scheme.value} in fMP4 needs cbcs common encryption, which this build lacks")
    if fmt is SegmentFormat.MPEGTS and scheme is Protection.CBCS:
        raise ProtectionError("cbcs is common encryption for fMP4; MPEG-TS streams use sample-aes")


def muxer_factory(fmt: SegmentFormat, scheme: Protection = Protection.NONE) -> MuxerFactory:
    check_protection(fmt, scheme)

    def make(tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> SegmentMuxer:
        # ``period`` comes with sample-encrypted streams only; MPEG-TS
        # SAMPLE-AES takes its key per segment, so only a common-encryption
        # fMP4 writer (refused above until it exists) would use it.
        if fmt is SegmentFormat.FMP4:
            return Fmp4SegmentMuxer(tracks)
        return TsSegmentMuxer(tracks, sample_aes=scheme is Protection.SAMPLE_AES)

    return make
