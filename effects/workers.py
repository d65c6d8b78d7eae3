"""Threads a chain may use besides the one that feeds it frames.

Model inference (segmentation, face detection) needs only a frame's pixels
at model size, not the output of the stages before it, so a stage hands it
to the chain's helpers and carries on; the result is collected at a fixed
later point (the next frame that needs it), never "whenever it is ready".
That keeps the output the same whatever the number of threads: with
``threads=1`` a job runs at once, in the caller's thread, and its result
waits in a finished future, exactly where a helper's would.

Each stage submits at most one job at a time and collects it before
submitting the next, so a stage's network is never used by two threads at
once. OpenCV, NumPy and OpenCV-DNN release the GIL, so a helper thread
really runs on another core.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

MAX_THREADS = 8


class Helpers:
    """The chain's helper threads: ``threads - 1`` of them (the caller's
    thread is the first). Not a place for work that must finish before the
    current frame is returned: the caller then just waits."""

    def __init__(self, threads: int = 1, name: str = "effects") -> None:
        if not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"effect threads must be 1..{MAX_THREADS}, got {threads}")
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix=name) if threads > 1 else None

    def submit(self, job: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``job`` on a helper thread, or now when there is none."""
        if self._pool is not None:
            return self._pool.submit(job, *args, **kwargs)
        future: Future[T] = Future()
        try:
            future.set_result(job(*args, **kwargs))
        except Exception as exc:  # handed to whoever collects the result
            future.set_exception(exc)
        return future

    def close(self) -> None:
        """Let the helper threads end once their current jobs are done."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=False)


INLINE = Helpers(1)
"""No helper threads: every job runs in the caller's thread."""
