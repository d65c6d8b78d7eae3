"""The control plane: the open database, the webhook dispatcher, the
engine's stream registry and the operations that touch more than one of
them (a stream going live or ending, a recording arriving).

The HTTP routes and the engine checks both call into one
:class:`ControlPlane`, so a stream ends the same way whether an admin, the
creator, a ban or the engine ended it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

from control_api.config import ApiConfig
from control_api.db import Database, connect, migrate
from control_api.errors import ControlApiError
from control_api.payments import PaymentProcessor, processors_from
from control_api.ratelimit import AuthLimits
from control_api.revocations import DatabaseRevocationFeed, Revocation, RevocationFeed, RevocationSet
from control_api.security import PlaybackClaims, issue_playback_token
from control_api.store import streams, users
from control_api.store import webhooks as webhook_store
from control_api.store.audit import Actor
from control_api.webhooks import WebhookDispatcher
from drm.keystore import KeyStore
from engine.auth import asset_content
from engine.geo import CountryCache
from engine.registry import StreamRegistry

log = logging.getLogger(__name__)


class RecordingFacts(Protocol):
    """A closed recording as the engine's recorder reports it (``stream`` is
    the stream's playback id)."""

    @property
    def recording_id(self) -> str: ...
    @property
    def stream(self) -> str: ...
    @property
    def uri(self) -> str: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def bytes(self) -> int: ...
    @property
    def segments(self) -> int: ...
    @property
    def interrupted(self) -> bool: ...
    @property
    def stop_reason(self) -> str | None: ...


