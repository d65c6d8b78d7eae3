"""Playback revocations: the end of access before a playback token expires.

A playback token is checked without a database round trip on every playlist,
segment and part request, and lives for ``playback_token_ttl_s`` (2 h by
default). When the reason a viewer could watch goes away (the subscription is
cancelled or refunded, the unlock refunded, the viewer banned or blocked by
the creator), a :class:`Revocation` is added here: every token of that viewer
issued before that moment stops opening the streams in its scope. The check
is a few dictionary look-ups per request.

Scopes: ``*`` (every stream: a ban), ``creator:<id>`` (every paid stream of a
creator: a block), ``subscription:<id>`` (a creator's subscribers-only
streams: a cancelled or refunded subscription) and ``stream:<playback id>``
(one pay-per-view stream: a refunded unlock).

:class:`RevocationSet` is the pure in-memory core (no clock, no I/O).
:class:`RevocationFeed` is how revocations travel between nodes;
:class:`DatabaseRevocationFeed` keeps them in the shared database, loads the
live ones at start and polls for new ones every ``revocation_poll_s``, so a
revocation made on one node holds on every node within that bound (and
survives a restart). A message-bus feed (Redis pub/sub) can implement the
same interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from control_api.db import Database
from control_api.security import new_id

log = logging.getLogger(__name__)

EVERY_STREAM = "*"


def creator_scope(creator_id: str) -> str:
    return f"creator:{creator_id}"


def subscription_scope(creator_id: str) -> str:
    return f"subscription:{creator_id}"


def stream_scope(playback_id: str) -> str:
    return f"stream:{playback_id}"


def scopes_for(creator_id: str, playback_id: str, visibility: str) -> tuple[str, ...]:
    """The scopes a token for this stream can be revoked in."""
    scopes = [EVERY_STREAM, creator_scope(creator_id)]
    if visibility == "subscribers":
        scopes.append(subscription_scope(creator_id))
    elif visibility == "pay_per_view":
        scopes.append(stream_scope(playback_id))
    return tuple(scopes)


@dataclass(frozen=True, slots=True)
class Revocation:
    """Tokens of ``user_id`` issued before ``revoked_at`` no longer open
    streams in ``scope``."""

    user_id: str
    scope: str
    revoked_at: float
    reason: str = ""


class RevocationSet:
    """The revocations in force, keyed by ``(user, scope)``; the latest
    revocation of a pair wins. Entries older than the longest token life are
    dropped by :meth:`prune`, since every token they could stop has expired."""

    def __init__(self, token_ttl_s: float) -> None:
        self._ttl = token_ttl_s
        self._at: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        return len(self._at)

    def add(self, revocation: Revocation) -> None:
        key = (revocation.user_id, revocation.scope)
        if revocation.revoked_at > self._at.get(key, float("-inf")):
            self._at[key] = revocation.revoked_at

    def revoked(self, user_id: str, scopes: Iterable[str], issued_at: float) -> bool:
        """Whether a token of ``user_id`` issued at ``issued_at`` is revoked
        in any of ``scopes``."""
        at = self._at
        for scope in scopes:
            when = at.get((user_id, scope))
            if when is not None and issued_at <= when:
                return True
        return False

    def prune(self, now: float) -> int:
        """Forget revocations no unexpired token can predate; returns how
        many went."""
        horizon = now - self._ttl
        old = [k for k, when in self._at.items() if when < horizon]
        for k in old:
            del self._at[k]
        return len(old)


class RevocationFeed(Protocol):
    """Carries revocations between the nodes that check playback."""

    async def publish(self, revocation: Revocation) -> None:
        """Make a revocation (already applied on this node) reach the others."""
        ...

    async def start(self, deliver: Callable[[Revocation], None], now: float) -> None:
        """Deliver the revocations still in force, then new ones as they come."""
        ...

    async def stop(self) -> None: ...


class DatabaseRevocationFeed:
    """Revocations as rows of ``playback_revocations`` in the shared
    database: loaded at start, polled every ``poll_s`` seconds.

    The poll reads rows newer than the newest seen, less an overlap that
    absorbs clocks of different nodes disagreeing and transactions that commit
    out of order; re-delivering a row is harmless (:meth:`RevocationSet.add`
    keeps the latest time)."""

    OVERLAP_S = 30.0
    PRUNE_EVERY_S = 3600.0

    def __init__(self, db: Database, poll_s: float, token_ttl_s: float, clock: Callable[[], float]) -> None:
        self._db = db
        self._poll_s = poll_s
        self._ttl = token_ttl_s
        self._clock = clock
        self._since = 0.0
        self._task: asyncio.Task[None] | None = None
        self._deliver: Callable[[Revocation], None] | None = None

    async def publish(self, revocation: Revocation) -> None:
        await self._db.execute(
            "INSERT INTO playback_revocations (id, user_id, scope, revoked_at, reason) VALUES ($1, $2, $3, $4, $5)",
            new_id(), revocation.user_id, revocation.scope, revocation.revoked_at, revocation.reason,
        )

    async def start(self, deliver: Callable[[Revocation], None], now: float) -> None:
        self._deliver = deliver
        self._since = now - self._ttl
        await self.poll()
        self._task = asyncio.create_task(self._run(), name="playback-revocations")

    async def poll(self) -> int:
        """Read revocations newer than the last poll (less the overlap);
        returns how many rows were read."""
        assert self._deliver is not None
        rows = await self._db.fetch(
            "SELECT user_id, scope, revoked_at, reason FROM playback_revocations WHERE revoked_at >= $1",
            self._since,
        )
        newest = self._since
        for row in rows:
            at = float(row["revoked_at"])
            self._deliver(Revocation(str(row["user_id"]), str(row["scope"]), at, str(row["reason"])))
            newest = max(newest, at)
        self._since = max(self._since, newest - self.OVERLAP_S, self._clock() - self._ttl)
        return len(rows)

    async def _run(self) -> None:
        pruned_at = self._clock()
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.poll()
                if self._clock() - pruned_at > self.PRUNE_EVERY_S:
                    pruned_at = self._clock()
                    await self.prune(pruned_at)
            except Exception:
                # A database hiccup must not end revocation for good: log it
                # and try again on the next tick.
                log.exception("playback revocations: poll failed; retrying in %.1f s", self._poll_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def prune(self, now: float) -> int:
        """Delete rows no unexpired token can predate."""
        return await self._db.execute("DELETE FROM playback_revocations WHERE revoked_at < $1", now - self._ttl)
