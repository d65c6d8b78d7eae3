"""DASH manifests from the HLS output's state: one set of CMAF segments,
two manifests.

The HLS output (:class:`packager.hls.output.StreamOutput`) keeps, for every
variant, the segments in its live window with their exact media start
times, the init segment each one needs, and the discontinuities where a
publisher came back. :func:`build` turns that into a :class:`Manifest`
without reading a clock or a file: one Period from each boundary (the
stream's first segment, every discontinuity, every new key period) to the
next, an AdaptationSet per kind of variant, and per variant a
SegmentTemplate whose ``$Number$`` is the HLS media sequence number, so the
files named are exactly the files the HLS output wrote. LL-HLS parts are
not listed: DASH players fetch whole segments.

Timing. MPD time is the stream's media time: a dynamic manifest's
``availabilityStartTime`` is the wall-clock time of media time 0 (fixed by
the first segment), so a segment's availability follows from its media
time as DASH requires. A Period starts at its first segment's time rounded
down to a grid on which every Representation's timescale lands on whole
ticks, so that ``presentationTimeOffset`` and ``Period@start`` state the same
instant exactly. A static manifest (VOD, or a live stream that ended)
starts its first Period at 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from drm.model import KeyPeriod, Protection
from engine.codecs import codec_string
from engine.media import Codec, MediaKind, Track
from packager.dash.mpd import (
    AdaptationSet,
    ContentProtection,
    Manifest,
    Period,
    Representation,
    TimelineEntry,
)
from packager.errors import ManifestError
from packager.hls.playlist import SegmentEntry

VIDEO_TIMESCALE = 90000
"""Video is timed at 90 kHz in our fMP4 (see :mod:`packager.fmp4.writer`)."""
TEMPLATE_NUMBER = "$Number$"


@dataclass(frozen=True, slots=True)
class VariantView:
    """What the manifest needs of one variant: its listed segments (oldest
    first, consecutive numbers), the tracks of each init segment they name,
    and its measured figures."""

    name: str
    segments: Sequence[SegmentEntry]
    init_tracks: Mapping[str, tuple[Track, ...]]
    bandwidth: int
    frame_rate: float | None = None


@dataclass(frozen=True, slots=True)
class LiveTiming:
    """The live figures the HLS settings imply."""

    target_duration: Fraction
    window_segments: int

    @property
    def time_shift_buffer_depth(self) -> Fraction:
        """As much as the HLS media playlists list."""
        return self.target_duration * self.window_segments

    @property
    def suggested_presentation_delay(self) -> Fraction:
        """Three target durations behind the live edge, like HLS's hold-back."""
        return 3 * self.target_duration


@dataclass(frozen=True, slots=True)
class Links:
    """How the viewer's URLs are written: ``query`` (``?token=...`` or empty)
    is appended to every segment URL; the absolute URLs of the time and
    ClearKey licence endpoints."""

    query: str = ""
    utc_timing_url: str | None = None
    clearkey_licence_url: str | None = None


KeyPeriodAt = Callable[[int], KeyPeriod | None]


def _no_keys(_sequence: int) -> KeyPeriod | None:
    return None


def timescale_of(tracks: Sequence[Track]) -> int:
    """The SegmentTimeline timescale of a Representation with ``tracks``:
    the video track's when there is one (its samples are then exact),
    else the audio sample rate."""
    if any(t.kind is MediaKind.VIDEO for t in tracks):
        return VIDEO_TIMESCALE
    for track in tracks:
        if track.codec is Codec.OPUS:
            return 48000
        if track.sample_rate:
            return track.sample_rate
    raise ManifestError("an audio track without a sample rate")


def _template(variant: str, segment: SegmentEntry) -> tuple[str, str]:
    """Split a segment's file name around its number: the HLS output names
    segments ``PREFIX_<sequence>.EXT``."""
    match = re.fullmatch(rf"([^/$]*_){segment.sequence}(\.[A-Za-z0-9]+)", segment.uri)
    if match is None:
        raise ManifestError(f"variant {variant}: segment {segment.uri} does not end in its number {segment.sequence}")
    return match.group(1), match.group(2)


def _kind(tracks: Sequence[Track]) -> tuple[str, str]:
    """(contentType, what must match to share an AdaptationSet)."""
    video = next((t for t in tracks if t.kind is MediaKind.VIDEO), None)
    if video is not None:
        return "video", f"video:{video.codec.value}"
    audio = next((t for t in tracks if t.kind is MediaKind.AUDIO), None)
    if audio is None:
        raise ManifestError("a variant with neither video nor audio")
    return "audio", f"audio:{audio.codec.value}"