class RecordingStop(Protocol):
    """A recording the engine ended early, and why."""

    @property
    def recording_id(self) -> str: ...
    @property
    def stream(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...


class LiveElsewhere(Protocol):
    """Streams live in another engine process of this node
    (``server.processes`` > 1): the live actions the plane takes on a
    stream reach the process that has it."""

    async def kick(self, name: str, reason: str) -> bool:
        """Disconnect ``name``'s publisher where it lives; whether one was."""
        ...

    async def configure(self, name: str, key: str, value: object) -> None:
        """Hand one of ``name``'s settings to the process where it is live
        (nothing when it is live nowhere else)."""
        ...


class NotReady(ControlApiError):
    """The control plane was used before :meth:`ControlPlane.open`."""


class ControlPlane:
    def __init__(self, config: ApiConfig, registry: StreamRegistry | None,
                 clock: Callable[[], float] = time.time,
                 feed_factory: Callable[[Database], RevocationFeed] | None = None,
                 geo: CountryCache | None = None) -> None:
        """``feed_factory`` makes the feed that carries playback revocations
        between nodes; by default they travel through the shared database.
        ``geo`` maps viewers' addresses to countries for the streams'
        geographic rules (none: every address maps to no country)."""
        config.check()
        self.config = config.with_secret()
        # Secrets at rest (TOTP seeds, webhook signing secrets) are sealed
        # with a key derived from the engine's master key.
        self.keys = KeyStore.load(self.config.data_dir, self.config.master_key_file)
        self.sealer = self.keys.sealer("control_api.secrets")
        self.registry = registry
        self.clock = clock
        self.auth_limits = AuthLimits(config.auth_rate_per_minute_per_ip, config.auth_failures_per_user_address,
                                      config.auth_failures_per_user)
        self._db: Database | None = None
        self._webhooks: WebhookDispatcher | None = None
        self.processors: dict[str, PaymentProcessor] = processors_from(config.payment_processors,
                                                                        config.payment_tolerance_s)
        self.revocations = RevocationSet(config.playback_token_ttl_s)
        self._feed: RevocationFeed | None = None
        self._feed_factory = feed_factory
        self._pruned_at = 0.0
        self.geo = geo if geo is not None else CountryCache(None)
        self._elsewhere: LiveElsewhere | None = None
        self._asset_removers: list[Callable[[str], Awaitable[None]]] = []
        self._asset_watchers: list[Callable[[str], None]] = []

    def on_asset_deleted(self, remove: Callable[[str], Awaitable[None]]) -> None:
        """Have ``remove(asset_id)`` called when a recording is deleted
        through the API: the engine removes the asset's objects from storage
        and forgets cached grants. Without one (the API on its own) only the
        record goes."""
        self._asset_removers.append(remove)

    async def asset_deleted(self, asset_id: str) -> None:
        """A recording's record is gone: forget cached checks, remove its objects."""
        for forget in self._asset_watchers:
            forget(asset_id)
        for remove in self._asset_removers:
            await remove(asset_id)

    async def asset_changed(self, asset_id: str) -> None:
        """A recording's visibility or price changed: checks cached for it
        are forgotten (see :meth:`on_asset_changed`)."""
        for forget in self._asset_watchers:
            forget(asset_id)

    def on_asset_changed(self, forget: Callable[[str], None]) -> None:
        self._asset_watchers.append(forget)

    def reach_other_processes(self, elsewhere: LiveElsewhere) -> None:
        """Let kicks and live settings reach streams of the node's other
        engine processes (the engine calls this when it runs several)."""
        self._elsewhere = elsewhere

    @property
    def secret(self) -> str:
        assert self.config.jwt_secret is not None
        return self.config.jwt_secret

    @property
    def db(self) -> Database:
        if self._db is None:
            raise NotReady("the control API database is not open yet")
        return self._db

    @property
    def webhooks(self) -> WebhookDispatcher:
        if self._webhooks is None:
            raise NotReady("the control API is not started yet")
        return self._webhooks

    async def open(self) -> None:
        """Connect, migrate, start webhook delivery."""
        db = await connect(self.config.resolved_database_url(), self.config.postgres_pool_size)
        try:
            applied = await migrate(db)
        except BaseException:
            await db.close()
            raise
        if applied:
            log.info("control API: applied migrations %s", applied)
        try:
            sealed = await users.seal_clear_totp(db, self.sealer) + await webhook_store.seal_clear_secrets(
                db, self.sealer)
        except BaseException:
            await db.close()
            raise
        if sealed:
            log.info("control API: sealed %d secrets that earlier versions stored in clear", sealed)
        self._db = db
        if self._feed_factory is not None:
            feed = self._feed_factory(db)
        else:
            feed = DatabaseRevocationFeed(db, self.config.revocation_poll_s, self.config.playback_token_ttl_s,
                                          self.clock)
        await feed.start(self._deliver_revocation, self.clock())
        self._feed = feed
        self._webhooks = WebhookDispatcher(db, self.config, self.sealer, self.clock)
        await self._webhooks.start()

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.stop()
            self._feed = None
        if self._webhooks is not None:
            await self._webhooks.stop()
            self._webhooks = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    # -- the end of access ---------------------------------------------------------
    def _deliver_revocation(self, revocation: Revocation) -> None:
        self.revocations.add(revocation)
        now = self.clock()
        if now - self._pruned_at > 60:
            self._pruned_at = now
            self.revocations.prune(now)

    async def revoke(self, revocations: list[Revocation]) -> None:
        """Stop playback tokens issued before each revocation: on this node
        at once (the next playlist, segment or part request is refused), on
        the others through the feed."""
        for revocation in revocations:
            self._deliver_revocation(revocation)
            log.info("control API: playback of %s revoked in %s (%s)", revocation.user_id, revocation.scope,
                     revocation.reason)
        if self._feed is None:
            raise NotReady("the control API is not started yet")
        for revocation in revocations:
            await self._feed.publish(revocation)

    # -- lifecycle shared by routes and engine checks ---------------------------------
    async def go_live(self, actor: Actor, stream_id: str) -> None:
        if await streams.mark_live(self.db, actor, stream_id, self.clock()):
            row = await streams.get_stream(self.db, stream_id)
            await self.webhooks.emit("stream.started", streams.stream_view(row))

    async def end_stream(self, actor: Actor, stream_id: str, reason: str, kick: bool) -> bool:
        """End a stream record (stream.ended when it had gone live) and, with
        ``kick``, disconnect its publisher from the engine. Idempotent."""
        row = await streams.get_stream(self.db, stream_id)
        before = await streams.mark_ended(self.db, actor, stream_id, reason, self.clock())
        if kick:
            await self.kick(str(row["playback_id"]), reason)
        if before == "live":
            ended = await streams.get_stream(self.db, stream_id)
            await self.webhooks.emit("stream.ended", streams.stream_view(ended))
        return before is not None

    async def reconcile(self, live: Collection[str], reason: str = "engine restarted") -> list[str]:
        """Make the store agree with the engine after a start: every stream
        listed as live whose playback id is not in ``live`` (the engine's
        own streams) is ended, with ``stream.ended`` sent, and viewer
        sessions left open on streams that are not live are closed. Returns
        the playback ids ended. For an engine that is the store's only one
        (``api.reconcile_on_start``)."""
        ended = []
        for row in await streams.live_streams(self.db):
            if row["playback_id"] not in live:
                await self.end_stream(Actor("system", None), str(row["id"]), reason, kick=False)
                ended.append(str(row["playback_id"]))
        closed = await streams.close_stale_viewers(self.db, self.clock())
        if ended or closed:
            log.warning("control API: ended %d streams left live by an earlier run (%s); closed %d viewer sessions",
                        len(ended), ", ".join(ended) or "none", closed)
        return ended

    async def apply_settings(self, row: Mapping[str, Any], publishing_here: bool = False) -> None:
        """Hand a stream record's media settings (its ladder, effects, protection and record flag) to
        the engine, which applies them when the stream starts and, for
        effects, at once while it is live (in whichever of the node's
        processes it is live, unless ``publishing_here``: the stream is
        being published to this process now)."""
        if self.registry is None:
            return
        name = str(row["playback_id"])
        ladder = row.get("ladder")
        if isinstance(ladder, list) and ladder:
            rungs = [
                {"name": r["name"], "height": r["height"], "bitrate": int(r["bitrate_kbps"]) * 1000}
                for r in ladder
            ]
            await self._configure(name, "ladder", rungs, publishing_here)
        effects = row.get("effects")
        if isinstance(effects, dict):
            await self._configure(name, "effects", effects, publishing_here)
        if "protection" in row:
            # The stream's own encryption scheme, or None for drm.protection.
            await self._configure(name, "protection", row["protection"], publishing_here)
        if "recording" in row:
            await self._configure(name, "recording", bool(row["recording"]), publishing_here)

    async def _configure(self, name: str, key: str, value: object, here_only: bool) -> None:
        assert self.registry is not None
        self.registry.configure(name, key, value)
        if self._elsewhere is not None and not here_only and self.registry.get(name) is None:
            await self._elsewhere.configure(name, key, value)

    async def kick(self, playback_id: str, reason: str) -> bool:
        if self.registry is None:
            return False
        kicked = self.registry.kick(playback_id, reason)
        if not kicked and self._elsewhere is not None:
            kicked = await self._elsewhere.kick(playback_id, reason)
        if kicked:
            log.info("control API: disconnected publisher of %s: %s", playback_id, reason)
        return kicked

    async def recording_ready(self, actor: Actor, stream_id: str, uri: str, duration_s: float,
                              size_bytes: int, *, recording_id: str | None = None, interrupted: bool = False,
                              segments: int = 0, stop_reason: str | None = None) -> dict[str, Any]:
        """Record a finished recording; ``recording_id`` is the id the
        recorder stored it under (``recordings/ID/``, its VOD asset id), a
        new one when ``None``."""
        row = await streams.add_recording(self.db, actor, stream_id, uri, duration_s, size_bytes, self.clock(),
                                          recording_id=recording_id, interrupted=interrupted, segments=segments,
                                          stop_reason=stop_reason)
        await self.webhooks.emit("recording.ready", {**row, "asset_id": row["id"]})
        return row

    async def recording_closed(self, report: RecordingFacts) -> None:
        """The engine's recorder closed a recording (at its end, or at start-up
        after a crash): record it and send ``recording.ready``. Idempotent
        (a report repeated after a crash adds nothing)."""
        if await streams.get_recording(self.db, report.recording_id) is not None:
            return
        row = await streams.by_playback_id(self.db, report.stream)
        if row is None:
            log.warning("control API: recording %s is of stream %s, which the store does not know; not recorded",
                        report.recording_id, report.stream)
            return
        await self.recording_ready(
            Actor("system", None), str(row["id"]), report.uri, report.duration_s, report.bytes,
            recording_id=report.recording_id, interrupted=report.interrupted, segments=report.segments,
            stop_reason=report.stop_reason,
        )

    async def recording_stopped(self, stopped: RecordingStop) -> None:
        """A recording ended early (a limit, a full disk): ``recording.stopped``."""
        row = await streams.by_playback_id(self.db, stopped.stream)
        await self.webhooks.emit("recording.stopped", {
            "recording_id": stopped.recording_id, "asset_id": stopped.recording_id,
            "stream_id": row["id"] if row is not None else None, "playback_id": stopped.stream,
            "reason": stopped.reason, "detail": stopped.detail,
        })

    def playback_url(self, playback_id: str, viewer_id: str, origin: str,
                     until: float | None = None, asset_id: str | None = None) -> tuple[str, str, int]:
        """``(url, token, expires_at)``: the HLS URL under the engine's public
        base (``origin``, the one the viewer's request came in on, unless
        ``public_base_url`` is configured), with a signed token bound to the
        stream and the viewer. The token expires after
        ``playback_token_ttl_s``, or at ``until`` (the end of the paid period)
        when that comes first. With ``asset_id`` the URL and the token are
        for that VOD asset (content name ``asset:ID``) instead."""
        now = self.clock()
        expires = int(now) + self.config.playback_token_ttl_s
        if until is not None:
            expires = max(int(now) + 1, min(expires, int(until)))
        base = self.config.public_base_url or origin
        if asset_id is not None:
            playback_id = asset_content(asset_id)
            url = f"{base.rstrip('/')}/vod/{asset_id}/index.m3u8"
        else:
            url = f"{base.rstrip('/')}/hls/{playback_id}/index.m3u8"
        token = issue_playback_token(self.secret, PlaybackClaims(playback_id, viewer_id, expires, now))
        return f"{url}?token={token}", token, expires

