"""One stream's transcode: decode once, filter once, scale and encode per rung.

:class:`StreamTranscoder` is synchronous and does no I/O: model packets in,
:class:`RenditionStarted` / :class:`RenditionPacket` events out, like a codec
context ("list in, list out, ``None`` flushes"). The live path runs it on a
worker thread (transcode/live.py); the file path calls it directly.

Every rendition has the same track layout: video at index 0 and, when the
source has audio, the shared AAC track at index 1.

With a :class:`~transcode.keyframes.SegmentKeyframeGrid` (live), the
passthrough rendition is announced only once the grid knows whether the
source's keyframes are close enough for short segments; until then its
packets are held, and if they are not it is left out of the plan.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from engine.media import MediaKind, Packet, Track
from transcode.audio import AudioTranscoder
from transcode.errors import SourceError
from transcode.keyframes import GridMode, KeyframeGrid, SegmentKeyframeGrid
from transcode.ladder import (
    LadderConfig,
    LadderPlan,
    PlannedRung,
    RungConfig,
    SourceInfo,
    long_gop_reason,
    plan_ladder,
)
from transcode.video import RungEncoder, VideoDecoder

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
        decoder_hwaccel: str | None = None,
        passthrough_switch: PassthroughSwitch | None = None,
    ) -> None:
        self.passthrough_switch = passthrough_switch
        self._source_rung: RungEncoder | None = None
        self._switch_from: int | None = None
        self._switch_keyframe_due = False
        self._restart_due: dict[str, RenditionStarted] = {}
        self.audio_filter = audio_filter
        self.ladder = ladder
        self.encoder = encoder
        self.grid = grid
        self.frame_filter = frame_filter
        self.emit_passthrough_video = emit_passthrough_video
        self.decoder_hwaccel = decoder_hwaccel
        self.stats = TranscodeStats()
        self.plan: LadderPlan | None = None
        self.encoders: dict[str, str] = {}
        self._video: Track | None = None
        self._audio: Track | None = None
        self._decoder: VideoDecoder | None = None
        self._audio_tx: AudioTranscoder | None = None
        self._rungs: list[RungEncoder] = []
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
        return events

    def flush(self) -> list[TranscodeEvent]:
        """Drain the decoders and encoders; call once at the end."""
        events: list[TranscodeEvent] = []
        if self._decoder is None:
            return events
        for frame in self._decoder.decode(None):
            events += self._frame(frame)
        if self._passthrough_waiting:
            # The source ended before its keyframe interval was known:
            # nothing speaks against passing it through.
            self._publish_passthrough(events)
        for rung in self._rungs:
            self._emit_rung(rung.rung.name, rung.flush(), events)
        if self._source_rung is not None:
            self._emit_rung(self.ladder.passthrough_name, self._source_rung.flush(), events)
        if self._audio_tx is not None:
            for out in self._audio_tx.push(None):
                self._emit_or_hold(out, events, audio=True)
        return events

    @property
    def started(self) -> bool:
        return self._started

    @property
    def decoder_name(self) -> str:
        """``software`` or the hardware device decoding this stream."""
        return self._decoder.name if self._decoder is not None else "software"

    # -- internals ---------------------------------------------------------
    def _open(self, width: int, height: int) -> list[TranscodeEvent]:
        assert self._video is not None
        source = SourceInfo(self._video.codec, width, height, self._video.frame_rate, self._video.bitrate)
        self.plan = plan_ladder(self.ladder, source)
        self._rungs = [RungEncoder(r, self.ladder, self.encoder, self._video.time_base) for r in self.plan.rungs]
        audio = (self._audio_tx.track,) if self._audio_tx is not None else ()
        events: list[TranscodeEvent] = []
        if self.plan.passthrough:
            if isinstance(self.grid, SegmentKeyframeGrid) and self.grid.mode is GridMode.UNDECIDED:
                self._passthrough_waiting = True
            else:
                self._publish_passthrough(events)
        for rung in self._rungs:
            events.append(RenditionStarted(rung.rung.name, (rung.track, *audio), self.encoder))
            self.encoders[rung.rung.name] = self.encoder
            self.stats.frames_encoded[rung.rung.name] = 0
            self.stats.frames_rate_capped[rung.rung.name] = 0
        self._started = True
        log.info(
            "transcode plan for %dx%d: %s (passthrough: %s)",
            width,
            height,
            ", ".join(f"{r.name}={r.width}x{r.height}" for r in self.plan.rungs),
            self.plan.passthrough_reason,
        )
        pending, self._pending = self._pending, collections.deque()
        for packet, is_audio in pending:
            self._emit_or_hold(packet, events, is_audio)
        return events

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
            else:
                events.append(RenditionPacket(name, packet))

    def _frame(self, frame: VideoFrame) -> list[TranscodeEvent]:
        assert self._video is not None and frame.pts is not None
        self.stats.frames_decoded += 1
        events: list[TranscodeEvent] = []
        if self.plan is None:
            events += self._open(frame.width, frame.height)
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
        for rung in self._rungs:
            self._emit_rung(rung.rung.name, rung.encode(frame, boundary), events)
            self.stats.frames_encoded[rung.rung.name] = rung.frames_encoded
            self.stats.frames_rate_capped[rung.rung.name] = rung.frames_skipped
        if switching and self._source_rung is not None:
            name = self.ladder.passthrough_name
            self._emit_rung(name, self._source_rung.encode(frame, boundary), events)
            self.stats.frames_encoded[name] = self._source_rung.frames_encoded
        return events

    def _emit_rung(self, name: str, packets: list[Packet], events: list[TranscodeEvent]) -> None:
        """Events for one rendition's encoded packets, with its pending
        restart placed just before its first packet from the switch on."""
        for packet in packets:
            due = self._restart_due.get(name)
            if due is not None and self._switch_from is not None and packet.pts >= self._switch_from:
                del self._restart_due[name]
                events.append(due)
            events.append(RenditionPacket(name, packet))

    def _begin_switch(self, pts: int) -> None:
        """Encode the passthrough rendition from the picture at ``pts`` on."""
        assert self.plan is not None and self._video is not None
        source = self.plan.source
        width, height = max(2, source.width - source.width % 2), max(2, source.height - source.height % 2)
        name = self.ladder.passthrough_name
        config = RungConfig(
            name, max(16, height), _encoded_source_bitrate(self.ladder, source), max_frame_rate=None
        )
        self._source_rung = RungEncoder(
            PlannedRung(config, width, height, source.frame_rate, None), self.ladder, self.encoder,
            self._video.time_base,
        )
        self._switch_from = pts
        self._switch_keyframe_due = True
        audio = (self._audio_tx.track,) if self._audio_tx is not None else ()
        self._restart_due = {
            rung.rung.name: RenditionStarted(rung.rung.name, (rung.track, *audio), self.encoder, True)
            for rung in self._rungs
        }
        self._restart_due[name] = RenditionStarted(name, (self._source_rung.track, *audio), self.encoder, True)
        self.encoders[name] = self.encoder
        self.stats.frames_encoded[name] = 0
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
