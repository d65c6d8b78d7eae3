"""Live transcode: one source stream in, each rendition published back.

:class:`LiveTranscoder` subscribes to ``source`` in the registry, feeds a
:class:`TranscodeWorker` thread and publishes each rendition as the stream
``RenditionId(source, rung)`` (a rendition is a stream too, linked to its
source by that id), so the packager treats the source and every rung alike. The passed-through source rendition copies
video packets on the event loop, straight from the subscription, so an
overloaded encoder never delays or drops the source's own video; its audio
is the shared AAC track that every rendition carries.

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

from engine.media import MediaKind, Packet, RenditionId, StreamEnded, StreamStarted
from engine.registry import Publisher, StreamRegistry, Subscription
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
from transcode.keyframes import SourceKeyframeGrid
from transcode.ladder import LadderConfig
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
    ) -> None:
        self.registry = registry
        self.source_name = source_name
        self.ladder = ladder
        self.encoder = probe.choose(encoder)
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
        return LiveStatus(
            self.source_name,
            self.ladder.name,
            dict(self._renditions),
            worker.policy.stats if worker is not None else DropStats(),
            tx.stats if tx is not None else None,
            worker.depth if worker is not None else 0,
            self._passthrough_reason(tx),
        )

    def _passthrough_reason(self, tx: StreamTranscoder | None) -> str:
        if tx is None or tx.plan is None:
            return ""
        if tx.plan.passthrough and self._seal.sealed:
            return "encoded since a video effect was switched on"
        return tx.plan.passthrough_reason

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
        return StreamTranscoder(
            self.ladder,
            self.encoder,
            SourceKeyframeGrid(),
            frame_filter=self.frame_filter,
            audio_filter=self.audio_filter,
            emit_passthrough_video=False,
            passthrough_switch=lambda packet: seal.covers(publish, packet.dts),
        )

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
            self._hold.append(packet)
            return
        if not self._passthrough_synced:
            if not packet.keyframe:
                return
            self._passthrough_synced = True
        self._passthrough.write(
            Packet(0, packet.pts, packet.dts, packet.time_base, packet.data, packet.keyframe, packet.duration)
        )

    def _publish(self, events: list[TranscodeEvent]) -> None:
        for event in events:
            if isinstance(event, RenditionPacket):
                pub = self._publishers.get(event.name)
                if pub is not None:
                    pub.write(event.packet)
            else:
                self._start_rendition(event)

    def _start_rendition(self, event: RenditionStarted) -> None:
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
            held = list(self._hold)
            self._hold.clear()
            for packet in held:
                self._copy_source_video(packet)

    def _end_renditions(self, reason: str) -> None:
        for pub in self._publishers.values():
            pub.kick(reason)
        self._publishers.clear()
        self._passthrough = None
