"""One stream's HLS output on disk: files, playlists and the statistics that
the multivariant playlist is written from.

This is the I/O half that goes with :class:`packager.hls.segmenter.Segmenter`:
it writes segments and playlists atomically (write, then rename, so a web
server never reads half a file) and removes segments that left the window.

Work happens in two steps. The first runs in the stream's job queue (a
worker thread for live streams, see :mod:`packager.hls.disk`): feeding the
segmenter (so TS and fMP4 building is done there too), numbering segments
and writing their files. The second runs on the event loop, only once a
segment's file is written: the in-memory playlists that players are served
learn of it, then the playlist files are queued behind it. A playlist never
names a segment that cannot be read yet. VOD writing runs both steps in the
caller's thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from drm.model import KeyPeriod, Protection
from engine.codecs import codec_string, describe_track
from engine.media import MediaKind, StreamItem, Track
from packager.hls.config import HlsConfig, SegmentFormat
from packager.hls.disk import Disk, InlineQueue, JobQueue, LocalDisk, call_on_loop, drained
from packager.hls.keys import SegmentKey, SegmentProtection, key_tags
from packager.hls.muxers import common_scheme
from packager.hls.playlist import (
    KeyTag,
    MediaPlaylist,
    PartEntry,
    RenditionReport,
    SegmentEntry,
    UriRewriter,
    Variant,
    ceil_seconds,
    render_multivariant,
)
from packager.hls.segmenter import (
    InitReady,
    PartReady,
    Segmenter,
    SegmenterEvent,
    SegmentReady,
    SegmentsEnded,
    TimelineOrigin,
)

log = logging.getLogger(__name__)

MULTIVARIANT = "index.m3u8"
MEDIA_PLAYLIST = "media.m3u8"


class SegmentSink(Protocol):
    """Another consumer of the files an output writes (the recorder). Its
    methods run in the stream's job queue, right after each file is
    written; they must not raise for their own faults (the live output
    goes on whatever a sink does)."""

    def init_written(self, variant: str, file: str, data: bytes, tracks: tuple[Track, ...]) -> None: ...

    def segment_written(self, variant: str, file: str, data: bytes, duration: Fraction,
                        discontinuity: bool) -> None: ...

    def finish(self) -> None:
        """The stream ended: nothing more comes."""
        ...


@dataclass(frozen=True, slots=True)
class _InitWritten:
    event: InitReady
    uri: str | None
    tracks: tuple[Track, ...]


@dataclass(frozen=True, slots=True)
class _PartNumbered:
    event: PartReady
    sequence: int


@dataclass(frozen=True, slots=True)
class _SegmentWritten:
    event: SegmentReady
    sequence: int
    uri: str


_Ready = _InitWritten | _PartNumbered | _SegmentWritten | SegmentsEnded


@dataclass(slots=True)
class VariantStats:
    """Measured figures for the multivariant playlist's attributes."""

    peak_bps: int = 0
    total_bits: int = 0
    total_seconds: Fraction = Fraction(0)
    frames: int = 0

    def add(self, size: int, duration: Fraction, frames: int) -> None:
        if duration > 0:
            self.peak_bps = max(self.peak_bps, int(size * 8 / duration))
            self.total_bits += size * 8
            self.total_seconds += duration
            self.frames += frames

    @property
    def average_bps(self) -> int:
        return int(self.total_bits / self.total_seconds) if self.total_seconds else 0

    @property
    def frame_rate(self) -> float | None:
        return float(self.frames / self.total_seconds) if self.total_seconds and self.frames else None


@dataclass(slots=True)
class VariantOutput:
    """The files and playlist of one variant of one stream."""

    name: str
    directory: Path
    playlist: MediaPlaylist
    extension: str
    tracks: tuple[Track, ...] = ()
    init_uri: str | None = None
    init_tracks: dict[str, tuple[Track, ...]] = field(default_factory=dict)
    """The tracks each init segment still on disk describes (a DASH Period
    per init segment states its own codecs)."""
    stats: VariantStats = field(default_factory=VariantStats)
    removed_pending: list[SegmentEntry] = field(default_factory=list)
    sequence_offset: int | None = None
    starts: dict[int, Fraction] = field(default_factory=dict)
    """Media time at which each of this variant's segments starts (these two
    are the numbering's, read and written only in the stream's job queue)."""


