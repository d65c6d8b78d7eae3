"""Webhook delivery: signed POSTs to allowed hosts, retried with backoff,
every attempt recorded.

A delivery is a row first and a request second, so a restart resumes the
pending ones. Targets must be on the operator's allow-list (checked when an
endpoint is registered and again before each attempt, redirects are not
followed), so an API caller cannot make the server probe internal
addresses.

Receivers verify ``Fanz-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" under the endpoint secret>`` with :func:`verify_signature`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from control_api.config import ApiConfig
from control_api.db import Database
from control_api.errors import Forbidden
from control_api.security import new_id
from control_api.store import webhooks as store
from drm.keystore import Sealer

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Fanz-Signature"
MAX_ERROR_TEXT = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver runs: a valid MAC over this body, signed recently."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after the ``attempt``-th failure (1-based): doubling
    from ``base_s``, at most ``cap_s``."""
    return float(min(cap_s, base_s * 2 ** max(0, attempt - 1)))


def check_target(url: str, allowed_hosts: tuple[str, ...]) -> None:
    """Raise :class:`Forbidden` unless ``url`` is http(s) on an allowed host.

    An allow-list entry is ``host`` (any port) or ``host:port``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise Forbidden(f"webhook URL is invalid: {e}", kind="webhook-target-refused") from e
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise Forbidden("webhook URL must be http(s)://host[:port]/path without credentials",
                        kind="webhook-target-refused")
    port = port or (443 if parts.scheme == "https" else 80)
    allowed = {h.lower() for h in allowed_hosts}
    if host not in allowed and f"{host}:{port}" not in allowed:
        raise Forbidden(f"webhook host {host}:{port} is not in the configured allow-list",
                        kind="webhook-target-refused")


class WebhookDispatcher:
    """Queues events for every subscribed endpoint and delivers them.

    Call :meth:`start` once the database is open and :meth:`stop` on
    shutdown; :meth:`emit` may be called at any time in between."""

    def __init__(self, db: Database, config: ApiConfig, sealer: Sealer, clock: Callable[[], float] = time.time,
                 workers: int = 4) -> None:
        self._db = db
        self._sealer = sealer
        self._config = config
        self._clock = clock
        self._workers = workers
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._session: aiohttp.ClientSession | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self._in_flight = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.webhook_timeout_s), trust_env=False
        )
        for row in await store.pending_deliveries(self._db):
            self._schedule(str(row["id"]), (row["next_attempt_at"] or 0) - self._clock())
        self._tasks = [asyncio.create_task(self._work(), name=f"webhook-worker-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()

    async def emit(self, event: str, data: dict[str, Any]) -> list[str]:
        """Record one delivery per endpoint subscribed to ``event`` and queue
        them; returns the delivery ids."""
        now = self._clock()
        ids = []
        for endpoint in await store.endpoints_for(self._db, event):
            delivery_id = new_id()
            payload = json.dumps({"id": delivery_id, "event": event, "created_at": now, "data": data},
                                 separators=(",", ":"))
            ids.append(await store.add_delivery(self._db, delivery_id, str(endpoint["id"]), event, payload, now))
        for delivery_id in ids:
            self._schedule(delivery_id, 0)
        return ids

    def _schedule(self, delivery_id: str, delay: float) -> None:
        self.idle.clear()
        self._in_flight += 1
        if delay <= 0:
            self._queue.put_nowait(delivery_id)
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self._queue.put_nowait(delivery_id)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    async def _work(self) -> None:
        while True:
            delivery_id = await self._queue.get()
            try:
                await self._attempt(delivery_id)
            except Exception:
                log.exception("webhook delivery %s: attempt failed unexpectedly", delivery_id)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self.idle.set()

    async def _attempt(self, delivery_id: str) -> None:
        row = await store.get_delivery(self._db, delivery_id)
        if row is None or row["status"] != "pending":
            return
        body = row["payload"].encode()
        http_status: int | None = None
        error: str | None = None
        try:
            if not row["active"]:
                raise Forbidden("endpoint was deleted")
            check_target(row["url"], self._config.webhook_allowed_hosts)
            timestamp = int(self._clock())
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(store.signing_secret(row, self._sealer, "endpoint_id"), timestamp, body),
                "Fanz-Timestamp": str(timestamp),
                "Fanz-Event": row["event"],
                "Fanz-Delivery": delivery_id,
                "User-Agent": "fanz-media-webhooks/1",
            }
            assert self._session is not None
            async with self._session.post(row["url"], data=body, headers=headers, allow_redirects=False) as resp:
                http_status = resp.status
                if not 200 <= resp.status < 300:
                    error = f"HTTP {resp.status}"
        except Forbidden as e:
            error = f"refused: {e.detail}"
            await store.record_attempt(self._db, delivery_id, status="failed", http_status=None, error=error,
                                       next_attempt_at=None, now=self._clock())
            log.warning("webhook delivery %s not sent: %s", delivery_id, error)
            return
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            error = f"{type(e).__name__}: {e}"[:MAX_ERROR_TEXT]
        now = self._clock()
        if error is None:
            await store.record_attempt(self._db, delivery_id, status="delivered", http_status=http_status,
                                       error=None, next_attempt_at=None, now=now)
            return
        attempts = int(row["attempts"]) + 1
        if attempts >= self._config.webhook_max_attempts:
            await store.record_attempt(self._db, delivery_id, status="failed", http_status=http_status, error=error,
                                       next_attempt_at=None, now=now)
            log.warning("webhook delivery %s failed for good after %d attempts: %s", delivery_id, attempts, error)
            return
        delay = backoff_delay(attempts, self._config.webhook_backoff_base_s, self._config.webhook_backoff_cap_s)
        await store.record_attempt(self._db, delivery_id, status="pending", http_status=http_status, error=error,
                                   next_attempt_at=now + delay, now=now)
        self._schedule(delivery_id, delay)
