"""Live transcode: one source stream in, each rendition published back.

:class:`LiveTranscoder` subscribes to ``source`` in the registry, feeds a
:class:`TranscodeWorker` thread and publishes each rendition as the stream
``RenditionId(source, rung)`` (a rendition is a stream too, linked to its
source by that id), so the packager treats the source and every rung alike. The passed-through source rendition copies
video packets on the event loop, straight from the subscription, so an
overloaded encoder never delays or drops the source's own video; its audio
is the shared AAC track that every rendition carries.

Keyframes: with a ``segment_target`` (the HLS target duration), the rungs
follow the source's keyframes while they come at least that often, and place
their own on the target grid otherwise (see
:class:`~transcode.keyframes.SegmentKeyframeGrid`). The passthrough rendition
is published only once that is known (the source's first two keyframe
intervals, at most two targets after the first keyframe), and is left out of the ladder
when the rungs place their own keyframes: its segments would be as long as
the publisher's keyframe interval and would not line up with the rungs'.
The decision holds for the whole publish: a source whose keyframes later
come further apart keeps its passthrough, and the rungs keep its keyframes.

A copy cannot carry effects drawn on decoded pictures. When a video effect
is switched on while live, :meth:`LiveTranscoder.seal_passthrough` makes the
passthrough rendition an encoded one at the source's size from the next
source keyframe on (the copy stops exactly before that keyframe, the
encoded picture starts on it), and it stays encoded for the rest of the
broadcast, reconnects included: switching an effect off never brings the
copied picture back. Every rendition restarts on the same clock at that
keyframe, so the packager writes a new initialisation segment and an
``EXT-X-DISCONTINUITY`` at the same moment in each of them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from dataclasses import dataclass, field
from fractions import Fraction

from engine.media import MediaKind, Packet, RenditionId, StreamEnded, StreamStarted
from engine.registry import Publisher, StreamRegistry, Subscription
from transcode.config import SOFTWARE_DECODER
from transcode.core import (
    PASSTHROUGH_ENCODER,
    AudioFilter,
    FrameFilter,
    RenditionPacket,
    RenditionStarted,
    StreamTranscoder,
    TranscodeEvent,
    TranscodeStats,
)
from transcode.encoders import EncoderProbe
from transcode.errors import SourceError, TranscodeConfigError
from transcode.keyframes import GridMode, KeyframeGrid, SegmentKeyframeGrid, SourceKeyframeGrid
from transcode.ladder import LadderConfig, LadderPlan
from transcode.worker import DropStats, TranscodeWorker

log = logging.getLogger(__name__)

PASSTHROUGH_HOLD = 1024
"""Source video packets held while the passthrough rendition is starting."""


@dataclass(slots=True)
class LiveStatus:
    """What the stream status and /metrics show about one live transcode."""

    source: str
    ladder: str
    renditions: dict[str, str] = field(default_factory=dict)
    """Rendition stream name -> video encoder (``copy`` for passthrough)."""
    drops: DropStats = field(default_factory=DropStats)
    transcode: TranscodeStats | None = None
    queue_depth: int = 0
    passthrough_reason: str = ""
    decoder: str = SOFTWARE_DECODER
    """The video decoder in use: ``software`` or a device type (``cuda``)."""
    encoder: str = ""
    keyframes: str = GridMode.SOURCE.value
    """Where the rungs' keyframes come from: ``source``, ``own`` (the
    segment-target grid) or ``undecided`` (first keyframe intervals not seen yet)."""


class PassthroughSeal:
    """Where the passthrough rendition stops being a copy: the publish
    (counted from 1) and the decode time of the source keyframe. Set once on
    the event loop, read by the transcode thread; later publishes of the
    same broadcast are covered from their start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: tuple[int, int] | None = None

    @property
    def sealed(self) -> bool:
        with self._lock:
            return self._at is not None

    def seal(self, publish: int, dts: int) -> None:
        with self._lock:
            if self._at is None:
                self._at = (publish, dts)

    def covers(self, publish: int, dts: int) -> bool:
        with self._lock:
            at = self._at
        return at is not None and (publish > at[0] or (publish == at[0] and dts >= at[1]))


