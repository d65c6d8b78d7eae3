"""The live HLS packager: reads streams from the registry, writes HLS.

:class:`HlsService` attaches one task per stream when the registry creates
it. Each task reads the stream through a bounded subscription and hands what
it reads to the stream's ordered job queue, where the sans-I/O
:class:`Segmenter` cuts and muxes it and :class:`StreamOutput` writes the
files; the event loop only moves packets and publishes playlists.

Waking a worker thread, or even the stream's task, costs far more than
segmenting a packet, so packets wait in the subscription until one would
close a part or a segment: a second segmenter with a muxer that writes
nothing (:class:`_CutWatch`) is fed the same items as the subscription takes
them and wakes the task when it cuts. Its decisions are the real
segmenter's, since they depend on the packets alone, never on the bytes
muxed, so parts and segments leave no later than when every packet was
handed over at once. A slow
disk never slows the publisher or another stream: its stream's queue
backs up to a bound, then that stream's subscription loses packets, counted,
and resumes on the next keyframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

from drm.model import KeyPeriod, Protection
from engine.media import MediaKind, Packet, StreamEnded, StreamItem, StreamStarted, Track
from engine.registry import LiveStream, StreamRegistry, Subscription
from packager.errors import PackagerError
from packager.hls.config import HlsConfig
from packager.hls.disk import Disk, LocalDisk, SerialQueue, call_on_loop, drained
from packager.hls.keys import ProtectionError, SegmentKey, SegmentProtection
from packager.hls.muxers import check_protection, muxer_factory
from packager.hls.output import SegmentSink, StreamOutput
from packager.hls.segmenter import MuxerFactory, Segmenter

log = logging.getLogger(__name__)

SOURCE_VARIANT = "src"
FLUSH_TIMEOUT_S = 30.0
"""How long a stream's task waits for its last files when it stops."""
MAX_HELD = 64
"""Most packets a stream's subscription holds before it wakes the task,
whether or not they close a part or a segment (streams without parts, or a
stream that declared video and sends only audio, still move along)."""


