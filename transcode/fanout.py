"""Running each rung's scale + encode beside the decode.

A :class:`StreamTranscoder` decodes on the thread that calls it and hands
every decoded frame, with its boundary decision already taken, to one
:class:`RungLane` per rung. :class:`ThreadedLane` runs its rung on a thread
of its own behind a short bounded queue; PyAV releases the GIL inside
``sws_scale`` and ``avcodec_send_frame``/``receive_packet``, so the decode
and every rung use a core each. :class:`InlineLane` encodes on the calling
thread (the serial layout, kept for comparison and for one-core machines).

Each lane keeps its rung's packets in encoder order; the caller collects
them with :meth:`RungLane.take` after each submission and at the end with
:meth:`RungLane.finish`, and may be told (``notify``, called on the rung's
thread) when new packets wait, so that a live stream's packets need not
wait for the next input packet to be collected. A full queue blocks the submitter: decode never
runs more than ``depth`` frames ahead of the slowest rung, which bounds
memory (the frames are shared, not copied, between rungs).
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from av.video.frame import VideoFrame

from engine.media import Packet
from transcode.video import RungEncoder

QUEUE_FRAMES = 8
"""Decoded frames a rung's queue holds. Enough to ride out the uneven cost
of x264's frame types; at 1080p each waiting frame is about 3 MB, shared by
every rung."""
POLL_S = 0.2
"""How often a blocked submitter looks whether its rung thread has died."""

_Item = tuple[VideoFrame, bool] | None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as ``taskset`` or a
    container's cpuset leaves it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_pay(parallel_rungs: bool) -> bool:
    """Whether rungs get threads of their own: asked for, and more than one
    CPU to run them on. On one CPU there is nothing to overlap, and every
    hand-over between threads is a cost: pinned to one CPU of the loaded
    2-core build machine, the 3 s 1080p ladder of benchmarks/ladder_vs_ffmpeg
    took 15.0 s of wall time with a thread per rung against 10.3 s serial
    (5.3 and 4.9 CPU-seconds)."""
    return parallel_rungs and usable_cpus() > 1


class RungLane(Protocol):
    encoder: RungEncoder

    def submit(self, frame: VideoFrame, boundary: bool) -> None:
        """Give the rung one frame; may block while its queue is full."""
        ...

    def take(self) -> list[Packet]:
        """The packets encoded since the last call (never blocks)."""
        ...

    def finish(self) -> list[Packet]:
        """Flush the encoder and return the last packets; waits for the rung."""
        ...

    def close(self) -> None:
        """Stop without flushing (after an error elsewhere)."""
        ...


class InlineLane:
    """Scale and encode on the caller's thread."""

    def __init__(self, encoder: RungEncoder) -> None:
        self.encoder = encoder
        self._out: list[Packet] = []

    def submit(self, frame: VideoFrame, boundary: bool) -> None:
        self._out += self.encoder.encode(frame, boundary)

    def take(self) -> list[Packet]:
        out, self._out = self._out, []
        return out

    def finish(self) -> list[Packet]:
        return self.take() + self.encoder.flush()

    def close(self) -> None:
        self._out = []


class ThreadedLane:
    """Scale and encode on a thread of this rung's own.

    An error on the rung's thread ends it and is raised again, the same
    exception, from the caller's next :meth:`submit`, :meth:`take` or
    :meth:`finish`.
    """

    def __init__(
        self,
        encoder: RungEncoder,
        depth: int = QUEUE_FRAMES,
        name: str = "rung",
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self._notify = notify
        self._inbox: queue.Queue[_Item] = queue.Queue(max(1, depth))
        # Appended on the rung's thread, popped on the caller's: deque's
        # append and popleft are atomic.
        self._out: collections.deque[Packet] = collections.deque()
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, frame: VideoFrame, boundary: bool) -> None:
        self._put((frame, boundary))

    def take(self) -> list[Packet]:
        out = self._drain()
        self._raise()
        return out

    def finish(self) -> list[Packet]:
        if not self._closed:
            self._put(None)
            self._closed = True
        while self._thread.is_alive():
            self._thread.join(POLL_S)
        self._raise()
        return self._drain()

    def close(self) -> None:
        self._abort.set()
        self._closed = True
        try:
            self._inbox.put_nowait(None)
        except queue.Full:
            pass  # the thread sees the abort flag after its current frame

    # -- internals ---------------------------------------------------------
    def _put(self, item: _Item) -> None:
        while True:
            self._raise()
            if not self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} has ended")
            try:
                self._inbox.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _drain(self) -> list[Packet]:
        out: list[Packet] = []
        while self._out:
            out.append(self._out.popleft())
        return out

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while not self._abort.is_set():
                item = self._inbox.get()
                if self._abort.is_set():
                    return
                if item is None:
                    self._out.extend(self.encoder.flush())
                    return
                packets = self.encoder.encode(*item)
                if packets:
                    self._out.extend(packets)
                    if self._notify is not None:
                        self._notify()
        except BaseException as exc:  # raised again on the caller's thread
            self._error = exc
