"""Retries with exponential backoff and full jitter, for backend calls.

Only errors the caller marks as transient are retried; each wait is a
random time up to a ceiling that doubles with every try (so many uploaders
that failed together do not return together).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from cluster.storage.config import RetrySettings

T = TypeVar("T")


class Backoff:
    """Waits between tries. ``sleep`` and ``rng`` are the real ones unless
    a caller (a test, the spool's stoppable wait) passes its own."""

    def __init__(
        self,
        settings: RetrySettings,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._sleep = sleep

    def delay(self, attempt: int) -> float:
        """A random wait after failed try ``attempt`` (0-based)."""
        return self._rng.uniform(0.0, self.settings.ceiling(attempt))

    def call(self, fn: Callable[[], T], transient: Callable[[Exception], bool]) -> T:
        """``fn()``, tried up to ``settings.attempts`` times while it raises
        an error that ``transient`` accepts; the last error is raised."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                attempt += 1
                if attempt >= self.settings.attempts or not transient(exc):
                    raise
                self._sleep(self.delay(attempt - 1))
