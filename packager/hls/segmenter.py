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
a part and its parent segment never disagree. A part holds the packets whose
decode time lies in its span. Parts are cut where a video frame starts (any
packet for audio-only streams): normally as soon as the next frame would not
fit, guessing that frame's duration from the recent ones; when a guess was
short, or where the part ends without a next frame (a segment cut, a
discontinuity, the end of the stream, whose audio often runs on past the last
frame), the packets not yet in a part are split again so that no part is
longer than the target (RFC 8216bis 4.4.4.9). Only a single packet longer than
the part target (a gap in the publisher's timestamps) makes a longer part.

Media times are compared as integers counted in a unit common to every
track's time base (the least common multiple of their denominators), with
each threshold rounded the way its comparison needs, so the per-packet path
does no :class:`~fractions.Fraction` arithmetic yet decides exactly as exact
Fractions would; events still report exact Fractions of a second.

A publisher that reconnects restarts its clock at zero; the segmenter shifts
the new timestamps to continue where the old ones ended and marks the next
segment as a discontinuity, so players keep going without a reload. A
restart whose clock continues (``StreamStarted.clock_continues``: new codec
parameters mid-stream) cuts and marks a discontinuity too, with a new
initialisation segment, but keeps the timeline.

With a :class:`~packager.hls.keys.SegmentProtection`, each segment gets a key
period (a new one every N segments and at every discontinuity) and an IV;
the muxer encrypts samples with them (SAMPLE-AES, ``cbcs``) or the segmenter
encrypts each muxed part and the whole segment (AES-128; see
:mod:`packager.hls.keys`). The key period is asked of the protection's
provider once per period, in the caller's thread.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from drm.model import KeyPeriod
from drm.rotation import KeyRotation
from engine.media import MediaKind, Packet, StreamEnded, StreamItem, StreamStarted, Track
from packager.errors import PackagerError
from packager.hls.keys import SegmentKey, SegmentProtection, encrypt_whole, segment_iv


class SegmentMuxer(Protocol):
    """A container writer for one variant: fMP4 or MPEG-TS."""

    extension: str

    def init_segment(self) -> bytes | None:
        """The initialisation segment, or ``None`` for formats without one."""
        ...

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        """One fragment of ``packets``; ``sequence`` counts fragments from 0.
        ``key`` is the segment's key period and IV when the stream is
        protected: muxers that encrypt samples (SAMPLE-AES, ``cbcs``) use it,
        others ignore it (whole-segment AES-128 is applied after muxing)."""
        ...


class MuxerFactory(Protocol):
    """Makes the muxer of a stream's tracks (again at every restart).

    ``period`` is given only to a stream whose samples are encrypted
    (SAMPLE-AES, ``cbcs``): the key period of the segments that follow, which
    a common-encryption init segment names (its default key ID, ``pssh``).
    """

    def __call__(self, tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> SegmentMuxer: ...


MIN_PART_SHARE = Fraction(85, 100)
"""Parts other than a segment's last should last at least this share of the
part target (RFC 8216bis 4.4.4.9): a split that must cut a part short prefers
a video frame's start, but not at the price of a part shorter than this."""

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
    key: SegmentKey | None = None


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
    key: SegmentKey | None = None


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
    """The parts' muxed bytes, before whole-segment encryption."""
    video_frames: int = 0
    packet_count: int = 0
    key: SegmentKey | None = None

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
        self._shift_ticks: dict[int, tuple[Fraction, int]] = {}  # by track: (time base, offset in its ticks)
        self._realign = False
        self._pending_discontinuity = False
        # Media times below are integers in units of 1/self._unit seconds.
        self._unit = 1
        self._factors: dict[Fraction, int] = {}  # units per tick of each time base
        self._track_factor: list[tuple[Fraction, int]] = []  # by track index: (time base, units per tick)
        self._target_units = 0  # the least whole number of units >= the target
        self._max_units = 0  # the same for the maximum
        self._part_units: int | None = None  # the most whole units <= the part target
        self._min_part_units = 0  # the least whole units >= MIN_PART_SHARE of the part target
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
    # Comparing ``d`` whole units with a threshold ``x`` seconds is exact when
    # the threshold is rounded the right way: ``d >= x`` iff ``d >= ceil(x)``,
    # ``d > x`` iff ``d > floor(x)``, ``d < x`` iff ``d < ceil(x)``.
    def _set_thresholds(self) -> None:
        unit = self._unit
        self._target_units = _ceil(self._target * unit)
        self._max_units = _ceil(self._max * unit)
        part = self._part_target
        if part is None:
            self._part_units = None
        else:
            self._part_units = (part.numerator * unit) // part.denominator
            self._min_part_units = _ceil(part * MIN_PART_SHARE * unit)

    def _rebase(self, denominators: list[int]) -> None:
        """Make the unit a multiple of every denominator in ``denominators``,
        rescaling the media times already held (exactly: the new unit is a
        multiple of the old one).

        Only called before the media times of the packet being processed
        are taken (:meth:`_start`, the first :meth:`_at` of :meth:`_packet`),
        so that no media time in a local variable goes stale."""
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
        at = self._at(packet)  # first: a new time base rebases the unit here
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
            since = at - self._open.start
            if (is_boundary and since >= self._target_units) or since >= self._max_units:
                self._cut(at)
            elif self._part_units is not None and drives:
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

    def _pdt(self, media_time: int) -> float:
        assert self._anchor is not None
        wall, media = self._anchor
        # int / int is correctly rounded, like float() of the exact Fraction.
        return wall + (media_time - media) / self._unit

    def _complete(self, packet: Packet, duration: int) -> None:
        if duration > 0:
            self._last_delta[packet.track] = duration
            recent = self._recent_deltas.get(packet.track)
            if recent is None:
                recent = self._recent_deltas[packet.track] = collections.deque(maxlen=8)
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

    def _flush_held_before(self, at: int) -> None:
        """Complete the held packets that belong before media time ``at``
        (other tracks than the one whose packet just arrived: their next
        packet is not there yet, so their last duration stands in)."""
        for track, held in list(self._held.items()):
            if self._at(held) < at:
                self._complete(held, self._last_delta.get(track, 0))
                del self._held[track]

    def _split_parts(self, end: int) -> None:
        """Close parts until what remains of the open segment before media
        time ``end`` fits in one part.

        Each cut is at the latest packet start that keeps the part within the
        target: a video frame's if that leaves the part at least
        :data:`MIN_PART_SHARE` of the target, else any packet's. The caller
        then closes the last part at ``end`` or keeps filling it.
        """
        assert self._open is not None
        target = self._part_units
        if target is None:
            return
        seg = self._open
        while end - seg.part_start > target:
            part_start = seg.part_start
            limit = part_start + target
            starts = [
                (at, self._video is None or p.track == self._video)
                for p in (*seg.packets, *self._held.values())
                if part_start < (at := self._at(p)) <= limit
            ]
            if not starts:
                return  # one packet lasts longer than the target: it cannot be split
            frames = [at for at, drives in starts if drives]
            cut = max(frames) if frames else part_start
            if cut - part_start < self._min_part_units:
                cut = max(at for at, _ in starts)
            self._flush_held_before(cut)
            if not self._close_part(cut):
                return

    def _close_part(self, end: int, everything: bool = False) -> bool:
        """Mux the packets that start before media time ``end`` (all of
        them with ``everything``) into one fragment, the part that ends at
        ``end``; the others wait for the next part. Returns whether there
        was a packet to mux."""
        assert self._open is not None and self._muxer is not None
        seg = self._open
        at = self._at
        if everything:
            packets, seg.packets = seg.packets, []
        else:
            packets = []
            later: list[Packet] = []
            for p in seg.packets:
                (packets if at(p) < end else later).append(p)
            seg.packets = later
        if not packets:
            return False
        packets.sort(key=lambda p: (at(p), p.track))
        clear = self._muxer.media_segment(packets, self._fragments, seg.key)
        self._fragments += 1
        data = clear
        if seg.key is not None and self._protection is not None and self._protection.whole_segment:
            # A part is fetched and decrypted alone: its own padding, its
            # segment's IV. Only parts players see need it.
            if self._part_target is not None:
                data = encrypt_whole(seg.key.period.key.key, seg.key.iv, clear)
        video = self._video
        first_video = next((p for p in packets if p.track == video), None)
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
                    seg.key,
                )
            )
        seg.part_data.append(clear)
        seg.video_frames += sum(1 for p in packets if p.track == video)
        seg.packet_count += len(packets)
        seg.part_start = end
        return True

    def _cut(self, at: int) -> None:
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

    def _new_open(self, at: int, discontinuity: bool) -> _Open:
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
            end = max(end, (p.dts + p.duration) * self._units_per_tick(p))
        if self._open.packets or self._open.part_data:
            # The last packets often run on past the last video frame (audio),
            # or past a frame whose duration was guessed: split them too.
            self._split_parts(end)
            self._emit(end, everything=True)
        self._open = None

    def _emit(self, end: int, everything: bool = False) -> None:
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
                duration=self._seconds(end - seg.start),
                program_date_time=seg.pdt,
                discontinuity=seg.discontinuity,
                init_version=self._init_version,
                start=self._seconds(seg.start),
                packet_count=seg.packet_count,
                video_frames=seg.video_frames,
                key=seg.key,
            )
        )
        self._sequence += 1
        self.stats.segments += 1
        self._end = end


def _ceil(value: Fraction) -> int:
    """The least integer at or above ``value``."""
    return -((-value.numerator) // value.denominator)
