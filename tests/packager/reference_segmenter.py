"""The HLS segmenter with exact :class:`~fractions.Fraction` media times
everywhere: the reference that :mod:`packager.hls.segmenter` (which counts
media times as integers in a unit common to every time base) must match
event for event (``test_segmenter_equivalence.py``).

It is the segmenter's logic as it was before media times became integers,
kept in the test tree only: change it only together with a change of the
segmenter's decisions. The event types, constants and helpers are the
production ones, so that events compare equal.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from fractions import Fraction

from drm.rotation import KeyRotation
from engine.media import MediaKind, Packet, StreamEnded, StreamItem, StreamStarted, Track
from packager.errors import PackagerError
from packager.hls.keys import SegmentKey, SegmentProtection, encrypt_whole, segment_iv
from packager.hls.segmenter import (
    MIN_PART_SHARE,
    ORIGIN_HEADROOM,
    InitReady,
    MuxerFactory,
    PartReady,
    SegmenterEvent,
    SegmenterStats,
    SegmentMuxer,
    SegmentReady,
    SegmentsEnded,
    TimelineOrigin,
)


@dataclass(slots=True)
class _Open:
    """The segment being assembled."""

    start: Fraction
    pdt: float
    packets: list[Packet] = field(default_factory=list)
    discontinuity: bool = False
    part_start: Fraction = Fraction(0)
    part_data: list[bytes] = field(default_factory=list)
    """The parts' muxed bytes, before whole-segment encryption."""
    video_frames: int = 0
    packet_count: int = 0
    key: SegmentKey | None = None

    def __post_init__(self) -> None:
        self.part_start = self.start