class StreamOutput:
    """Everything the HLS server knows about one stream.

    ``changed`` is set and replaced on every playlist update so that HTTP
    handlers can wait for the next one without polling.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        config: HlsConfig,
        queue: JobQueue | None = None,
        disk: Disk | None = None,
        protection: SegmentProtection | None = None,
    ) -> None:
        self.name = name
        self.protection = protection
        """How every variant's segments are encrypted (``None``: clear)."""
        self.queue: JobQueue = queue if queue is not None else InlineQueue(name)
        self.disk: Disk = disk if disk is not None else LocalDisk()
        self.error: BaseException | None = None
        """The first disk job of this output that failed."""
        self.directory = root / name
        self.config = config
        self.variants: dict[str, VariantOutput] = {}
        self.multivariant: str | None = None
        self.ended = False
        self.segments_written = 0
        self.sink: SegmentSink | None = None
        """Sees every init segment and segment once written (set before the
        first is fed)."""
        # A per-publish tag in file names: a name that is reused later never
        # serves a cached segment of an earlier broadcast.
        self.instance = format(int(time.time() * 1000), "x")
        self._anchors: list[tuple[Fraction, float]] = []
        self.clock_origin: float | None = None
        """Wall-clock time of media time 0, fixed by the first segment: the
        DASH manifest's availabilityStartTime."""
        self.key_periods: dict[int, KeyPeriod | None] = {}
        self.period_starts: dict[int, Fraction] = {}
        """Where each DASH Period begins: sequence number -> media start time
        of the stream's first segment, of each discontinuity and of each key
        period (the earliest start any variant gave that segment)."""
        """Key period of the segments from each sequence number on (see
        :meth:`set_key_period`)."""
        self.origin = TimelineOrigin()
        # Segment starts in two renditions that are closer than this are the
        # same moment (renditions' timelines may differ by an audio priming
        # delay; distinct segments are a target duration apart).
        self._same_moment = Fraction(config.target_duration_s).limit_denominator(1000) / 4
        self._changed = asyncio.Event()
        # Only jobs in the queue read these: a variant's numbering looks at
        # the variants registered before it.
        self._numbered: list[VariantOutput] = []
        directory = self.directory

        def prepare() -> None:
            self.disk.remove_tree(directory)
            self.disk.make_dir(directory)

        self._submit(prepare)

    def _submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` behind every earlier one of this stream; remember
        the first failure."""

        def run() -> None:
            try:
                job()
            except Exception as exc:
                if self.error is None:
                    self.error = exc
                raise

        self.queue.submit(run)

    @property
    def version(self) -> int:
        if self.config.segment_format is SegmentFormat.FMP4:
            return 7
        # KEYFORMAT and KEYFORMATVERSIONS need version 5 (7, 4.4.4.4).
        return 5 if self.protection is not None else 3

    @property
    def common_scheme(self) -> Protection | None:
        """The common encryption the segments' samples carry (``cbcs`` for
        ``cbcs`` and for ``sample-aes`` in fMP4, ``cenc``), which DASH
        announces; ``None`` for clear, AES-128 and MPEG-TS output."""
        if self.protection is None:
            return None
        return common_scheme(self.config.segment_format, self.protection.scheme)

    def key_tags(self, key: SegmentKey | None) -> tuple[KeyTag, ...]:
        if key is None or self.protection is None:
            return ()
        return key_tags(self.protection, key, self.config.segment_format is SegmentFormat.FMP4)

    def session_keys(self) -> list[KeyTag]:
        """The key in force at the live edge, for ``EXT-X-SESSION-KEY``."""
        for variant in self.variants.values():
            if variant.playlist.segments and variant.playlist.segments[-1].keys:
                return list(variant.playlist.segments[-1].keys)
        return []

    @property
    def part_target(self) -> Fraction | None:
        if not self.config.low_latency:
            return None
        return Fraction(self.config.part_target_s).limit_denominator(1000)

    def add_variant(self, name: str) -> VariantOutput:
        directory = self.directory / name
        target = ceil_seconds(self.config.target_duration_s)
        playlist = MediaPlaylist(
            target_duration=target, window=self.config.live_window_segments, version=self.version,
            part_target=self.part_target,
        )
        ext = ".m4s" if self.config.segment_format is SegmentFormat.FMP4 else ".ts"
        variant = VariantOutput(name, directory, playlist, ext)
        self.variants[name] = variant

        def register() -> None:
            self.disk.make_dir(directory)
            self._numbered.append(variant)

        self._submit(register)
        return variant

    async def wait_changed(self, timeout: float) -> bool:
        """Wait for the next playlist change; False on timeout."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def apply(self, variant: VariantOutput, events: Sequence[SegmenterEvent]) -> None:
        """Write what the segmenter produced and refresh the playlists, in
        the caller's thread (VOD)."""
        if events:
            self._publish(variant, self._prepare(variant, events))

    def feed(self, variant: VariantOutput, segmenter: Segmenter, items: Sequence[StreamItem], now: float) -> None:
        """Hand ``items`` to ``segmenter`` in this stream's job queue; what it
        produces is written there and then published on the running event
        loop. Returns at once."""
        loop = asyncio.get_running_loop()

        def job() -> None:
            for item in items:
                segmenter.feed(item, now)
            events = segmenter.events()
            if events:
                ready = self._prepare(variant, events)
                call_on_loop(loop, self._publish, variant, ready)

        self._submit(job)

    async def flush(self) -> None:
        """Wait until every job queued so far has run and what it wrote is
        published."""
        await drained(self.queue)

    # -- in the job queue --------------------------------------------------------
    def _prepare(self, variant: VariantOutput, events: Sequence[SegmenterEvent]) -> list[_Ready]:
        """Number and write what the segmenter produced (no playlist changes)."""
        ready: list[_Ready] = []
        for event in events:
            if isinstance(event, InitReady):
                uri = None
                if event.data:
                    uri = f"init_{self.instance}_{event.version}.mp4"
                    self.disk.write(variant.directory / uri, event.data)
                tracks = tuple(describe_track(t) for t in event.tracks)
                if self.sink is not None and uri is not None:
                    self.sink.init_written(variant.name, uri, event.data, tracks)
                ready.append(_InitWritten(event, uri, tracks))
            elif isinstance(event, PartReady):
                ready.append(_PartNumbered(event, self._aligned(variant, event.segment_sequence, event.segment_start)))
            elif isinstance(event, SegmentReady):
                sequence = self._aligned(variant, event.sequence, event.start)
                uri = f"seg_{self.instance}_{sequence}{variant.extension}"
                self.disk.write(variant.directory / uri, event.data)
                if self.sink is not None:
                    self.sink.segment_written(variant.name, uri, event.data, event.duration, event.discontinuity)
                ready.append(_SegmentWritten(event, sequence, uri))
            elif isinstance(event, SegmentsEnded):
                ready.append(event)
        return ready

    # -- on the event loop -------------------------------------------------------
    def _publish(self, variant: VariantOutput, ready: Sequence[_Ready]) -> None:
        """Show players what is now on disk, then queue the playlist files."""
        if not ready:
            return
        for item in ready:
            if isinstance(item, _InitWritten):
                variant.tracks = item.tracks
                if item.uri is not None:
                    variant.init_uri = item.uri
                    variant.init_tracks[item.uri] = item.tracks
                self.multivariant = None  # codecs may have changed
            elif isinstance(item, _PartNumbered):
                self._add_part(variant, item.event, item.sequence)
            elif isinstance(item, _SegmentWritten):
                self._add_segment(variant, item.event, item.sequence, item.uri)
            elif isinstance(item, SegmentsEnded):
                variant.playlist.end()
        # Parts are served from memory only; the files on disk (for origins
        # and inspection) change when a whole segment, an init segment or the
        # end arrives, which spares a write per part.
        if any(not isinstance(item, _PartNumbered) for item in ready):
            self._write_media_playlist(variant)
            if variant.playlist.segments:
                self._refresh_multivariant()
        if self.variants and all(v.playlist.ended for v in self.variants.values()):
            self.ended = True
        self._notify()

    def abandon(self, variant: VariantOutput) -> None:
        """End ``variant``'s playlist where it stands (its files could not be
        written), so that players stop waiting and the output can expire."""
        if not variant.playlist.ended:
            variant.playlist.end()
        if all(v.playlist.ended for v in self.variants.values()):
            self.ended = True
        self._notify()

    def _aligned(self, variant: VariantOutput, sequence: int, start: Fraction) -> int:
        """Number ``variant``'s segments like the other variants' segments
        that start at the same media time, so that one sequence number means
        the same moment in every rendition (a rung that starts late joins the
        others' numbering)."""
        if variant.sequence_offset is None:
            variant.sequence_offset = 0
            tolerance = self._same_moment
            others = [v for v in self._numbered if v is not variant and v.starts]
            for other in others:
                match = next((n for n, t in other.starts.items() if abs(t - start) <= tolerance), None)
                if match is not None:
                    variant.sequence_offset = match - sequence
                    break
            else:
                if others:
                    variant.sequence_offset = max(max(o.starts) for o in others) + 1 - sequence
        aligned = sequence + variant.sequence_offset
        variant.starts.setdefault(aligned, start)
        while len(variant.starts) > 4 * self.config.live_window_segments:
            del variant.starts[min(variant.starts)]
        return aligned

    def _program_date_time(self, start: Fraction, wall: float, discontinuity: bool) -> float:
        """One media-time-to-wall-clock mapping for every variant, so that a
        given moment has the same EXT-X-PROGRAM-DATE-TIME in every rendition
        (renditions reach the packager later than the source by their encoding
        delay). A discontinuity (the publisher came back) starts a new mapping."""
        tolerance = self._same_moment
        match = next((a for a in self._anchors if abs(a[0] - start) <= tolerance), None)
        if match is not None:
            return match[1] + float(start - match[0])
        earlier = [a for a in self._anchors if a[0] <= start]
        if earlier and not discontinuity:
            media, anchor_wall = max(earlier)
            return anchor_wall + float(start - media)
        self._anchors.append((start, wall))
        self._anchors.sort()
        del self._anchors[:-16]
        return wall

    def part_uri(self, variant: VariantOutput, sequence: int, index: int) -> str:
        return f"part_{self.instance}_{sequence}_{index}{variant.extension}"

    def _add_part(self, variant: VariantOutput, event: PartReady, sequence: int) -> None:
        self._mark_key_period(sequence, event.key)
        uri = self.part_uri(variant, sequence, event.index)
        part = PartEntry(uri, event.duration, event.independent, event.data)
        variant.playlist.add_part(sequence, part, event.discontinuity, variant.init_uri, self.key_tags(event.key))
        variant.playlist.next_part_uri = self.part_uri(variant, sequence, event.index + 1)

    def set_key_period(self, first_sequence: int, key_period: KeyPeriod | None) -> None:
        """Say that the segments numbered ``first_sequence`` and later (in
        every variant) are encrypted with ``key_period``'s key, until the next
        call names a later sequence; ``None`` means clear. Call it on the event
        loop before the first segment of the period is published; the DASH
        manifest starts a new Period there and announces the key."""
        self.key_periods[first_sequence] = key_period
        self._trim_marks()

    def _trim_marks(self) -> None:
        """Forget key periods that no listed or kept segment uses any more."""
        oldest = [v.playlist.segments[0].sequence for v in self.variants.values() if v.playlist.segments]
        if not oldest:
            return
        floor = min(oldest) - self.config.keep_extra_segments
        for marks in (self.key_periods, self.period_starts):
            starts = sorted(marks)
            for earlier, later in itertools.pairwise(starts):
                if later <= floor:
                    del marks[earlier]

    def _mark_key_period(self, sequence: int, key: SegmentKey | None) -> None:
        """Record the key period of segment ``sequence`` when it differs from
        the one in force (the first segment, a rotation, a reconnect), so the
        DASH manifest opens a Period there and announces its key. Only common
        encryption is announced in DASH; whole-segment AES-128 is HLS's own."""
        if key is None or self.common_scheme is None:
            return
        current = self.key_period_at(sequence)
        if current is None or (current.content_id, current.index) != (key.period.content_id, key.period.index):
            self.set_key_period(sequence, key.period)

    def key_period_at(self, sequence: int) -> KeyPeriod | None:
        """The key period of segment ``sequence`` (``None``: clear)."""
        found = [s for s in self.key_periods if s <= sequence]
        return self.key_periods[max(found)] if found else None

    def _add_segment(self, variant: VariantOutput, event: SegmentReady, sequence: int, uri: str) -> None:
        self.segments_written += 1
        self._mark_key_period(sequence, event.key)
        if self.clock_origin is None:
            self.clock_origin = event.program_date_time - float(event.start)
        if not self.period_starts or event.discontinuity or sequence in self.key_periods:
            known = self.period_starts.get(sequence)
            self.period_starts[sequence] = event.start if known is None else min(known, event.start)
        variant.stats.add(len(event.data), event.duration, event.video_frames)
        rounded = round(event.duration)
        if rounded > variant.playlist.target_duration and variant.playlist.segments:
            log.warning(
                "stream %s: a %.2fs segment exceeds the %ds target duration (keyframes too far apart); "
                "set the encoder's keyframe interval to %.0fs",
                self.name,
                float(event.duration),
                variant.playlist.target_duration,
                self.config.target_duration_s,
            )
        if not variant.playlist.segments:
            # The first segment shows the publisher's real keyframe interval:
            # make the target duration honest before any player sees it.
            variant.playlist.target_duration = max(variant.playlist.target_duration, ceil_seconds(event.duration))
        entry = SegmentEntry(
            sequence=sequence,
            uri=uri,
            duration=event.duration,
            program_date_time=self._program_date_time(event.start, event.program_date_time, event.discontinuity),
            discontinuity=event.discontinuity,
            init_uri=variant.init_uri,
            size=len(event.data),
            keys=self.key_tags(event.key),
            start=event.start,
        )
        removed = variant.playlist.add(entry)
        if variant.playlist.low_latency:
            # The next part is the first of the next segment.
            variant.playlist.next_part_uri = self.part_uri(variant, sequence + 1, 0)
        variant.removed_pending.extend(removed)
        while len(variant.removed_pending) > self.config.keep_extra_segments:
            old = variant.removed_pending.pop(0)
            self._delete(variant.directory / old.uri)
            self._remove_unused_init(variant, old.init_uri)
        if removed:
            self._trim_marks()

    def _remove_unused_init(self, variant: VariantOutput, init_uri: str | None) -> None:
        if init_uri is None or init_uri == variant.init_uri:
            return
        in_use = any(s.init_uri == init_uri for s in (*variant.playlist.segments, *variant.removed_pending))
        if not in_use:
            variant.init_tracks.pop(init_uri, None)
            self._delete(variant.directory / init_uri)

    def _delete(self, path: Path) -> None:
        self._submit(lambda: self.disk.unlink(path))

    def _write(self, path: Path, data: bytes) -> None:
        self._submit(lambda: self.disk.write(path, data))

    def rendition_reports(self, variant: VariantOutput) -> list[RenditionReport]:
        """Where every other variant's live edge is (LL-HLS)."""
        if not variant.playlist.low_latency:
            return []
        reports = []
        for other in self.variants.values():
            if other is variant or not other.playlist.segments:
                continue
            msn, part = other.playlist.last_position()
            reports.append(RenditionReport(f"../{other.name}/{MEDIA_PLAYLIST}", msn, part))
        return reports

    def render_media(self, variant: VariantOutput, rewrite: UriRewriter, skip: bool = False) -> str:
        return variant.playlist.render(rewrite, skip=skip, reports=self.rendition_reports(variant))

    def _write_media_playlist(self, variant: VariantOutput) -> None:
        # The file on disk is for origins and debugging; players are served
        # from memory, where blocking reloads and delta updates are answered.
        if variant.playlist.segments or variant.playlist.ended:
            self._write(variant.directory / MEDIA_PLAYLIST, self.render_media(variant, lambda u: u).encode())

    def variant_entry(self, variant: VariantOutput) -> Variant:
        video = next((t for t in variant.tracks if t.kind is MediaKind.VIDEO), None)
        declared = sum(t.bitrate or 0 for t in variant.tracks)
        peak = max(variant.stats.peak_bps, declared)
        # Measured frames per second of media first: the SPS timing info
        # often states the encoder's time base rather than its frame rate.
        frame_rate = variant.stats.frame_rate
        if frame_rate is None and video is not None and video.frame_rate:
            frame_rate = float(video.frame_rate)
        resolution = (video.width, video.height) if video is not None and video.width and video.height else None
        return Variant(
            uri=f"{variant.name}/{MEDIA_PLAYLIST}",
            bandwidth=int(peak * 1.1) or 1,
            average_bandwidth=variant.stats.average_bps or None,
            codecs=[codec_string(t) for t in variant.tracks],
            resolution=resolution,
            frame_rate=frame_rate if video is not None else None,
        )

    def _refresh_multivariant(self) -> None:
        ready = [v for v in self.variants.values() if v.playlist.segments]
        if not ready:
            return
        text = render_multivariant(
            [self.variant_entry(v) for v in ready], self.version, session_keys=self.session_keys()
        )
        if text != self.multivariant:
            self.multivariant = text
            self._write(self.directory / MULTIVARIANT, text.encode())

    def render_multivariant(self, rewrite: UriRewriter) -> str | None:
        ready = [v for v in self.variants.values() if v.playlist.segments]
        if not ready:
            return None
        return render_multivariant(
            [self.variant_entry(v) for v in ready], self.version, rewrite, session_keys=self.session_keys()
        )

    def finish_sink(self) -> None:
        """Queue the sink's end (after every file already queued)."""
        sink = self.sink
        if sink is not None:
            self._submit(sink.finish)

    def remove_files(self) -> None:
        """Queue the removal of the stream's folder (after its pending writes)."""
        directory = self.directory
        self._submit(lambda: self.disk.remove_tree(directory))
