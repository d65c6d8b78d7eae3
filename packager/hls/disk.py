"""The HLS output's disk, and the ordered queues that keep it off the event loop.

:class:`Disk` is every file operation the packager does (write a file
atomically, delete one, create or remove a folder); :class:`LocalDisk` does
them on the local file system. A different disk (an object store, or a slow
one in the tests) is handed to :class:`packager.hls.live.HlsService`.

:class:`SerialQueue` runs one stream's jobs in order on a shared thread
pool, one job at a time: a segment is on disk before the playlist that names
it is published, and a deletion never overtakes the write it follows. A
stream whose disk is slow holds at most one of the pool's threads, so the
other streams' queues keep moving.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

Job = Callable[[], None]


class Disk(Protocol):
    """File operations of the HLS output. Called from worker threads."""

    def write(self, path: Path, data: bytes) -> None:
        """Write ``path`` so that no reader ever sees a partial file."""
        ...

    def unlink(self, path: Path) -> None:
        """Delete ``path``; a missing file is not an error."""
        ...

    def make_dir(self, path: Path) -> None:
        """Create ``path`` and its parents; an existing folder is fine."""
        ...

    def remove_tree(self, path: Path) -> None:
        """Delete ``path`` and everything in it; a missing folder is fine."""
        ...


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden temporary name, then rename over ``path``: a web
    server never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class LocalDisk:
    """The local file system."""

    def write(self, path: Path, data: bytes) -> None:
        write_atomic(path, data)

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def make_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


class SerialQueue:
    """Jobs run one after another, in the order submitted, on ``pool``.

    :meth:`submit` never blocks and may be called from any thread. A job
    that raises is logged with the queue's name; the jobs after it still run
    (their owner decides what a failure means).
    """

    def __init__(self, pool: Executor, name: str) -> None:
        self._pool = pool
        self.name = name
        self._jobs: collections.deque[Job] = collections.deque()
        self._lock = threading.Lock()
        self._running = False
        self.submitted = 0
        """Jobs submitted so far (each may wake a worker thread)."""

    def submit(self, job: Job) -> None:
        with self._lock:
            self.submitted += 1
            self._jobs.append(job)
            if self._running:
                return
            self._running = True
        self._pool.submit(self._drain)

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished (the running one included)."""
        with self._lock:
            return len(self._jobs) + (1 if self._running else 0)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._running = False
                    return
                job = self._jobs.popleft()
            try:
                job()
            except Exception:
                log.exception("HLS output %s: a disk job failed", self.name)


class InlineQueue:
    """Runs each job at once, in the caller's thread (files written as a
    batch job, where there is no event loop to keep free)."""

    pending = 0

    def __init__(self, name: str) -> None:
        self.name = name
        self.submitted = 0

    def submit(self, job: Job) -> None:
        self.submitted += 1
        job()


class JobQueue(Protocol):
    name: str
    submitted: int

    def submit(self, job: Job) -> None: ...

    @property
    def pending(self) -> int: ...


def call_on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """Schedule ``callback`` on ``loop`` from a worker thread. A loop that
    has already closed (the process is shutting down) has nobody left to
    tell, so the call is dropped."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


async def drained(queue: JobQueue) -> None:
    """Wait until every job queued on ``queue`` so far has run, and every
    callback those jobs scheduled on this loop has run too."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not done.done():
            done.set_result(None)

    queue.submit(lambda: call_on_loop(loop, resolve))
    await done
