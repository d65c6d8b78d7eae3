"""Cutting a live stream into HLS segments: a sans-I/O state machine.

Feed it the media model's items with :meth:`Segmenter.feed` (``now`` is the
wall clock in seconds, used only for ``EXT-X-PROGRAM-DATE-TIME``) and collect
:class:`InitReady` / :class:`SegmentReady` / :class:`SegmentsEnded` events.
No files, no sockets, no clocks: :mod:`packager.hls.live` does the I/O.

Segments start on a video keyframe once the current one has reached the
target duration (any packet for audio-only streams), so every segment is
independently decodable. One packet per track is held back until the next
one arrives, which gives every sample an exact duration.

With a part target (LL-HLS), each segment is also cut into partial segments
of at most that duration, each its own fragment (fMP4 ``moof``/``mdat`` or a
run of TS packets); the segment's bytes are then its parts' bytes joined, so
a part and its parent segment never disagree.

Media times are compared as integers counted in a unit common to every
track's time base (the least common multiple of their denominators), so the
per-packet path does no :class:`~fractions.Fraction` arithmetic; events
still report exact Fractions of a second.

A publisher that reconnects restarts its clock at zero; the segmenter shifts
the new timestamps to continue where the old ones ended and marks the next
segment as a discontinuity, so players keep going without a reload. A
restart whose clock continues (``StreamStarted.clock_continues``: new codec
parameters mid-stream) cuts and marks a discontinuity too, with a new
initialisation segment, but keeps the timeline.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from engine.media import MediaKind, Packet, StreamEnded, StreamItem, StreamStarted, Track
from packager.errors import PackagerError


class SegmentMuxer(Protocol):
    """A container writer for one variant: fMP4 or MPEG-TS."""

    extension: str

    def init_segment(self) -> bytes | None:
        """The initialisation segment, or ``None`` for formats without one."""
        ...

    def media_segment(self, packets: Sequence[Packet], sequence: int) -> bytes: ...


MuxerFactory = Callable[[tuple[Track, ...]], SegmentMuxer]


ORIGIN_HEADROOM = Fraction(10)
"""Seconds a stream that starts near zero is moved forward, so that packets
from before its first one (other renditions' priming and reordering delays)
keep non-negative decode times."""


@dataclass(frozen=True, slots=True)
class InitReady:
    """A new initialisation segment applies to the segments that follow."""

    version: int
    data: bytes
    tracks: tuple[Track, ...]


@dataclass(frozen=True, slots=True)
class PartReady:
    """A partial segment (LL-HLS) of the segment ``segment_sequence``."""

    segment_sequence: int
    index: int
    data: bytes
    duration: Fraction
    independent: bool
    discontinuity: bool
    segment_start: Fraction


@dataclass(frozen=True, slots=True)
class SegmentReady:
    sequence: int
    data: bytes
    duration: Fraction
    program_date_time: float
    discontinuity: bool
    init_version: int
    start: Fraction
    packet_count: int
    video_frames: int


@dataclass(frozen=True, slots=True)
class SegmentsEnded:
    reason: str


SegmenterEvent = InitReady | PartReady | SegmentReady | SegmentsEnded


@dataclass(slots=True)
class TimelineOrigin:
    """The shift applied to a stream's first timestamps, shared by the
    segmenters of all its renditions so that they keep one timeline."""

    offset: Fraction | None = None


@dataclass(slots=True)
class SegmenterStats:
    out_of_order_dropped: int = 0
    negative_dropped: int = 0
    segments: int = 0


@dataclass(slots=True)
class _Open:
    """The segment being assembled. ``start`` and ``part_start`` are media
    times in the segmenter's unit (see :meth:`Segmenter._rebase`)."""

    start: int
    pdt: float
    packets: list[Packet] = field(default_factory=list)
    discontinuity: bool = False
    part_start: int = 0
    part_data: list[bytes] = field(default_factory=list)
    video_frames: int = 0
    packet_count: int = 0

    def __post_init__(self) -> None:
        self.part_start = self.start


class Segmenter:
    """Turns one stream's items into segments for one variant."""

    def __init__(
        self,
        muxer_factory: MuxerFactory,
        target_duration: Fraction,
        max_duration: Fraction,
        part_target: Fraction | None = None,
        origin: TimelineOrigin | None = None,
    ) -> None:
        self._origin = origin if origin is not None else TimelineOrigin()
        if target_duration <= 0 or max_duration < target_duration:
            raise PackagerError("invalid segment durations")
        if part_target is not None and not 0 < part_target <= target_duration:
            raise PackagerError("the part target must be positive and at most the segment target")
        self._part_target = part_target
        self._fragments = 0
        self._factory = muxer_factory
        self._target = target_duration
        self._max = max_duration
        self._events: list[SegmenterEvent] = []
        self._muxer: SegmentMuxer | None = None
        self._tracks: tuple[Track, ...] = ()
        self._video: int | None = None
        self._held: dict[int, Packet] = {}
        self._last_delta: dict[int, int] = {}
        self._recent_deltas: dict[int, collections.deque[int]] = {}
        self._last_dts: dict[int, int] = {}
        self._open: _Open | None = None
        self._sequence = 0
        self._init_version = 0
        self._offset = Fraction(0)  # seconds added to every timestamp
        self._shift_ticks: dict[int, tuple[Fraction, int]] = {}  # by track: (time base, offset in its ticks)
        self._realign = False
        self._pending_discontinuity = False
        # Media times below are integers in units of 1/self._unit seconds.
        self._unit = 1
        self._factors: dict[Fraction, int] = {}  # units per tick of each time base
        self._track_factor: list[tuple[Fraction, int]] = []  # by track index: (time base, units per tick)
        self._target_units = 0  # the least whole number of units >= the target
        self._max_units = 0
        self._part_units: int | None = None  # the most whole units <= the part target
        self._set_thresholds()
        self._end = 0  # media time at which the last closed segment ended
        self._anchor: tuple[float, int] | None = None  # (wall, media) for program date time
        self.stats = SegmenterStats()
        self.ended = False

    # -- input ------------------------------------------------------------
    def feed(self, item: StreamItem, now: float) -> None:
        """Process one item from the stream."""
        if self.ended:
            return
        if isinstance(item, StreamStarted):
            self._start(item, now)
        elif isinstance(item, Packet):
            self._packet(item, now)
        elif isinstance(item, StreamEnded):
            self._close_open(final=True)
            self.ended = True
            self._events.append(SegmentsEnded(item.reason))

    def events(self) -> list[SegmenterEvent]:
        """Return and forget the events produced so far."""
        out, self._events = self._events, []
        return out

    @property
    def next_sequence(self) -> int:
        return self._sequence

    @property
    def anchored(self) -> bool:
        """Whether program date times are anchored: the ``now`` given with
        the first packet after the start (or after a restart on a new clock)
        is the wall clock of that packet's media time."""
        return self._anchor is not None

    # -- media time as integers -------------------------------------------
    def _set_thresholds(self) -> None:
        unit = self._unit
        self._target_units = -((-self._target.numerator * unit) // self._target.denominator)
        self._max_units = -((-self._max.numerator * unit) // self._max.denominator)
        part = self._part_target
        self._part_units = None if part is None else (part.numerator * unit) // part.denominator

    def _rebase(self, denominators: list[int]) -> None:
        """Make the unit a multiple of every denominator in ``denominators``,
        rescaling the media times already held (exactly: the new unit is a
        multiple of the old one)."""
        unit = math.lcm(self._unit, *denominators)
        if unit == self._unit:
            return
        k = unit // self._unit
        self._unit = unit
        self._factors = {}
        self._track_factor = [(tb, self._factor(tb)) for tb, _ in self._track_factor]
        self._set_thresholds()
        self._end *= k
        if self._anchor is not None:
            self._anchor = (self._anchor[0], self._anchor[1] * k)
        if self._open is not None:
            self._open.start *= k
            self._open.part_start *= k

    def _factor(self, time_base: Fraction) -> int:
        """Units per tick of ``time_base``."""
        factor = self._factors.get(time_base)
        if factor is None:
            if self._unit % time_base.denominator:
                self._rebase([time_base.denominator])
            factor = self._factors[time_base] = self._unit // time_base.denominator * time_base.numerator
        return factor

    def _units_per_tick(self, packet: Packet) -> int:
        """The factor of ``packet``'s time base, looked up by identity first
        (every packet of a track normally shares its track's time base)."""
        track = packet.track
        if track < len(self._track_factor):
            tb, factor = self._track_factor[track]
            if packet.time_base is tb:
                return factor
        return self._factor(packet.time_base)

    def _at(self, packet: Packet) -> int:
        """``packet``'s decode time in units."""
        return packet.dts * self._units_per_tick(packet)

    def _seconds(self, units: int) -> Fraction:
        return Fraction(units, self._unit)

    # -- internals --------------------------------------------------------
    def _start(self, item: StreamStarted, now: float) -> None:
        restarted = self._muxer is not None
        if restarted:
            self._close_open(final=True)
            self._pending_discontinuity = True
            if not item.clock_continues:
                self._realign = True
                self._anchor = None
        self._tracks = item.tracks
        self._rebase([t.time_base.denominator for t in item.tracks])
        self._track_factor = [(t.time_base, self._factor(t.time_base)) for t in item.tracks]
        self._video = next((t.index for t in item.tracks if t.kind is MediaKind.VIDEO), None)
        self._held.clear()
        self._last_delta.clear()
        self._recent_deltas.clear()
        self._last_dts.clear()
        self._muxer = self._factory(item.tracks)
        init = self._muxer.init_segment()
        self._init_version += 1
        self._events.append(InitReady(self._init_version, init or b"", item.tracks))

    def _set_offset(self, offset: Fraction) -> None:
        if offset != self._offset:
            self._offset = offset
            self._shift_ticks = {}

    def _shifted(self, packet: Packet) -> Packet:
        if not self._offset:
            return packet
        # Keyed by track and checked by identity: hashing a Fraction costs
        # more than the whole lookup should.
        cached = self._shift_ticks.get(packet.track)
        if cached is not None and cached[0] is packet.time_base:
            ticks = cached[1]
        else:
            ticks = round(self._offset / packet.time_base)
            self._shift_ticks[packet.track] = (packet.time_base, ticks)
        return Packet(
            packet.track,
            packet.pts + ticks,
            packet.dts + ticks,
            packet.time_base,
            packet.data,
            packet.keyframe,
            packet.duration,
        )

    def _packet(self, packet: Packet, now: float) -> None:
        if self._muxer is None or not 0 <= packet.track < len(self._tracks):
            return
        if self._realign:
            self._set_offset(self._seconds(self._end) - packet.dts_seconds)
            self._realign = False
        elif self._anchor is None and self.stats.segments == 0:
            # Streams start a little before zero (AAC priming, B-frame decode
            # delay), by different amounts in different renditions, and fMP4
            # stores decode times unsigned: give the timeline headroom, the
            # same shift for every rendition of the stream.
            if self._origin.offset is None:
                self._origin.offset = max(Fraction(0), ORIGIN_HEADROOM - packet.dts_seconds)
            self._set_offset(self._origin.offset)
        packet = self._shifted(packet)
        if packet.dts < 0:
            self.stats.negative_dropped += 1
            return
        last = self._last_dts.get(packet.track)
        if last is not None and packet.dts <= last:
            self.stats.out_of_order_dropped += 1
            return
        self._last_dts[packet.track] = packet.dts
        at = self._at(packet)
        if self._anchor is None:
            self._anchor = (now, at)
        is_boundary = packet.keyframe if packet.track == self._video else self._video is None
        if self._open is None:
            if self._video is not None and not (packet.track == self._video and packet.keyframe):
                return  # wait for the first keyframe so that the first segment decodes
            self._open = _Open(start=at, pdt=self._pdt(at), discontinuity=self._take_discontinuity())
        elif (is_boundary and at - self._open.start >= self._target_units) or at - self._open.start >= self._max_units:
            self._cut(at, packet)
        elif self._part_due(packet, at):
            self._flush_held_before(at, packet)
            self._close_part(at)
        held = self._held.get(packet.track)
        if held is not None:
            self._complete(held, packet.dts - held.dts)
        self._held[packet.track] = packet

    def _take_discontinuity(self) -> bool:
        flag = self._pending_discontinuity
        self._pending_discontinuity = False
        return flag

    def _pdt(self, media_time: int) -> float:
        assert self._anchor is not None
        wall, media = self._anchor
        return wall + (media_time - media) / self._unit

    def _complete(self, packet: Packet, duration: int) -> None:
        if duration > 0:
            self._last_delta[packet.track] = duration
            recent = self._recent_deltas.setdefault(packet.track, collections.deque(maxlen=8))
            recent.append(duration)
        else:
            duration = self._last_delta.get(packet.track, 0)
        assert self._open is not None
        self._open.packets.append(
            Packet(packet.track, packet.pts, packet.dts, packet.time_base, packet.data, packet.keyframe, duration)
        )

    def _part_due(self, packet: Packet, at: int) -> bool:
        """Whether ``packet`` must open a new part: including it would make
        the current part longer than the part target."""
        if self._part_units is None or self._open is None:
            return False
        if self._video is not None and packet.track != self._video:
            return False
        span = at - self._open.part_start
        if span <= 0:
            return False
        # The packet's own duration is not known until the next one arrives:
        # assume the longest of the recent ones, so that clock jitter (RTMP's
        # millisecond timestamps alternate 33 and 34 ms at 30 fps) never makes
        # a part longer than the target.
        own = (packet.duration or max(self._recent_deltas.get(packet.track, (0,)))) * self._units_per_tick(packet)
        return span + own > self._part_units

    def _flush_held_before(self, at: int, boundary: Packet) -> None:
        """Complete the held packets that belong before media time ``at``."""
        for track, held in list(self._held.items()):
            if self._at(held) < at:
                if track == boundary.track:
                    self._complete(held, boundary.dts - held.dts)
                else:
                    self._complete(held, self._last_delta.get(track, 0))
                del self._held[track]

    def _close_part(self, end: int) -> None:
        """Mux the packets gathered since the last part into one fragment."""
        assert self._open is not None and self._muxer is not None
        seg = self._open
        if not seg.packets:
            return
        packets = sorted(seg.packets, key=lambda p: (self._at(p), p.track))
        data = self._muxer.media_segment(packets, self._fragments)
        self._fragments += 1
        first_video = next((p for p in packets if p.track == self._video), None)
        independent = first_video.keyframe if first_video is not None else True
        if self._part_target is not None:
            self._events.append(
                PartReady(
                    self._sequence,
                    len(seg.part_data),
                    data,
                    self._seconds(end - seg.part_start),
                    independent,
                    seg.discontinuity,
                    self._seconds(seg.start),
                )
            )
        seg.part_data.append(data)
        seg.video_frames += sum(1 for p in packets if p.track == self._video)
        seg.packet_count += len(packets)
        seg.packets = []
        seg.part_start = end

    def _cut(self, at: int, boundary: Packet) -> None:
        """Close the open segment at media time ``at`` and open the next."""
        self._flush_held_before(at, boundary)
        self._emit(at)
        self._open = _Open(start=at, pdt=self._pdt(at))

    def _close_open(self, final: bool) -> None:
        if self._open is None:
            return
        end = self._open.start
        for held in self._held.values():
            self._complete(held, self._last_delta.get(held.track, 0))
            end = max(end, (held.dts + self._last_delta.get(held.track, 0)) * self._units_per_tick(held))
        self._held.clear()
        for p in self._open.packets:
            end = max(end, (p.dts + p.duration) * self._units_per_tick(p))
        if self._open.packets or self._open.part_data:
            self._emit(end)
        self._open = None

    def _emit(self, end: int) -> None:
        assert self._open is not None
        seg = self._open
        self._close_part(end)
        self._events.append(
            SegmentReady(
                sequence=self._sequence,
                data=b"".join(seg.part_data),
                duration=self._seconds(end - seg.start),
                program_date_time=seg.pdt,
                discontinuity=seg.discontinuity,
                init_version=self._init_version,
                start=self._seconds(seg.start),
                packet_count=seg.packet_count,
                video_frames=seg.video_frames,
            )
        )
        self._sequence += 1
        self.stats.segments += 1
        self._end = end