def _same_key(a: KeyPeriod | None, b: KeyPeriod | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.key.kid == b.key.kid


def period_boundaries(
    variants: Sequence[VariantView], recorded: Mapping[int, Fraction], key_period_at: KeyPeriodAt = _no_keys
) -> dict[int, Fraction]:
    """The sequence number and media start time of each Period of the
    listed segments, oldest first.

    ``recorded`` holds the boundaries the output saw (first segment,
    discontinuities, key period starts) with the earliest start any variant
    gave them; the boundaries it lacks are found in the listed segments
    (a discontinuity, a new init segment, a new key), and the oldest listed
    segment opens a Period when no recorded boundary precedes it.
    """
    listed = [s for v in variants for s in v.segments]
    if not listed:
        return {}
    first = min(s.sequence for s in listed)
    found: dict[int, Fraction] = {}
    earlier = [b for b in recorded if b <= first]
    if earlier:
        found[max(earlier)] = recorded[max(earlier)]
    for b, start in recorded.items():
        if b > first:
            found[b] = start
    for view in variants:
        previous: SegmentEntry | None = None
        for seg in view.segments:
            if seg.start is None:
                raise ManifestError(f"variant {view.name}: segment {seg.sequence} has no start time")
            new = previous is None and not any(b <= seg.sequence for b in found)
            if previous is not None:
                new = seg.discontinuity or seg.init_uri != previous.init_uri
                new = new or not _same_key(key_period_at(seg.sequence), key_period_at(previous.sequence))
            if new:
                found[seg.sequence] = min(found.get(seg.sequence, seg.start), seg.start)
            previous = seg
    return dict(sorted(found.items()))


def build(
    variants: Sequence[VariantView],
    *,
    boundaries: Mapping[int, Fraction],
    dynamic: bool,
    now: float,
    timing: LiveTiming,
    clock_origin: float | None = None,
    links: Links = Links(),
    protection: Protection = Protection.NONE,
    key_period_at: KeyPeriodAt = _no_keys,
) -> Manifest:
    """The manifest of ``variants`` (those with no segment are left out).

    ``boundaries`` are the output's recorded Period starts (see
    :func:`period_boundaries`); ``key_period_at`` gives each segment's key
    period when ``protection`` is ``cenc`` or ``cbcs`` (``None``: clear).
    ``clock_origin`` (wall-clock seconds of media time 0) is needed when
    ``dynamic``.
    """
    views = [v for v in variants if v.segments]
    if not views:
        raise ManifestError("no variant has a segment yet")
    if dynamic and clock_origin is None:
        raise ManifestError("a live manifest needs the wall-clock time of media time 0")
    starts = period_boundaries(views, boundaries, key_period_at)
    numbers = list(starts)
    periods: list[tuple[int, Fraction, list[tuple[VariantView, list[SegmentEntry]]]]] = []
    for i, number in enumerate(numbers):
        until = numbers[i + 1] if i + 1 < len(numbers) else None
        members = []
        for view in views:
            chosen = [s for s in view.segments if s.sequence >= number and (until is None or s.sequence < until)]
            if chosen:
                members.append((view, chosen))
        if members:
            periods.append((number, starts[number], members))
    shift: Fraction | None = None
    out: list[Period] = []
    longest = Fraction(0)
    end = Fraction(0)
    for number, recorded_start, members in periods:
        scales = {view.name: timescale_of(_tracks(view, segs)) for view, segs in members}
        grid = math.gcd(1000, *scales.values())
        earliest = min([recorded_start, *(segs[0].start for _, segs in members if segs[0].start is not None)])
        start = Fraction(math.floor(earliest * grid), grid)
        if shift is None:
            shift = Fraction(0) if dynamic else start
        sets: dict[str, list[Representation]] = {}
        types: dict[str, str] = {}
        for view, segs in members:
            tracks = _tracks(view, segs)
            content_type, group = _kind(tracks)
            types[group] = content_type
            sets.setdefault(group, []).append(_representation(view, segs, tracks, scales[view.name], start, links))
            for seg in segs:
                longest = max(longest, seg.duration)
                assert seg.start is not None
                end = max(end, seg.start + seg.duration)
        adaptation_sets = tuple(
            AdaptationSet(i, types[group], f"{types[group]}/mp4", tuple(sorted(reps, key=lambda r: -r.bandwidth)))
            for i, (group, reps) in enumerate(sorted(sets.items()))
        )
        key = key_period_at(number) if protection.common_encryption else None
        content_protection = None
        if key is not None:
            content_protection = ContentProtection(protection, key, links.clearkey_licence_url)
        out.append(Period(f"p{number}", start - shift, adaptation_sets, content_protection))
    assert shift is not None
    if dynamic:
        return Manifest(
            dynamic=True,
            periods=tuple(out),
            publish_time=now,
            min_buffer_time=timing.target_duration,
            max_segment_duration=longest,
            availability_start=clock_origin,
            minimum_update_period=timing.target_duration,
            time_shift_buffer_depth=timing.time_shift_buffer_depth,
            suggested_presentation_delay=timing.suggested_presentation_delay,
            utc_timing_url=links.utc_timing_url,
        )
    return Manifest(
        dynamic=False,
        periods=tuple(out),
        publish_time=now,
        min_buffer_time=timing.target_duration,
        max_segment_duration=longest,
        duration=end - shift,
    )


_WHOLE_RATES = (10, 12, 15, 24, 25, 30, 48, 50, 60, 90, 100, 120)
_NTSC_RATES = tuple(Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120))


