"""The live HLS packager: reads streams from the registry, writes HLS.

:class:`HlsService` attaches one task per stream when the registry creates
it. Each task reads the stream through a bounded subscription (a slow disk
never slows the publisher; it loses packets, counted, and resumes on the next
keyframe), feeds the sans-I/O :class:`Segmenter`, and lets
:class:`StreamOutput` write the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from fractions import Fraction
from pathlib import Path

from engine.media import StreamEnded
from engine.registry import LiveStream, StreamRegistry, Subscription
from packager.hls.config import HlsConfig
from packager.hls.muxers import muxer_factory
from packager.hls.output import StreamOutput
from packager.hls.segmenter import Segmenter

log = logging.getLogger(__name__)

SOURCE_VARIANT = "src"


class HlsService:
    """Every stream's HLS output under ``root``.

    A rendition (a stream whose :attr:`~engine.registry.LiveStream.rendition`
    is set; the transcoder publishes them) becomes the variant named by its
    rung in its source's output.
    With ``package_source`` off, the source itself is not a variant: the
    transcoder's renditions (its passed-through copy included) are.

    Ended streams stay readable (with ``EXT-X-ENDLIST``) for
    ``ended_retention_s`` seconds, then their files are removed.
    """

    def __init__(
        self,
        config: HlsConfig,
        root: Path,
        registry: StreamRegistry,
        fanout_buffer: int = 1024,
        ended_retention_s: float = 600.0,
        package_source: bool = True,
    ) -> None:
        self.package_source = package_source
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
            output = StreamOutput(stream.name, self.root, self.config)
            self.outputs[stream.name] = output
            if not self.package_source:
                return
            variant_name = SOURCE_VARIANT
        sub = stream.subscribe("hls", maxsize=self.fanout_buffer)
        task = asyncio.get_running_loop().create_task(
            self._run(stream.name, sub, output, variant_name), name=f"hls:{stream.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("HLS packager task %s failed", task.get_name(), exc_info=task.exception())

    async def _run(self, name: str, sub: Subscription, output: StreamOutput, variant_name: str) -> None:
        variant = output.variants.get(variant_name) or output.add_variant(variant_name)
        segmenter = Segmenter(
            muxer_factory(self.config.segment_format),
            Fraction(self.config.target_duration_s).limit_denominator(1000),
            Fraction(self.config.max_segment_s).limit_denominator(1000),
            part_target=output.part_target,
            origin=output.origin,
        )
        self.segmenters[name] = segmenter
        try:
            async for item in sub:
                segmenter.feed(item, time.time())
                # Drain what is already buffered before touching the disk.
                for more in sub.drain():
                    segmenter.feed(more, time.time())
                    if isinstance(more, StreamEnded):
                        break
                output.apply(variant, segmenter.events())
                if segmenter.ended:
                    break
        finally:
            sub.close()
            if not segmenter.ended:
                segmenter.feed(StreamEnded("packager stopped"), time.time())
                output.apply(variant, segmenter.events())
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
            self.segmenters.pop(name, None)
            output.remove_files()

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        for task in tuple(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
