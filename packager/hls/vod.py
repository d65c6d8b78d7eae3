"""Writing a finished rendition set as VOD HLS (``fanz-media transcode``).

The same segmenter, containers and playlists as live, with the whole file in
each media playlist (``EXT-X-PLAYLIST-TYPE:VOD`` and ``EXT-X-ENDLIST``) and no
partial segments. With fMP4 segments a static DASH manifest
(``manifest.mpd``) is written beside ``index.m3u8``, naming the same files.
"""

from __future__ import annotations

import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from drm.model import Protection
from engine.media import Packet, StreamEnded, StreamStarted, Track
from packager.dash.manifest import Links
from packager.dash.mpd import render
from packager.dash.source import manifest_of
from packager.errors import PackagerError
from packager.hls.config import HlsConfig, SegmentFormat
from packager.hls.keys import SegmentProtection
from packager.hls.muxers import check_protection, muxer_factory
from packager.hls.output import MULTIVARIANT, StreamOutput, VariantOutput
from packager.hls.segmenter import Segmenter

DASH_MANIFEST = "manifest.mpd"
VOD_WINDOW = 1_000_000_000
"""A window no file reaches: a VOD playlist lists every segment."""


class VodHlsWriter:
    """Renditions in, ``OUTDIR/index.m3u8`` and one folder per rendition out.

    Call :meth:`start` once per rendition with its tracks, :meth:`write` for
    each of its packets, then :meth:`finish`.
    """

    def __init__(
        self,
        outdir: Path,
        config: HlsConfig,
        segment_duration: Fraction,
        protection: SegmentProtection | None = None,
    ) -> None:
        """``protection`` encrypts every rendition (its
        ``rotate_every`` decides rotation; VOD files normally keep one key)."""
        if outdir.exists() and any(outdir.iterdir()):
            raise PackagerError(f"{outdir} is not empty; choose a new output folder")
        self.outdir = outdir
        target = float(segment_duration)
        self.config = replace(
            config,
            window_segments=VOD_WINDOW,
            dvr_window_s=0.0,
            low_latency=False,
            target_duration_s=target,
            max_segment_s=max(config.max_segment_s, 2 * target),
        )
        if protection is not None:
            check_protection(self.config.segment_format, protection.scheme)
        self.protection = protection
        self.output = StreamOutput(outdir.name, outdir.parent, self.config, protection=protection)
        self._segmenters: dict[str, tuple[Segmenter, VariantOutput]] = {}
        self._target = segment_duration

    def start(self, name: str, tracks: tuple[Track, ...]) -> None:
        if name in self._segmenters:
            raise PackagerError(f"rendition {name} started twice")
        variant = self.output.add_variant(name)
        variant.playlist.playlist_type = "VOD"
        scheme = self.protection.scheme if self.protection is not None else Protection.NONE
        segmenter = Segmenter(
            muxer_factory(self.config.segment_format, scheme, list(self.output.variants).index(name)),
            self._target,
            Fraction(self.config.max_segment_s).limit_denominator(1000),
            origin=self.output.origin,
            protection=self.protection,
        )
        self._segmenters[name] = (segmenter, variant)
        segmenter.feed(StreamStarted(tracks), time.time())
        self.output.apply(variant, segmenter.events())

    def write(self, name: str, packet: Packet) -> None:
        segmenter, variant = self._segmenters[name]
        segmenter.feed(packet, 0.0)
        events = segmenter.events()
        if events:
            self.output.apply(variant, events)

    def finish(self) -> Path:
        """End every rendition and write the multivariant playlist (and,
        for fMP4, the DASH manifest)."""
        for segmenter, variant in self._segmenters.values():
            segmenter.feed(StreamEnded("end of file"), 0.0)
            self.output.apply(variant, segmenter.events())
        if self.config.segment_format is SegmentFormat.FMP4:
            manifest = manifest_of(self.output, time.time(), Links(), dynamic=False)
            self.output.disk.write(self.outdir / DASH_MANIFEST, render(manifest).encode())
        return self.outdir / MULTIVARIANT