def nominal_frame_rate(measured: float | None) -> Fraction | None:
    """The usual frame rate that ``measured`` stands for, or ``None``.

    Rates measured over media time come out a little off (29.43 for a 30
    fps rendition whose last segment ends on a short frame): an NTSC rate
    is taken only when it is met almost exactly, else the nearest whole
    rate within 4 %; otherwise nothing is stated (``@frameRate`` is
    optional, and a wrong one would mislead a player's filters).
    """
    if not measured or measured <= 0:
        return None
    for rate in _NTSC_RATES:
        if abs(float(rate) - measured) <= 0.0005 * float(rate):
            return rate
    nearest = min(_WHOLE_RATES, key=lambda rate: abs(rate - measured))
    return Fraction(nearest) if abs(nearest - measured) <= 0.04 * nearest else None


def _tracks(view: VariantView, segments: Sequence[SegmentEntry]) -> tuple[Track, ...]:
    init = segments[0].init_uri
    if init is None:
        raise ManifestError(f"variant {view.name}: DASH needs fMP4 segments with an init segment")
    if any(s.init_uri != init for s in segments):
        raise ManifestError(f"variant {view.name}: one Period's segments name two init segments")
    tracks = view.init_tracks.get(init)
    if not tracks:
        raise ManifestError(f"variant {view.name}: the tracks of {init} are unknown")
    return tracks


def _representation(
    view: VariantView,
    segments: Sequence[SegmentEntry],
    tracks: tuple[Track, ...],
    timescale: int,
    period_start: Fraction,
    links: Links,
) -> Representation:
    prefix, suffix = _template(view.name, segments[0])
    entries = []
    for seg in segments:
        if _template(view.name, seg) != (prefix, suffix):
            raise ManifestError(f"variant {view.name}: segment {seg.uri} is named unlike {segments[0].uri}")
        assert seg.start is not None
        t = round(seg.start * timescale)
        entries.append(TimelineEntry(seg.sequence, t, round((seg.start + seg.duration) * timescale) - t))
    video = next((t for t in tracks if t.kind is MediaKind.VIDEO), None)
    audio = next((t for t in tracks if t.kind is MediaKind.AUDIO), None)
    frame_rate = None
    if video is not None:
        frame_rate = nominal_frame_rate(view.frame_rate or (float(video.frame_rate) if video.frame_rate else None))
    assert segments[0].init_uri is not None
    return Representation(
        id=view.name,
        bandwidth=view.bandwidth,
        codecs=",".join(codec_string(t) for t in tracks),
        mime_type="video/mp4" if video is not None else "audio/mp4",
        timescale=timescale,
        presentation_time_offset=int(period_start * timescale),
        initialization=f"{view.name}/{segments[0].init_uri}{links.query}",
        media=f"{view.name}/{prefix}{TEMPLATE_NUMBER}{suffix}{links.query}",
        segments=tuple(entries),
        width=video.width if video is not None else None,
        height=video.height if video is not None else None,
        frame_rate=frame_rate,
        audio_sampling_rate=(audio.sample_rate if audio is not None and video is None else None),
    )