class _DecisionsOnly:
    """A muxer that writes nothing, for :class:`_CutWatch`'s segmenter."""

    extension = ""

    def __init__(self, tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> None:
        pass

    def init_segment(self) -> bytes | None:
        return None

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        return b""


class _CutWatch:
    """The wake rule of a stream's HLS subscription: a copy of its segmenter
    that muxes nothing, fed every item the subscription takes, says when the
    real one will produce something (a new track set, a part, a segment, the
    end).

    The real segmenter also anchors program date times on the wall clock of
    the job that brings the packet that sets the anchor; that job leaves
    with the next video packet, as every job once did.
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self._segmenter = segmenter
        self._video: int | None = None
        self._anchor_due = False

    def __call__(self, item: StreamItem) -> bool:
        segmenter = self._segmenter
        anchored = segmenter.anchored
        segmenter.feed(item, 0.0)
        if isinstance(item, StreamStarted):
            self._video = next((t.index for t in item.tracks if t.kind is MediaKind.VIDEO), None)
        if segmenter.anchored and not anchored:
            self._anchor_due = True
        if segmenter.events():
            return True
        if self._anchor_due and isinstance(item, Packet) and self._video in (None, item.track):
            self._anchor_due = False
            return True
        return False


SinkFactory = Callable[[str, "SegmentProtection | None"], "SegmentSink | None"]
"""A source stream's name and encryption in, another consumer of its
written segments out (the recorder), or ``None``. Called on the event loop
when the stream's output is made."""

ProtectionPlans = Callable[[str], "SegmentProtection | None"]
"""A source stream's name in, how its segments are encrypted out (``None``:
clear). Called on the event loop when the stream starts: it must not block
(key periods are fetched later, in the stream's job queue)."""


class HlsService:
    """Every stream's HLS output under ``root``.

    A rendition (a stream whose :attr:`~engine.registry.LiveStream.rendition`
    is set; the transcoder publishes them) becomes the variant named by its
    rung in its source's output.
    With ``package_source`` off, the source itself is not a variant: the
    transcoder's renditions (its passed-through copy included) are.

    Ended streams stay readable (with ``EXT-X-ENDLIST``) for
    ``ended_retention_s`` seconds, then their files are removed.

    Files go through ``disk`` (the local file system unless given), from a
    pool of ``config.writer_threads`` threads; each stream's jobs run in order, one
    at a time, and at most ``fanout_buffer`` of them wait before the stream's
    task stops reading (and its subscription starts dropping).

    ``protection`` decides each source stream's encryption when it starts;
    its renditions are encrypted the same way. A stream whose protection
    cannot be applied is not packaged at all (never served clear).
    """

    def __init__(
        self,
        config: HlsConfig,
        root: Path,
        registry: StreamRegistry,
        fanout_buffer: int = 1024,
        ended_retention_s: float = 600.0,
        package_source: bool = True,
        disk: Disk | None = None,
        protection: ProtectionPlans | None = None,
        sinks: SinkFactory | None = None,
    ) -> None:
        self._sinks = sinks
        self.package_source = package_source
        self._protection = protection
        self.disk: Disk = disk if disk is not None else LocalDisk()
        self._pool = ThreadPoolExecutor(max_workers=config.writer_threads, thread_name_prefix="hls-writer")
        # One queue per stream name, kept while an output of that name
        # exists or its removal is pending, so that a name published again
        # never races the removal of its previous folder.
        self._queues: dict[str, SerialQueue] = {}
        self.config = config
        self.root = root
        self.registry = registry
        self.fanout_buffer = fanout_buffer
        self.ended_retention_s = ended_retention_s
        self.outputs: dict[str, StreamOutput] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self.segmenters: dict[str, Segmenter] = {}
        root.mkdir(parents=True, exist_ok=True)
        registry.on_stream_created(self.attach)

    def attach(self, stream: LiveStream) -> None:
        """Start packaging ``stream`` (called by the registry)."""
        rendition = stream.rendition
        if rendition is not None:
            existing = self.outputs.get(rendition.source)
            if existing is None or existing.ended:
                log.warning("rendition %s has no live source output; not packaged", stream.name)
                return
            output, variant_name = existing, rendition.rung
        else:
            timer = self._expiry.pop(stream.name, None)
            if timer is not None:
                timer.cancel()
            try:
                plan = self._protection(stream.name) if self._protection is not None else None
                if plan is not None:
                    check_protection(self.config.segment_format, plan.scheme)
            except ProtectionError as exc:
                # Never fall back to clear media for a stream meant to be encrypted.
                log.error("stream %s: not packaged as HLS: %s", stream.name, exc)
                return
            queue = self._queues.get(stream.name)
            if queue is None:
                queue = self._queues[stream.name] = SerialQueue(self._pool, stream.name)
            output = StreamOutput(
                stream.name, self.root, self.config, queue=queue, disk=self.disk, protection=plan
            )
            if self._sinks is not None:
                output.sink = self._sinks(stream.name, plan)
            self.outputs[stream.name] = output
            if not self.package_source:
                return
            variant_name = SOURCE_VARIANT
        # The same cuts, decided as packets arrive (see the module docstring).
        # It shares the timeline origin, so both segmenters shift timestamps alike.
        watch = _CutWatch(self._segmenter(_DecisionsOnly, output))
        sub = stream.subscribe("hls", maxsize=self.fanout_buffer, wake_when=watch, wake_after=MAX_HELD)
        task = asyncio.get_running_loop().create_task(
            self._run(stream.name, sub, output, variant_name), name=f"hls:{stream.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("HLS packager task %s failed", task.get_name(), exc_info=task.exception())

    def _segmenter(
        self, factory: MuxerFactory, output: StreamOutput, protection: SegmentProtection | None = None
    ) -> Segmenter:
        """A segmenter for ``output``; only the one that writes gets the
        protection (the wake rule's copy must never ask for keys on the loop)."""
        return Segmenter(
            factory,
            Fraction(self.config.target_duration_s).limit_denominator(1000),
            Fraction(self.config.max_segment_s).limit_denominator(1000),
            part_target=output.part_target,
            origin=output.origin,
            protection=protection,
        )

    async def _run(self, name: str, sub: Subscription, output: StreamOutput, variant_name: str) -> None:
        variant = output.variants.get(variant_name) or output.add_variant(variant_name)
        plan = output.protection
        scheme = plan.scheme if plan is not None else Protection.NONE
        lane = list(output.variants).index(variant_name)  # each rendition's own cenc IV range
        segmenter = self._segmenter(muxer_factory(self.config.segment_format, scheme, lane), output, plan)
        self.segmenters[name] = segmenter
        ended = False
        pending: list[StreamItem] = []
        try:
            async for item in sub:
                # The subscription woke this task because something is due
                # (see _CutWatch): take everything buffered in one job.
                for taken in itertools.chain((item,), sub.drain()):
                    pending.append(taken)
                    if isinstance(taken, StreamEnded):
                        ended = True
                        break
                output.feed(variant, segmenter, pending, time.time())
                pending = []
                if ended:
                    break
                if output.error is not None:
                    raise PackagerError(f"stream {name}: writing its HLS output failed") from output.error
                if output.queue.pending > self.fanout_buffer:
                    await output.flush()
        finally:
            sub.close()
            if not ended:
                pending.append(StreamEnded("packager stopped"))
                output.feed(variant, segmenter, pending, time.time())
            try:
                await asyncio.wait_for(output.flush(), FLUSH_TIMEOUT_S)
            except TimeoutError:
                log.error("stream %s: HLS output still writing after %.0fs", name, FLUSH_TIMEOUT_S)
            finally:
                if output.error is not None:
                    output.abandon(variant)
                if self.segmenters.get(name) is segmenter:
                    del self.segmenters[name]
                if output.ended:
                    output.finish_sink()
                self._schedule_expiry(output.name, output)

    def _schedule_expiry(self, name: str, output: StreamOutput) -> None:
        if not output.ended or name in self._expiry:
            return
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            self._expiry[name] = loop.call_later(self.ended_retention_s, self._expire, name, output)

    def _expire(self, name: str, output: StreamOutput) -> None:
        self._expiry.pop(name, None)
        if self.outputs.get(name) is output:
            del self.outputs[name]
            output.remove_files()
            queue = self._queues.get(name)
            if queue is not None:
                loop = asyncio.get_running_loop()
                removed = queue

                queue.submit(lambda: call_on_loop(loop, self._forget_queue, name, removed))

    def _forget_queue(self, name: str, queue: SerialQueue) -> None:
        """The folder of an expired stream is gone: drop its queue unless the
        name is live again (its new output uses the same queue)."""
        if name not in self.outputs and self._queues.get(name) is queue:
            del self._queues[name]

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        for task in tuple(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        # Let the files already queued be written (bounded): a stream's last
        # playlist says it ended.
        busy = [asyncio.ensure_future(drained(q)) for q in self._queues.values() if q.pending]
        if busy:
            _, late = await asyncio.wait(busy, timeout=FLUSH_TIMEOUT_S)
            for future in late:
                future.cancel()
        self._pool.shutdown(wait=False)