class LiveTranscoder:
    """Transcodes the live stream ``source_name`` along ``ladder``.

    Await :meth:`run`; it returns when the source ends or :meth:`stop` is
    called, and raises the worker's error if the transcode failed. ``probe``
    is the start-up encoder probe (see :func:`~transcode.encoders.probe_encoders`).
    """

    def __init__(
        self,
        registry: StreamRegistry,
        source_name: str,
        ladder: LadderConfig,
        probe: EncoderProbe,
        encoder: str = "auto",
        frame_filter: FrameFilter | None = None,
        audio_filter: AudioFilter | None = None,
        queue_size: int = 256,
        subscription_size: int = 2048,
        segment_target: Fraction | None = None,
        decoder: str = SOFTWARE_DECODER,
    ) -> None:
        self.registry = registry
        self.source_name = source_name
        self.ladder = ladder
        self.encoder = probe.choose(encoder)
        self.decoder = decoder
        """Chosen once at start-up (:meth:`transcode.decoders.DecoderProbe.choose`)."""
        self.segment_target = segment_target
        self.frame_filter = frame_filter
        self.audio_filter = audio_filter
        self._queue_size = queue_size
        self._subscription_size = subscription_size
        self._publishers: dict[str, Publisher] = {}
        self._sub: Subscription | None = None
        self._worker: TranscodeWorker | None = None
        self._done: asyncio.Future[BaseException | None] | None = None
        self._video_index: int | None = None
        self._passthrough: Publisher | None = None
        self._passthrough_synced = False
        self._hold: collections.deque[Packet] = collections.deque(maxlen=PASSTHROUGH_HOLD)
        self._renditions: dict[str, str] = {}
        self._previous_tx: StreamTranscoder | None = None
        self._left_out = False
        self._seal = PassthroughSeal()
        self._seal_requested = False
        self._publishes = 0  # publishes read on the event loop
        self._transcoders_made = 0  # the same count, on the transcode thread

    def seal_passthrough(self, reason: str) -> None:
        """Encode the passthrough rendition from the next source keyframe
        on, for the rest of this broadcast (a video effect is on)."""
        if not self._seal_requested:
            log.info("stream %s: the source rendition is encoded from the next keyframe on (%s)",
                     self.source_name, reason)
        self._seal_requested = True

    @property
    def passthrough_sealed(self) -> bool:
        return self._seal.sealed

    def rendition_stream(self, name: str) -> RenditionId:
        return RenditionId(self.source_name, name)

    @property
    def status(self) -> LiveStatus:
        worker = self._worker
        tx = worker.transcoder if worker is not None else None
        plan = tx.plan if tx is not None else None
        grid = tx.grid if tx is not None else None
        decoder = tx.decoder_name if tx is not None else self.decoder
        return LiveStatus(
            self.source_name,
            self.ladder.name,
            dict(self._renditions),
            worker.policy.stats if worker is not None else DropStats(),
            tx.stats if tx is not None else None,
            worker.depth if worker is not None else 0,
            self._passthrough_reason(plan, grid),
            decoder,
            self.encoder,
            grid.mode.value if isinstance(grid, SegmentKeyframeGrid) else GridMode.SOURCE.value,
        )

    def _passthrough_reason(self, plan: LadderPlan | None, grid: KeyframeGrid | None) -> str:
        if plan is not None and plan.passthrough and self._seal.sealed:
            return "encoded since a video effect was switched on"
        return _passthrough_reason(plan, grid)

    async def run(self) -> None:
        stream = self.registry.get(self.source_name)
        if stream is None:
            raise TranscodeConfigError(f"no stream named {self.source_name!r} to transcode")
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        done = self._done

        def settle(error: BaseException | None) -> None:
            if not done.done():
                done.set_result(error)

        def on_done(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, error)

        def on_emit(events: list[TranscodeEvent]) -> None:
            loop.call_soon_threadsafe(self._publish, events)

        self._worker = TranscodeWorker(
            self._make_transcoder, on_emit, on_done, self._queue_size, name=f"transcode:{self.source_name}"
        )
        self._sub = stream.subscribe(f"transcode:{self.ladder.name}", maxsize=self._subscription_size, replay_gop=True)
        self._worker.start()
        reader = asyncio.ensure_future(self._read(self._sub, self._worker))

        def on_reader_done(task: asyncio.Future[None]) -> None:
            if not task.cancelled() and task.exception() is not None and not done.done():
                done.set_result(task.exception())

        reader.add_done_callback(on_reader_done)
        try:
            error = await done
        finally:
            reader.cancel()
            self._sub.close()
            self._worker.stop()
            await asyncio.to_thread(self._worker.join)
        # Packets the worker emitted before it ended are queued on the loop
        # ahead of us; let them run before the renditions end.
        await asyncio.sleep(0)
        self._end_renditions("source ended" if error is None else f"transcode failed: {error}")
        if error is not None:
            raise error

    def stop(self) -> None:
        """End the transcode: the worker flushes, the renditions end."""
        if self._worker is not None:
            self._worker.stop()

    # -- internals ---------------------------------------------------------
    def _make_transcoder(self) -> StreamTranscoder:
        # Called on the transcode thread once per StreamStarted, in the
        # order _read saw them: this count names the same publish as
        # self._publishes did there.
        self._transcoders_made += 1
        publish, seal = self._transcoders_made, self._seal
        grid: KeyframeGrid = (
            SourceKeyframeGrid() if self.segment_target is None else SegmentKeyframeGrid(self.segment_target)
        )
        return StreamTranscoder(
            self.ladder,
            self.encoder,
            grid,
            frame_filter=self.frame_filter,
            audio_filter=self.audio_filter,
            emit_passthrough_video=False,
            decoder_hwaccel=None if self.decoder == SOFTWARE_DECODER else self.decoder,
            passthrough_switch=lambda packet: seal.covers(publish, packet.dts),
        )

    def _passthrough_possible(self) -> bool:
        """False once this publish's plan has no passthrough (read from the
        worker: the transcoder and its plan are replaced whole, never
        changed in place). The previous publish's transcoder, still in place
        until the worker takes the new publish's start, does not count."""
        worker = self._worker
        tx = worker.transcoder if worker is not None else None
        if tx is None or tx is self._previous_tx:
            return True
        return tx.plan is None or tx.plan.passthrough

    async def _read(self, sub: Subscription, worker: TranscodeWorker) -> None:
        async for item in sub:
            if isinstance(item, StreamStarted):
                video = next((t for t in item.tracks if t.kind is MediaKind.VIDEO), None)
                if video is None:
                    raise SourceError(f"stream {self.source_name} has no video to transcode")
                self._video_index = video.index
                self._publishes += 1
                self._passthrough = None
                self._passthrough_synced = False
                self._hold.clear()
                self._previous_tx = worker.transcoder
                self._left_out = False
            elif isinstance(item, Packet) and item.track == self._video_index:
                self._copy_source_video(item)
            worker.offer(item)
            if isinstance(item, StreamEnded):
                return
        worker.stop()

    def _copy_source_video(self, packet: Packet) -> None:
        if self._seal_requested and packet.keyframe and not self._seal.sealed:
            # Sealed before this keyframe reaches the transcode thread: it
            # encodes the passthrough from this very picture on.
            self._seal.seal(self._publishes, packet.dts)
        if self._seal.covers(self._publishes, packet.dts):
            return
        if self._passthrough is None:
            if self._passthrough_possible():
                self._hold.append(packet)
            elif not self._left_out:
                self._passthrough_left_out()
            return
        if not self._passthrough_synced:
            if not packet.keyframe:
                return
            self._passthrough_synced = True
        self._passthrough.write(
            Packet(0, packet.pts, packet.dts, packet.time_base, packet.data, packet.keyframe, packet.duration)
        )

    def _passthrough_left_out(self) -> None:
        """This publish has no passthrough: say why, stop holding source
        video for it, and end the previous publish's passthrough rendition
        if any."""
        self._left_out = True
        self._hold.clear()
        worker = self._worker
        tx = worker.transcoder if worker is not None else None
        reason = tx.plan.passthrough_reason if tx is not None and tx.plan is not None else ""
        log.info("stream %s: no %s rendition: %s", self.source_name, self.ladder.passthrough_name, reason)
        old = self._publishers.pop(self.ladder.passthrough_name, None)
        if old is not None:
            old.kick("the source restarted with keyframes too far apart to pass it through")
            self._renditions.pop(str(self.rendition_stream(self.ladder.passthrough_name)), None)

    def _publish(self, events: list[TranscodeEvent]) -> None:
        i = 0
        while i < len(events):
            event = events[i]
            i += 1
            if isinstance(event, RenditionPacket):
                pub = self._publishers.get(event.name)
                if pub is not None:
                    pub.write(event.packet)
                continue
            # A passthrough announced after its start was held back comes
            # with the audio held for it: written with the held source
            # video in timestamp order, so its first segment has both.
            held: list[Packet] = []
            if event.encoder == PASSTHROUGH_ENCODER:
                while i < len(events):
                    nxt = events[i]
                    if not (isinstance(nxt, RenditionPacket) and nxt.name == event.name):
                        break
                    held.append(nxt.packet)
                    i += 1
            self._start_rendition(event, held)
        if self._passthrough is None and not self._left_out and not self._passthrough_possible():
            self._passthrough_left_out()

    def _start_rendition(self, event: RenditionStarted, held_audio: list[Packet]) -> None:
        stream_name = self.rendition_stream(event.name)
        running = self._publishers.get(event.name)
        if event.clock_continues and running is not None:
            running.restart(event.tracks)
            self._renditions[str(stream_name)] = event.encoder
            if running is self._passthrough and event.encoder != PASSTHROUGH_ENCODER:
                self._passthrough = None
            return
        old = self._publishers.pop(event.name, None)
        if old is not None:
            # A new publish of the source: end this publish of the rendition
            # so that its consumers see a discontinuity when it restarts.
            old.close("source restarted")
        pub = self.registry.claim(stream_name)
        pub.start(event.tracks)
        self._publishers[event.name] = pub
        self._renditions[str(stream_name)] = event.encoder
        if event.encoder == PASSTHROUGH_ENCODER:
            self._passthrough = pub
            merged = [(p.dts * p.time_base, True, p) for p in self._hold]
            merged += [(p.dts * p.time_base, False, p) for p in held_audio]
            self._hold.clear()
            for _, is_video, packet in sorted(merged, key=lambda m: m[0]):
                if is_video:
                    self._copy_source_video(packet)
                else:
                    pub.write(packet)

    def _end_renditions(self, reason: str) -> None:
        for pub in self._publishers.values():
            pub.kick(reason)
        self._publishers.clear()
        self._passthrough = None


def _passthrough_reason(plan: LadderPlan | None, grid: KeyframeGrid | None) -> str:
    if plan is None:
        return ""
    if plan.passthrough and isinstance(grid, SegmentKeyframeGrid) and grid.mode is GridMode.UNDECIDED:
        return "waiting for the source's first keyframe intervals"
    return plan.passthrough_reason
