"""One stream's transcode: decode once, filter once, scale and encode per rung.

:class:`StreamTranscoder` does no I/O: model packets in,
:class:`RenditionStarted` / :class:`RenditionPacket` events out, like a codec
context ("list in, list out, ``None`` flushes"). The live path runs it on a
worker thread (transcode/live.py); the file path calls it directly. Inside,
the caller's thread decodes, takes the keyframe decision and runs the frame
filter; each rung then scales and encodes on a thread of its own
(:mod:`transcode.fanout`) unless the ladder says ``parallel_rungs = false``.
A call returns the packets the rungs have finished so far; the rest follow
from later calls and the flush.

Every rendition has the same track layout: video at index 0 and, when the
source has audio, the shared AAC track at index 1. Within a re-encoded
rendition, the shared audio is held back until that rung's video has
reached the same time, so each rendition's packets come out interleaved by
time however far its encoder runs behind.

With a :class:`~transcode.keyframes.SegmentKeyframeGrid` (live), the
passthrough rendition is announced only once the grid knows whether the
source's keyframes are close enough for short segments; until then its
packets are held, and if they are not it is left out of the plan.

Once the passthrough rendition is sealed (``passthrough_switch``), it is
encoded at the source's size by one more rung lane, made at the switch and
run like the others (its own thread when the rungs have theirs), and its
audio is held back for its video like any re-encoded rendition's.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from engine.media import MediaKind, Packet, Track
from transcode.audio import AudioTranscoder
from transcode.errors import SourceError, TranscodeConfigError
from transcode.fanout import InlineLane, RungLane, ThreadedLane, threads_pay
from transcode.keyframes import GridMode, KeyframeGrid, SegmentKeyframeGrid
from transcode.ladder import (
    ENCODE_USES,
    EncodeUse,
    LadderConfig,
    LadderPlan,
    PlannedRung,
    RungConfig,
    SourceInfo,
    long_gop_reason,
    plan_ladder,
)
from transcode.video import RungEncoder, VideoDecoder, mark_frame

log = logging.getLogger(__name__)

FrameFilter = Callable[[VideoFrame], VideoFrame]
AudioFilter = Callable[[AudioFrame], AudioFrame]
PassthroughSwitch = Callable[[Packet], bool]
"""Whether the passthrough rendition is encoded, not copied, from this
source video packet on (see :meth:`StreamTranscoder.push`)."""
PASSTHROUGH_ENCODER = "copy"
MAX_PENDING = 1024
"""Packets held while the video size is still unknown (no width/height in
the track and no frame decoded yet)."""
MAX_AUDIO_HOLD = 1024
"""Audio packets a rendition holds back for its video (about 21 s of AAC at
48 kHz); past it the oldest go out anyway, so a stalled rung cannot grow
memory without end."""


@dataclass(frozen=True, slots=True)
class RenditionStarted:
    """A rendition's track set is known; ``encoder`` is the video encoder
    name (``copy`` for the passed-through source). With ``clock_continues``
    the rendition already runs and starts a new run here on the same clock
    (the passthrough rendition switched to an encoded picture: every
    rendition gets one at that moment, so their segments and
    discontinuities stay aligned)."""

    name: str
    tracks: tuple[Track, ...]
    encoder: str
    clock_continues: bool = False


@dataclass(frozen=True, slots=True)
class RenditionPacket:
    name: str
    packet: Packet


TranscodeEvent = RenditionStarted | RenditionPacket


@dataclass(slots=True)
class TranscodeStats:
    """Counters for /metrics and the stream status."""

    video_packets_in: int = 0
    audio_packets_in: int = 0
    frames_decoded: int = 0
    decode_errors: int = 0
    pending_dropped: int = 0
    frames_encoded: dict[str, int] = field(default_factory=dict)
    frames_rate_capped: dict[str, int] = field(default_factory=dict)
    audio_frames_encoded: int = 0


class StreamTranscoder:
    """Transcodes one stream along a ladder.

    Call :meth:`start` with the source's tracks, :meth:`push` for each packet
    in decode order, and :meth:`flush` at the end; each returns the events to
    publish, in order. ``emit_passthrough_video`` set to false leaves the
    copying of source video packets to the caller (the live path does it on
    the event loop so an overloaded transcode never delays the source
    rendition); the passthrough rendition's start event is still emitted.

    ``passthrough_switch`` is asked about each source video packet; once it
    says yes, the passthrough rendition stops being a copy and is encoded
    at the source's size from that packet's picture on, through the frame
    filter like every rung (a video effect switched on while live must reach
    it). That picture is forced to be a keyframe in every rung, and each
    rendition gets a ``RenditionStarted(clock_continues=True)`` just before
    its first packet from there, so all of them cut a segment there.
    """

    def __init__(
        self,
        ladder: LadderConfig,
        encoder: str,
        grid: KeyframeGrid,
        frame_filter: FrameFilter | None = None,
        emit_passthrough_video: bool = True,
        audio_filter: AudioFilter | None = None,
        use: EncodeUse | str = "live",
        decoder_hwaccel: str | None = None,
        passthrough_switch: PassthroughSwitch | None = None,
    ) -> None:
        if isinstance(use, str):
            if use not in ENCODE_USES:
                raise TranscodeConfigError(f"unknown encoder use {use!r}; known: {', '.join(ENCODE_USES)}")
            use = ENCODE_USES[use]
        self.use = use
        self.passthrough_switch = passthrough_switch
        self.decoder_hwaccel = decoder_hwaccel
        self._source_lane: RungLane | None = None
        """The sealed passthrough's encoder, once switched (not in
        :attr:`_lanes`: it takes only the pictures from the switch on)."""
        self._switch_from: int | None = None
        self._switch_keyframe_due = False
        self._restart_due: dict[str, RenditionStarted] = {}
        self._threaded = False
        self.on_output: Callable[[], None] | None = None
        """Called on a rung's thread when it has packets for :meth:`poll`
        (set by the live worker to wake itself; may be left unset)."""
        self.audio_filter = audio_filter
        self.ladder = ladder
        self.encoder = encoder
        self.grid = grid
        self.frame_filter = frame_filter
        self.emit_passthrough_video = emit_passthrough_video
        self.stats = TranscodeStats()
        self.plan: LadderPlan | None = None
        self.encoders: dict[str, str] = {}
        self._video: Track | None = None
        self._audio: Track | None = None
        self._decoder: VideoDecoder | None = None
        self._audio_tx: AudioTranscoder | None = None
        self._lanes: list[RungLane] = []
        self._audio_hold: dict[str, collections.deque[Packet]] = {}
        self._video_clock: dict[str, Fraction] = {}
        self._pending: collections.deque[tuple[Packet, bool]] = collections.deque()
        self._passthrough_waiting = False
        self._passthrough_held: collections.deque[Packet] = collections.deque()
        self._started = False

    # -- public ------------------------------------------------------------
    def start(self, tracks: tuple[Track, ...]) -> list[TranscodeEvent]:
        """Open decoders and the audio encoder; when the video size is known
        from the track, plan the ladder and start every rendition now."""
        if self._decoder is not None:
            raise SourceError("start() called twice; make a new StreamTranscoder per publish")
        self._video = next((t for t in tracks if t.kind is MediaKind.VIDEO), None)
        self._audio = next((t for t in tracks if t.kind is MediaKind.AUDIO), None)
        if self._video is None:
            raise SourceError("the source has no video track to transcode")
        self._decoder = VideoDecoder(self._video, self.decoder_hwaccel)
        if self._audio is not None:
            self._audio_tx = AudioTranscoder(self._audio, self.ladder, audio_filter=self.audio_filter)
        if self._video.width and self._video.height:
            return self._open(self._video.width, self._video.height)
        return []

    def push(self, packet: Packet) -> list[TranscodeEvent]:
        if self._decoder is None or self._video is None:
            raise SourceError("push() before start()")
        try:
            return self._push(packet)
        except BaseException:
            self.close()
            raise

    def flush(self) -> list[TranscodeEvent]:
        """Drain the decoders and encoders; call once at the end."""
        if self._decoder is None:
            return []
        try:
            return self._flush()
        except BaseException:
            self.close()
            raise

    def poll(self) -> list[TranscodeEvent]:
        """The packets the rungs have finished since the last call, without
        new input (see :attr:`on_output`)."""
        if self._decoder is None:
            return []
        events: list[TranscodeEvent] = []
        try:
            self._collect(events)
        except BaseException:
            self.close()
            raise
        return events

    def close(self) -> None:
        """Stop the rung threads without flushing (an error, or the stream
        is abandoned). :meth:`flush` ends them on its own."""
        for lane in self._all_lanes():
            lane.close()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def decoder_name(self) -> str:
        """``software`` or the hardware device decoding this stream."""
        return self._decoder.name if self._decoder is not None else "software"

    # -- internals ---------------------------------------------------------
    def _push(self, packet: Packet) -> list[TranscodeEvent]:
        assert self._decoder is not None and self._video is not None
        events: list[TranscodeEvent] = []
        if packet.track == self._video.index:
            self.stats.video_packets_in += 1
            if (
                self._switch_from is None
                and self.passthrough_switch is not None
                and self.plan is not None
                and self.plan.passthrough
                and self.passthrough_switch(packet)
            ):
                self._begin_switch(packet.pts)
            if self.emit_passthrough_video and (self.plan is None or self.plan.passthrough):
                self._emit_or_hold(packet, events, audio=False)
            for frame in self._decoder.decode(packet):
                events += self._frame(frame)
            self.stats.decode_errors = self._decoder.errors
        elif self._audio is not None and packet.track == self._audio.index and self._audio_tx is not None:
            self.stats.audio_packets_in += 1
            for out in self._audio_tx.push(packet):
                self._emit_or_hold(out, events, audio=True)
            self.stats.audio_frames_encoded = self._audio_tx.frames_encoded
        self._collect(events)
        return events

    def _flush(self) -> list[TranscodeEvent]:
        assert self._decoder is not None
        events: list[TranscodeEvent] = []
        for frame in self._decoder.decode(None):
            events += self._frame(frame)
        if self._passthrough_waiting:
            # The source ended before its keyframe interval was known:
            # nothing speaks against passing it through.
            self._publish_passthrough(events)
        if self._audio_tx is not None:
            for out in self._audio_tx.push(None):
                self._emit_or_hold(out, events, audio=True)
        for lane in self._all_lanes():
            self._emit_video(lane.encoder, lane.finish(), events)
            self._update_counts(lane.encoder)
        for name, held in self._audio_hold.items():
            events += [RenditionPacket(name, p) for p in held]
            held.clear()
        return events

    def _rung_output(self) -> None:
        callback = self.on_output
        if callback is not None:
            callback()

    def _all_lanes(self) -> list[RungLane]:
        if self._source_lane is None:
            return list(self._lanes)
        return [*self._lanes, self._source_lane]

    def _collect(self, events: list[TranscodeEvent]) -> None:
        """Append what every rung has encoded so far."""
        for lane in self._all_lanes():
            packets = lane.take()
            if packets:
                self._emit_video(lane.encoder, packets, events)
            self._update_counts(lane.encoder)

    def _emit_video(self, rung: RungEncoder, packets: list[Packet], events: list[TranscodeEvent]) -> None:
        """A rung's packets, each after the held audio that comes before it,
        with the rendition's pending restart (a sealed passthrough) placed
        just before its first packet from the switch on: the audio up to
        that picture stays in the run before it."""
        name = rung.rung.name
        held = self._audio_hold.get(name)
        for packet in packets:
            at = packet.dts_seconds
            while held and held[0].dts_seconds <= at:
                events.append(RenditionPacket(name, held.popleft()))
            due = self._restart_due.get(name)
            if due is not None and self._switch_from is not None and packet.pts >= self._switch_from:
                del self._restart_due[name]
                events.append(due)
            events.append(RenditionPacket(name, packet))
            self._video_clock[name] = at

    def _update_counts(self, rung: RungEncoder) -> None:
        self.stats.frames_encoded[rung.rung.name] = rung.frames_encoded
        self.stats.frames_rate_capped[rung.rung.name] = rung.frames_skipped

    def _open(self, width: int, height: int) -> list[TranscodeEvent]:
        assert self._video is not None
        source = SourceInfo(self._video.codec, width, height, self._video.frame_rate, self._video.bitrate)
        self.plan = plan_ladder(self.ladder, source)
        self._threaded = threads_pay(self.ladder.parallel_rungs)
        rungs = [self._rung_encoder(r) for r in self.plan.rungs]
        self._lanes = [self._lane(r) for r in rungs]
        self._audio_hold = {r.rung.name: collections.deque() for r in rungs}
        audio = (self._audio_tx.track,) if self._audio_tx is not None else ()
        events: list[TranscodeEvent] = []
        if self.plan.passthrough:
            if isinstance(self.grid, SegmentKeyframeGrid) and self.grid.mode is GridMode.UNDECIDED:
                self._passthrough_waiting = True
            else:
                self._publish_passthrough(events)
        for rung in rungs:
            events.append(RenditionStarted(rung.rung.name, (rung.track, *audio), self.encoder))
            self.encoders[rung.rung.name] = self.encoder
            self.stats.frames_encoded[rung.rung.name] = 0
            self.stats.frames_rate_capped[rung.rung.name] = 0
        self._started = True
        log.info(
            "transcode plan for %dx%d: %s (passthrough: %s%s)",
            width,
            height,
            ", ".join(f"{r.name}={r.width}x{r.height}" for r in self.plan.rungs),
            self.plan.passthrough_reason,
            "".join(f"; {name} left out: {why}" for name, why in self.plan.skipped),
        )
        pending, self._pending = self._pending, collections.deque()
        for packet, is_audio in pending:
            self._emit_or_hold(packet, events, is_audio)
        return events

    def _rung_encoder(self, rung: PlannedRung) -> RungEncoder:
        assert self._video is not None
        # With a thread per rung the rungs already scale in parallel: one
        # scaler thread each. Alone, a scaler may use every core (0: auto).
        scale_threads = 1 if self._threaded else 0
        return RungEncoder(rung, self.ladder, self.encoder, self._video.time_base, self.use, scale_threads)

    def _lane(self, rung: RungEncoder) -> RungLane:
        if self._threaded:
            return ThreadedLane(rung, name=f"rung:{rung.rung.name}", notify=self._rung_output)
        return InlineLane(rung)

    def _publish_passthrough(self, events: list[TranscodeEvent]) -> None:
        """Announce the passthrough rendition, then the packets held for it."""
        assert self._video is not None and self.plan is not None
        self._passthrough_waiting = False
        if isinstance(self.grid, SegmentKeyframeGrid):
            self.grid.pin_to_source()
        source = self.plan.source
        video = self._video.with_changes(index=0, width=source.width, height=source.height)
        audio = (self._audio_tx.track,) if self._audio_tx is not None else ()
        name = self.ladder.passthrough_name
        events.append(RenditionStarted(name, (video, *audio), PASSTHROUGH_ENCODER))
        self.encoders[name] = PASSTHROUGH_ENCODER
        held, self._passthrough_held = self._passthrough_held, collections.deque()
        events += [RenditionPacket(name, p) for p in held]

    def _settle_passthrough(self, events: list[TranscodeEvent]) -> None:
        """Once the grid has decided, publish the passthrough rendition or
        leave it out of the plan (its keyframes would not give short,
        aligned segments)."""
        assert isinstance(self.grid, SegmentKeyframeGrid) and self.plan is not None
        if self.grid.mode is GridMode.SOURCE:
            self._publish_passthrough(events)
            return
        reason = long_gop_reason(self.grid.target)
        self.plan = dataclasses.replace(self.plan, passthrough=False, passthrough_reason=reason)
        self._passthrough_waiting = False
        self._passthrough_held.clear()
        log.debug("rendition %s left out: %s", self.ladder.passthrough_name, reason)

    def _emit_or_hold(self, packet: Packet, events: list[TranscodeEvent], audio: bool) -> None:
        """Send a source-video (passthrough) or audio packet to the
        renditions that carry it, or hold it until they have started."""
        if self.plan is None:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self.stats.pending_dropped += 1
            self._pending.append((packet, audio))
            return
        waiting = self._passthrough_waiting
        if waiting and len(self._passthrough_held) >= MAX_PENDING:
            self._passthrough_held.popleft()
            self.stats.pending_dropped += 1
        if not audio:
            if waiting:
                self._passthrough_held.append(_reindex(packet, 0))
            elif self.plan.passthrough and self._switch_from is None:
                events.append(RenditionPacket(self.ladder.passthrough_name, _reindex(packet, 0)))
            return
        for name in self.plan.rendition_names:
            if waiting and name == self.ladder.passthrough_name:
                self._passthrough_held.append(packet)
                continue
            held = self._audio_hold.get(name)
            if held is None:
                events.append(RenditionPacket(name, packet))  # the passthrough: no encoder delay
                continue
            clock = self._video_clock.get(name)
            if not held and clock is not None and packet.dts_seconds <= clock:
                events.append(RenditionPacket(name, packet))
                continue
            held.append(packet)
            if len(held) > MAX_AUDIO_HOLD:
                events.append(RenditionPacket(name, held.popleft()))

    def _frame(self, frame: VideoFrame) -> list[TranscodeEvent]:
        assert self._video is not None and frame.pts is not None
        self.stats.frames_decoded += 1
        events: list[TranscodeEvent] = []
        if self.plan is None:
            events += self._open(frame.width, frame.height)
        # The boundary is decided here, once, before the frame fans out: every
        # rung forces its IDRs on the same frames.
        boundary = self.grid.is_boundary(frame.pts, self._video.time_base, bool(frame.key_frame))
        if self._passthrough_waiting and isinstance(self.grid, SegmentKeyframeGrid):
            if self.grid.mode is not GridMode.UNDECIDED:
                self._settle_passthrough(events)
        switching = self._switch_from is not None and frame.pts >= self._switch_from
        if switching and self._switch_keyframe_due:
            boundary = True
            self._switch_keyframe_due = False
        if self.frame_filter is not None:
            filtered = self.frame_filter(frame)
            if filtered.pts is None:
                filtered.pts = frame.pts
            frame = filtered
        mark_frame(frame, self._video.time_base, boundary)
        for lane in self._lanes:
            lane.submit(frame, boundary)
        if switching and self._source_lane is not None:
            self._source_lane.submit(frame, boundary)
        return events

    def _begin_switch(self, pts: int) -> None:
        """Encode the passthrough rendition from the picture at ``pts`` on,
        on a rung lane of its own; its audio is held for its video from
        here on, like a rung's."""
        assert self.plan is not None and self._video is not None
        source = self.plan.source
        width, height = max(2, source.width - source.width % 2), max(2, source.height - source.height % 2)
        name = self.ladder.passthrough_name
        config = RungConfig(
            name, max(16, height), _encoded_source_bitrate(self.ladder, source), max_frame_rate=None
        )
        encoder = self._rung_encoder(PlannedRung(config, width, height, source.frame_rate, None))
        self._source_lane = self._lane(encoder)
        self._audio_hold.setdefault(name, collections.deque())
        self._switch_from = pts
        self._switch_keyframe_due = True
        audio = (self._audio_tx.track,) if self._audio_tx is not None else ()
        self._restart_due = {
            lane.encoder.rung.name: RenditionStarted(
                lane.encoder.rung.name, (lane.encoder.track, *audio), self.encoder, True
            )
            for lane in self._lanes
        }
        self._restart_due[name] = RenditionStarted(name, (encoder.track, *audio), self.encoder, True)
        self.encoders[name] = self.encoder
        self.stats.frames_encoded[name] = 0
        self.stats.frames_rate_capped[name] = 0
        log.info("passthrough rendition %s: encoded at %dx%d from here on", name, width, height)


def _encoded_source_bitrate(ladder: LadderConfig, source: SourceInfo) -> int:
    """The bit rate for the source's picture once it is encoded rather than
    copied: the publisher's declared rate when known, else about 0.1 bit
    per pixel per frame; never above the passthrough limit."""
    rate = source.bitrate
    if not rate:
        fps = float(source.frame_rate) if source.frame_rate else 30.0
        rate = int(source.width * source.height * fps * 0.1)
    limit = ladder.passthrough_limits.max_bitrate
    if limit is not None:
        rate = min(rate, limit)
    return max(100_000, rate)


def _reindex(packet: Packet, track: int) -> Packet:
    if packet.track == track:
        return packet
    return Packet(track, packet.pts, packet.dts, packet.time_base, packet.data, packet.keyframe, packet.duration)
