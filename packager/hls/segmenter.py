"""Cutting a live stream into HLS segments: a sans-I/O state machine.

Feed it the media model's items with :meth:`Segmenter.feed` (``now`` is the
wall clock in seconds, used only for ``EXT-X-PROGRAM-DATE-TIME``) and collect
:class:`InitReady` / :class:`SegmentReady` / :class:`SegmentsEnded` events.
No files, no sockets, no clocks: :mod:`packager.hls.live` does the I/O.

Segments start on a video keyframe once the current one has reached the
target duration (any packet for audio-only streams), so every segment is
independently decodable. One packet per track is held back until the next
one arrives, which gives every sample an exact duration.

A publisher that reconnects restarts its clock at zero; the segmenter shifts
the new timestamps to continue where the old ones ended and marks the next
segment as a discontinuity, so players keep going without a reload.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class InitReady:
    """A new initialisation segment applies to the segments that follow."""

    version: int
    data: bytes
    tracks: tuple[Track, ...]


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


SegmenterEvent = InitReady | SegmentReady | SegmentsEnded


@dataclass(slots=True)
class SegmenterStats:
    out_of_order_dropped: int = 0
    segments: int = 0


@dataclass(slots=True)
class _Open:
    """The segment being assembled."""

    start: Fraction
    pdt: float
    packets: list[Packet] = field(default_factory=list)
    discontinuity: bool = False


class Segmenter:
    """Turns one stream's items into segments for one variant."""

    def __init__(
        self,
        muxer_factory: MuxerFactory,
        target_duration: Fraction,
        max_duration: Fraction,
    ) -> None:
        if target_duration <= 0 or max_duration < target_duration:
            raise PackagerError("invalid segment durations")
        self._factory = muxer_factory
        self._target = target_duration
        self._max = max_duration
        self._events: list[SegmenterEvent] = []
        self._muxer: SegmentMuxer | None = None
        self._tracks: tuple[Track, ...] = ()
        self._video: int | None = None
        self._held: dict[int, Packet] = {}
        self._last_delta: dict[int, int] = {}
        self._last_dts: dict[int, int] = {}
        self._open: _Open | None = None
        self._sequence = 0
        self._init_version = 0
        self._offset = Fraction(0)  # seconds added to every timestamp
        self._realign = False
        self._pending_discontinuity = False
        self._end = Fraction(0)  # media time at which the last closed segment ended
        self._anchor: tuple[float, Fraction] | None = None  # (wall, media) for program date time
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

    # -- internals --------------------------------------------------------
    def _start(self, item: StreamStarted, now: float) -> None:
        restarted = self._muxer is not None
        if restarted:
            self._close_open(final=True)
            self._realign = True
            self._pending_discontinuity = True
            self._anchor = None
        self._tracks = item.tracks
        self._video = next((t.index for t in item.tracks if t.kind is MediaKind.VIDEO), None)
        self._held.clear()
        self._last_delta.clear()
        self._last_dts.clear()
        self._muxer = self._factory(item.tracks)
        init = self._muxer.init_segment()
        self._init_version += 1
        self._events.append(InitReady(self._init_version, init or b"", item.tracks))

    def _shifted(self, packet: Packet) -> Packet:
        if not self._offset:
            return packet
        ticks = round(self._offset / packet.time_base)
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
            self._offset = self._end - packet.dts_seconds
            self._realign = False
        packet = self._shifted(packet)
        last = self._last_dts.get(packet.track)
        if last is not None and packet.dts <= last:
            self.stats.out_of_order_dropped += 1
            return
        self._last_dts[packet.track] = packet.dts
        at = packet.dts_seconds
        if self._anchor is None:
            self._anchor = (now, at)
        is_boundary = packet.keyframe if packet.track == self._video else self._video is None
        if self._open is None:
            if self._video is not None and not (packet.track == self._video and packet.keyframe):
                return  # wait for the first keyframe so that the first segment decodes
            self._open = _Open(start=at, pdt=self._pdt(at), discontinuity=self._take_discontinuity())
        elif (is_boundary and at - self._open.start >= self._target) or at - self._open.start >= self._max:
            self._cut(at, packet)
        held = self._held.get(packet.track)
        if held is not None:
            self._complete(held, packet.dts - held.dts)
        self._held[packet.track] = packet

    def _take_discontinuity(self) -> bool:
        flag = self._pending_discontinuity
        self._pending_discontinuity = False
        return flag

    def _pdt(self, media_time: Fraction) -> float:
        assert self._anchor is not None
        wall, media = self._anchor
        return wall + float(media_time - media)

    def _complete(self, packet: Packet, duration: int) -> None:
        if duration > 0:
            self._last_delta[packet.track] = duration
        else:
            duration = self._last_delta.get(packet.track, 0)
        assert self._open is not None
        self._open.packets.append(
            Packet(packet.track, packet.pts, packet.dts, packet.time_base, packet.data, packet.keyframe, duration)
        )

    def _cut(self, at: Fraction, boundary: Packet) -> None:
        """Close the open segment at media time ``at`` and open the next."""
        assert self._open is not None
        for track, held in list(self._held.items()):
            if held.dts_seconds < at:
                if track == boundary.track:
                    self._complete(held, boundary.dts - held.dts)
                else:
                    self._complete(held, self._last_delta.get(track, 0))
                del self._held[track]
        self._emit(at)
        self._open = _Open(start=at, pdt=self._pdt(at))

    def _close_open(self, final: bool) -> None:
        if self._open is None:
            return
        end = self._open.start
        for held in self._held.values():
            self._complete(held, self._last_delta.get(held.track, 0))
            end = max(end, held.dts_seconds + self._last_delta.get(held.track, 0) * held.time_base)
        self._held.clear()
        for p in self._open.packets:
            end = max(end, p.dts_seconds + p.duration * p.time_base)
        if self._open.packets:
            self._emit(end)
        self._open = None

    def _emit(self, end: Fraction) -> None:
        assert self._open is not None and self._muxer is not None
        seg = self._open
        packets = sorted(seg.packets, key=lambda p: (p.dts_seconds, p.track))
        data = self._muxer.media_segment(packets, self._sequence)
        self._events.append(
            SegmentReady(
                sequence=self._sequence,
                data=data,
                duration=end - seg.start,
                program_date_time=seg.pdt,
                discontinuity=seg.discontinuity,
                init_version=self._init_version,
                start=seg.start,
                packet_count=len(packets),
                video_frames=sum(1 for p in packets if p.track == self._video),
            )
        )
        self._sequence += 1
        self.stats.segments += 1
        self._end = end
