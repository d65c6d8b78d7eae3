"""Live effect changes, applied in order, one stream at a time.

A creator may change a live stream's effects several times in quick
succession (the control API's ``PUT .../effects``). Building the new stages
loads models and files, so it runs off the event loop; but two builds
running side by side could finish in the wrong order and leave the older
setting in force. :class:`EffectUpdates` keeps one queue per stream with a
single worker: updates for a stream are applied one after another, and
while one is being applied only the newest waiting update is kept (the last
one wins; the ones in between would be replaced at once anyway). Failures
are logged with the stream's name, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from effects.errors import EffectsError

log = logging.getLogger(__name__)

ApplyUpdate = Callable[[str, object], None]
"""Applies one update to a stream's effects; runs in a worker thread."""
AppliedCallback = Callable[[str, object], None]
"""Told on the event loop, after an update was applied."""


class EffectUpdates:
    """Per-stream ordered, coalescing queues of effect updates."""

    def __init__(self, apply: ApplyUpdate, applied: AppliedCallback | None = None) -> None:
        self._apply = apply
        self._applied = applied
        self._pending: dict[str, object] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.applied_count = 0
        self.failed_count = 0
        self.coalesced_count = 0

    def submit(self, stream: str, value: object) -> None:
        """Queue ``value`` for ``stream``; replaces an update still waiting.
        Call on the event loop."""
        if stream in self._pending:
            self.coalesced_count += 1
        self._pending[stream] = value
        if stream not in self._workers:
            task = asyncio.get_running_loop().create_task(self._run(stream), name=f"effects:{stream}")
            self._workers[stream] = task

    def busy(self, stream: str) -> bool:
        """Whether an update for ``stream`` is waiting or being applied."""
        return stream in self._workers

    async def idle(self) -> None:
        """Wait until every queued update has been applied (or failed)."""
        while self._workers:
            await asyncio.gather(*tuple(self._workers.values()), return_exceptions=True)

    async def close(self) -> None:
        """Drop waiting updates and stop the workers (shutdown)."""
        self._pending.clear()
        workers = tuple(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, stream: str) -> None:
        try:
            while stream in self._pending:
                value = self._pending.pop(stream)
                try:
                    await asyncio.to_thread(self._apply, stream, value)
                except EffectsError as exc:
                    self.failed_count += 1
                    log.error("stream %s: effects update refused: %s", stream, exc)
                    continue
                except Exception:
                    self.failed_count += 1
                    log.exception("stream %s: effects update failed", stream)
                    continue
                self.applied_count += 1
                if self._applied is not None:
                    try:
                        self._applied(stream, value)
                    except Exception:
                        log.exception("stream %s: handling an applied effects update failed", stream)
        finally:
            self._workers.pop(stream, None)
