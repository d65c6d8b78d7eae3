"""Running a stream's transcode off the event loop, with a bounded input.

The event loop hands items to :meth:`TranscodeWorker.offer`, which never
blocks: :class:`DropPolicy` decides, from the queue depth alone, whether a
packet is taken. Past a high-water mark, disposable frames (``nal_ref_idc``
0: nothing refers to them) are dropped before decode; when the queue is
full, the rest of the current GOP is dropped and decoding resumes at the
next keyframe. Audio is tiny and cheap and is only dropped at twice the
bound. One thread per stream runs the :class:`StreamTranscoder`: PyAV
releases the GIL inside decode, scale and encode. On the 2-core build
machine, benchmarks/transcode_bench.py (two 720p30 streams to 480p+360p,
libx264 veryfast) gave, in source frames per second: one after another 87,
thread per stream 150, process per stream 135, process per rung 132 (each
rung then decodes on its own). Threads win and share one decode.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from engine.codecs import CodecError, is_disposable
from engine.media import Codec, MediaKind, Packet, StreamEnded, StreamItem, StreamStarted
from transcode.core import StreamTranscoder, TranscodeEvent
from transcode.errors import TranscodeConfigError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DropStats:
    """Counters for /metrics: what the worker never decoded, and why."""

    video_packets_dropped_gop: int = 0
    video_packets_dropped_nonref: int = 0
    gops_dropped: int = 0
    audio_packets_dropped: int = 0

    @property
    def total(self) -> int:
        return self.video_packets_dropped_gop + self.video_packets_dropped_nonref + self.audio_packets_dropped


class DropPolicy:
    """Admission decisions for a bounded transcode queue; pure and
    synchronous so that it can be tested packet by packet.

    ``maxsize`` bounds queued video packets; ``nonref_watermark`` is the
    fraction of it above which disposable frames are dropped.
    """

    def __init__(self, maxsize: int, nonref_watermark: float = 0.5) -> None:
        if maxsize < 2:
            raise TranscodeConfigError("the transcode queue needs room for at least 2 packets")
        self.maxsize = maxsize
        self.watermark = max(1, int(maxsize * nonref_watermark))
        self.stats = DropStats()
        self._resync = False

    def reset(self) -> None:
        """Forget the GOP being dropped (a new publish starts clean)."""
        self._resync = False

    def admit_video(self, packet: Packet, depth: int, codec: Codec) -> bool:
        if self._resync:
            if not packet.keyframe or depth >= self.maxsize:
                self.stats.video_packets_dropped_gop += 1
                return False
            self._resync = False
        if depth >= self.maxsize:
            self._resync = True
            self.stats.gops_dropped += 1
            self.stats.video_packets_dropped_gop += 1
            return False
        if depth >= self.watermark and not packet.keyframe and _disposable(packet.data, codec):
            self.stats.video_packets_dropped_nonref += 1
            return False
        return True

    def admit_audio(self, depth: int) -> bool:
        if depth >= 2 * self.maxsize:
            self.stats.audio_packets_dropped += 1
            return False
        return True


def _disposable(data: bytes, codec: Codec) -> bool:
    try:
        return is_disposable(data, codec)
    except CodecError:
        return False  # the decoder will count it


class _Poll:
    """What :meth:`TranscodeWorker._take` returns when it woke for rung output."""


POLL = _Poll()

EmitCallback = Callable[[list[TranscodeEvent]], None]
DoneCallback = Callable[[BaseException | None], None]
TranscoderFactory = Callable[[], StreamTranscoder]


class TranscodeWorker:
    """A thread that owns one stream's :class:`StreamTranscoder`.

    ``emit`` and ``done`` are called on the worker thread: the caller
    forwards them to its event loop (``loop.call_soon_threadsafe``). Each
    :class:`StreamStarted` starts a fresh transcoder (after flushing the
    previous one); :class:`StreamEnded` or :meth:`stop` flushes and ends the
    thread, after which ``done`` is called once with the error, if any.
    """

    def __init__(
        self,
        factory: TranscoderFactory,
        emit: EmitCallback,
        done: DoneCallback,
        maxsize: int = 256,
        name: str = "transcode",
    ) -> None:
        self.policy = DropPolicy(maxsize)
        self.transcoder: StreamTranscoder | None = None
        self._factory = factory
        self._emit = emit
        self._done = done
        self._items: collections.deque[StreamItem | None] = collections.deque()
        self._video_depth = 0
        self._depth = 0
        self._cond = threading.Condition()
        self._video_index: int | None = None
        self._video_codec = Codec.H264
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopping = False
        self._output_waiting = False

    def start(self) -> None:
        self._thread.start()

    def offer(self, item: StreamItem) -> bool:
        """Queue ``item`` without waiting; False when the policy dropped it."""
        with self._cond:
            if self._stopping:
                return False
            if isinstance(item, StreamStarted):
                video = next((t for t in item.tracks if t.kind is MediaKind.VIDEO), None)
                self._video_index = None if video is None else video.index
                self._video_codec = Codec.H264 if video is None else video.codec
                self.policy.reset()
            elif isinstance(item, Packet):
                if item.track == self._video_index:
                    if not self.policy.admit_video(item, self._video_depth, self._video_codec):
                        return False
                    self._video_depth += 1
                elif not self.policy.admit_audio(self._depth):
                    return False
                self._depth += 1
            self._items.append(item)
            self._cond.notify()
            return True

    def stop(self) -> None:
        """Ask the thread to flush and end; returns at once."""
        with self._cond:
            if not self._stopping:
                self._stopping = True
                self._items.append(None)
                self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def depth(self) -> int:
        return self._depth

    def _output_ready(self) -> None:
        """A rung thread has packets: wake the worker to publish them now
        rather than with the next input packet."""
        with self._cond:
            self._output_waiting = True
            self._cond.notify()

    def _take(self) -> StreamItem | _Poll | None:
        with self._cond:
            while not self._items and not self._output_waiting:
                self._cond.wait()
            if not self._items:
                self._output_waiting = False
                return POLL
            self._output_waiting = False
            item = self._items.popleft()
            if isinstance(item, Packet):
                self._depth -= 1
                if item.track == self._video_index:
                    self._video_depth -= 1
            return item

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                item = self._take()
                if isinstance(item, _Poll):
                    if self.transcoder is not None:
                        events = self.transcoder.poll()
                        if events:
                            self._emit(events)
                    continue
                if item is None or isinstance(item, StreamEnded):
                    self._flush()
                    break
                if isinstance(item, StreamStarted):
                    self._flush()
                    self.transcoder = self._factory()
                    self.transcoder.on_output = self._output_ready
                    self._emit(self.transcoder.start(item.tracks))
                elif self.transcoder is not None:
                    events = self.transcoder.push(item)
                    if events:
                        self._emit(events)
        except BaseException as exc:  # reported to the owner through done()
            error = exc
            log.error("transcode worker failed: %s", exc)
        finally:
            with self._cond:
                self._stopping = True
                self._items.clear()
                self._depth = self._video_depth = 0
            self._done(error)

    def _flush(self) -> None:
        if self.transcoder is not None:
            events = self.transcoder.flush()
            if events:
                self._emit(events)
