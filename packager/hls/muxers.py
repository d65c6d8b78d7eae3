"""Segment containers for HLS: CMAF fMP4 and MPEG-TS behind one interface."""

from __future__ import annotations

from collections.abc import Sequence

from engine.media import Packet, Track
from packager.fmp4 import Fmp4Writer
from packager.hls.config import SegmentFormat
from packager.hls.segmenter import MuxerFactory, SegmentMuxer
from packager.mpegts import TsWriter


class Fmp4SegmentMuxer:
    """CMAF: one init segment, then one ``moof``/``mdat`` fragment per segment."""

    extension = ".m4s"

    def __init__(self, tracks: tuple[Track, ...]) -> None:
        self._writer = Fmp4Writer(tracks)

    def init_segment(self) -> bytes | None:
        return self._writer.init_segment()

    def media_segment(self, packets: Sequence[Packet], sequence: int) -> bytes:
        return self._writer.fragment(packets, sequence + 1)


class TsSegmentMuxer:
    """MPEG-TS: self-contained segments (PAT and PMT at the start of each)."""

    extension = ".ts"

    def __init__(self, tracks: tuple[Track, ...]) -> None:
        self._writer = TsWriter(tracks)

    def init_segment(self) -> bytes | None:
        return None

    def media_segment(self, packets: Sequence[Packet], sequence: int) -> bytes:
        return self._writer.segment(packets)


def muxer_factory(fmt: SegmentFormat) -> MuxerFactory:
    def make(tracks: tuple[Track, ...]) -> SegmentMuxer:
        if fmt is SegmentFormat.FMP4:
            return Fmp4SegmentMuxer(tracks)
        return TsSegmentMuxer(tracks)

    return make