class ReferenceSegmenter:
    """The segmenter as it was with Fraction media times (see the module
    docstring): the oracle the integer segmenter is compared with."""

    def __init__(
        self,
        muxer_factory: MuxerFactory,
        target_duration: Fraction,
        max_duration: Fraction,
        part_target: Fraction | None = None,
        origin: TimelineOrigin | None = None,
        protection: SegmentProtection | None = None,
    ) -> None:
        self._origin = origin if origin is not None else TimelineOrigin()
        self._protection = protection
        self._period: SegmentKey | None = None  # the current period (with the IV of its latest segment)
        self._rotation: KeyRotation | None = None  # made with the first period, in the caller's thread
        self._period_chosen = False
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

    @property
    def anchored(self) -> bool:
        """Whether program date times are anchored: the ``now`` given with
        the first packet after the start (or after a restart on a new clock)
        is the wall clock of that packet's media time."""
        return self._anchor is not None

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
        self._video = next((t.index for t in item.tracks if t.kind is MediaKind.VIDEO), None)
        self._held.clear()
        self._last_delta.clear()
        self._recent_deltas.clear()
        self._last_dts.clear()
        protection = self._protection
        if protection is not None and not protection.whole_segment:
            # The init segment names the key period: choose it now, for the
            # segments that follow.
            self._advance_period(restarted)
            self._period_chosen = True
            assert self._period is not None
            self._muxer = self._factory(item.tracks, self._period.period)
        else:
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
        elif self._anchor is None and self.stats.segments == 0:
            # Streams start a little before zero (AAC priming, B-frame decode
            # delay), by different amounts in different renditions, and fMP4
            # stores decode times unsigned: give the timeline headroom, the
            # same shift for every rendition of the stream.
            if self._origin.offset is None:
                self._origin.offset = max(Fraction(0), ORIGIN_HEADROOM - packet.dts_seconds)
            self._offset = self._origin.offset
        packet = self._shifted(packet)
        if packet.dts < 0:
            self.stats.negative_dropped += 1
            return
        last = self._last_dts.get(packet.track)
        if last is not None and packet.dts <= last:
            self.stats.out_of_order_dropped += 1
            return
        self._last_dts[packet.track] = packet.dts
        at = packet.dts_seconds
        if self._anchor is None:
            self._anchor = (now, at)
        drives = self._video is None or packet.track == self._video
        is_boundary = packet.keyframe if packet.track == self._video else self._video is None
        if self._open is None:
            if self._video is not None and not (packet.track == self._video and packet.keyframe):
                return  # wait for the first keyframe so that the first segment decodes
            self._open = self._new_open(at, self._take_discontinuity())
        else:
            # This packet's arrival fixes the duration of its track's held one.
            held = self._held.pop(packet.track, None)
            if held is not None:
                self._complete(held, packet.dts - held.dts)
            if (is_boundary and at - self._open.start >= self._target) or at - self._open.start >= self._max:
                self._cut(at)
            elif self._part_target is not None and drives:
                # What lies before ``at`` is now known exactly: split it if a
                # guessed frame duration was short. Audio never does this
                # while there is video: a rendition's audio runs ahead of its
                # video by the encoding delay, so frames before an audio
                # packet's time may still be on their way.
                self._split_parts(at)
                if self._part_due(packet, at):
                    self._flush_held_before(at)
                    self._close_part(at)
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
            recent = self._recent_deltas.setdefault(packet.track, collections.deque(maxlen=8))
            recent.append(duration)
        else:
            duration = self._last_delta.get(packet.track, 0)
        assert self._open is not None
        self._open.packets.append(
            Packet(packet.track, packet.pts, packet.dts, packet.time_base, packet.data, packet.keyframe, duration)
        )

    def _part_due(self, packet: Packet, at: Fraction) -> bool:
        """Whether ``packet`` must open a new part: including it would make
        the current part longer than the part target."""
        if self._part_target is None or self._open is None:
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
        own = (packet.duration or max(self._recent_deltas.get(packet.track, (0,)))) * packet.time_base
        return span + own > self._part_target

    def _flush_held_before(self, at: Fraction) -> None:
        """Complete the held packets that belong before media time ``at``
        (other tracks than the one whose packet just arrived: their next
        packet is not there yet, so their last duration stands in)."""
        for track, held in list(self._held.items()):
            if held.dts_seconds < at:
                self._complete(held, self._last_delta.get(track, 0))
                del self._held[track]

    def _split_parts(self, end: Fraction) -> None:
        """Close parts until what remains of the open segment before media
        time ``end`` fits in one part.

        Each cut is at the latest packet start that keeps the part within the
        target: a video frame's if that leaves the part at least
        :data:`MIN_PART_SHARE` of the target, else any packet's. The caller
        then closes the last part at ``end`` or keeps filling it.
        """
        assert self._open is not None
        target = self._part_target
        if target is None:
            return
        seg = self._open
        while end - seg.part_start > target:
            limit = seg.part_start + target
            starts = [
                (p.dts_seconds, self._video is None or p.track == self._video)
                for p in (*seg.packets, *self._held.values())
                if seg.part_start < p.dts_seconds <= limit
            ]
            if not starts:
                return  # one packet lasts longer than the target: it cannot be split
            frames = [at for at, drives in starts if drives]
            cut = max(frames) if frames else seg.part_start
            if cut - seg.part_start < target * MIN_PART_SHARE:
                cut = max(at for at, _ in starts)
            self._flush_held_before(cut)
            if not self._close_part(cut):
                return

    def _close_part(self, end: Fraction, everything: bool = False) -> bool:
        """Mux the packets that start before media time ``end`` (all of
        them with ``everything``) into one fragment, the part that ends at
        ``end``; the others wait for the next part. Returns whether there
        was a packet to mux."""
        assert self._open is not None and self._muxer is not None
        seg = self._open
        if everything:
            packets, seg.packets = seg.packets, []
        else:
            packets = [p for p in seg.packets if p.dts_seconds < end]
            seg.packets = [p for p in seg.packets if p.dts_seconds >= end]
        if not packets:
            return False
        packets.sort(key=lambda p: (p.dts_seconds, p.track))
        clear = self._muxer.media_segment(packets, self._fragments, seg.key)
        self._fragments += 1
        data = clear
        if seg.key is not None and self._protection is not None and self._protection.whole_segment:
            # A part is fetched and decrypted alone: its own padding, its
            # segment's IV. Only parts players see need it.
            if self._part_target is not None:
                data = encrypt_whole(seg.key.period.key.key, seg.key.iv, clear)
        first_video = next((p for p in packets if p.track == self._video), None)
        independent = first_video.keyframe if first_video is not None else True
        if self._part_target is not None:
            self._events.append(
                PartReady(
                    self._sequence,
                    len(seg.part_data),
                    data,
                    end - seg.part_start,
                    independent,
                    seg.discontinuity,
                    seg.start,
                    seg.key,
                )
            )
        seg.part_data.append(clear)
        seg.video_frames += sum(1 for p in packets if p.track == self._video)
        seg.packet_count += len(packets)
        seg.part_start = end
        return True

    def _cut(self, at: Fraction) -> None:
        """Close the open segment at media time ``at`` and open the next,
        with the packets that start at or after ``at`` (audio a little ahead
        of the keyframe)."""
        assert self._open is not None
        self._flush_held_before(at)
        self._split_parts(at)
        self._emit(at)
        carried = self._open.packets  # what starts at or after the cut
        self._open = self._new_open(at, False)
        self._open.packets = carried

    def _new_open(self, at: Fraction, discontinuity: bool) -> _Open:
        return _Open(start=at, pdt=self._pdt(at), discontinuity=discontinuity, key=self._key_for(discontinuity))

    def _advance_period(self, discontinuity: bool) -> None:
        """Move to the key period of the next segment (a new one every N
        segments and at a discontinuity); the provider is asked once per
        period."""
        assert self._protection is not None
        if self._rotation is None:
            self._rotation = self._protection.rotation()
        index = self._rotation.next_segment(discontinuity=discontinuity)
        if self._period is None or index != self._period.period.index:
            period = self._protection.periods(index)
            self._period = SegmentKey(period, period.key.iv)

    def _key_for(self, discontinuity: bool) -> SegmentKey | None:
        """The key period and IV of the segment about to open (number
        ``self._sequence``)."""
        protection = self._protection
        if protection is None:
            return None
        if self._period_chosen:
            self._period_chosen = False  # chosen with the init segment
        else:
            self._advance_period(discontinuity)
        assert self._period is not None
        period = self._period.period
        # Whole-segment AES-128 gets an IV per segment. Sample encryption
        # restarts its IV at every sample (SAMPLE-AES) or uses the period's
        # constant IV (cbcs), so a per-segment IV would add nothing there, and
        # a reader that decrypts packets after demuxing (ffmpeg) would apply
        # the next segment's IV to the last packet of a segment.
        iv = segment_iv(period.key.iv, self._sequence) if protection.whole_segment else period.key.iv
        self._period = SegmentKey(period, iv)
        return self._period

    def _close_open(self, final: bool) -> None:
        if self._open is None:
            return
        end = self._open.start
        for held in self._held.values():
            self._complete(held, self._last_delta.get(held.track, 0))
        self._held.clear()
        for p in self._open.packets:
            end = max(end, p.dts_seconds + p.duration * p.time_base)
        if self._open.packets or self._open.part_data:
            # The last packets often run on past the last video frame (audio),
            # or past a frame whose duration was guessed: split them too.
            self._split_parts(end)
            self._emit(end, everything=True)
        self._open = None

    def _emit(self, end: Fraction, everything: bool = False) -> None:
        """Close the open segment's last part at ``end`` and the segment with
        it; the packets that start at or after ``end`` stay in ``_open``
        unless ``everything``."""
        assert self._open is not None
        seg = self._open
        self._close_part(end, everything)
        data = b"".join(seg.part_data)
        if seg.key is not None and self._protection is not None and self._protection.whole_segment:
            data = encrypt_whole(seg.key.period.key.key, seg.key.iv, data)
        self._events.append(
            SegmentReady(
                sequence=self._sequence,
                data=data,
                duration=end - seg.start,
                program_date_time=seg.pdt,
                discontinuity=seg.discontinuity,
                init_version=self._init_version,
                start=seg.start,
                packet_count=seg.packet_count,
                video_frames=seg.video_frames,
                key=seg.key,
            )
        )
        self._sequence += 1
        self.stats.segments += 1
        self._end = end
