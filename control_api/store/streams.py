"""Stream keys, live streams, viewers, schedules and recordings."""

from __future__ import annotations

import json
import secrets
from typing import Any

from control_api.db import Database, Row
from control_api.errors import Conflict, NotFound
from control_api.security import new_id, new_secret, secret_hash
from control_api.store import audit
from control_api.store.audit import Actor
from engine.geo import GeoRule

_STREAM_SELECT = (
    "SELECT s.*, u.username, "
    "(SELECT COUNT(*) FROM viewers v WHERE v.stream_id = s.id AND v.left_at IS NULL) AS viewers "
    "FROM live_streams s JOIN users u ON u.id = s.user_id"
)


def stream_view(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"], "user_id": row["user_id"], "username": row["username"], "title": row["title"],
        "status": row["status"], "playback_id": row["playback_id"], "visibility": row["visibility"],
        "price_cents": row["price_cents"], "recording": bool(row["recording"]),
        "ladder": json.loads(row["ladder"]), "effects": json.loads(row["effects"]),
        "viewers": int(row["viewers"]), "peak_viewers": row["peak_viewers"], "total_views": row["total_views"],
        "created_at": row["created_at"], "started_at": row["started_at"], "ended_at": row["ended_at"],
        "ended_reason": row["ended_reason"], "protection": row["protection"], "geo": _geo_view(row),
    }


def geo_rule(row: Row) -> GeoRule | None:
    """The stream's geographic rule, ``None`` when it has none."""
    mode = row["geo_mode"]
    if mode is None:
        return None
    return GeoRule.parse(mode, json.loads(row["geo_countries"]))


def _geo_view(row: Row) -> dict[str, Any] | None:
    rule = geo_rule(row)
    return rule.to_json() if rule is not None else None


def geo_columns(value: Any) -> tuple[str | None, str]:
    """``(geo_mode, geo_countries)`` for a request's ``geo`` (already
    checked with :meth:`engine.geo.GeoRule.from_json`)."""
    rule = GeoRule.from_json(value)
    if rule is None:
        return None, "[]"
    return rule.mode.value, json.dumps(sorted(rule.countries))


# -- stream keys ---------------------------------------------------------------------
def key_view(row: Row, key: str | None) -> dict[str, Any]:
    return {"id": row["id"], "created_at": row["created_at"], "rtmp_app": "live", "stream_key": key,
            "key_hint": row["key_hint"]}


async def current_key(db: Database, user_id: str) -> Row | None:
    return await db.fetchrow(
        "SELECT * FROM stream_keys WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC LIMIT 1",
        user_id,
    )


async def new_key(db: Database, actor: Actor, user_id: str, now: float) -> tuple[Row, str]:
    """Revoke the user's keys and issue a fresh one; the plaintext is returned
    here only, and only its hash is kept."""
    key = new_secret("sk")
    key_id = new_id()
    async with db.transaction() as tx:
        revoked = await tx.execute(
            "UPDATE stream_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL", user_id, now
        )
        await tx.execute(
            "INSERT INTO stream_keys (id, user_id, key_hash, key_hint, created_at) VALUES ($1, $2, $3, $4, $5)",
            key_id, user_id, secret_hash(key), "..." + key[-4:], now,
        )
        await audit.record(tx, actor, "stream_key.regenerate" if revoked else "stream_key.create", "user", user_id,
                           now, {"key_id": key_id})
        row = await tx.fetchrow("SELECT * FROM stream_keys WHERE id = $1", key_id)
    assert row is not None
    return row, key


async def key_owner(db: Database, key: str) -> Row | None:
    """The user whose active stream key this is."""
    return await db.fetchrow(
        "SELECT u.* FROM stream_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        secret_hash(key),
    )


# -- live streams ---------------------------------------------------------------------
async def get_stream(db: Database, stream_id: str) -> Row:
    row = await db.fetchrow(f"{_STREAM_SELECT} WHERE s.id = $1", stream_id)
    if row is None:
        raise NotFound(f"no stream {stream_id!r}")
    return row


async def by_playback_id(db: Database, playback_id: str) -> Row | None:
    return await db.fetchrow("SELECT * FROM live_streams WHERE playback_id = $1", playback_id)


async def open_stream(db: Database, user_id: str) -> Row | None:
    """The user's stream that has not ended (pending or live), if any."""
    return await db.fetchrow(
        f"{_STREAM_SELECT} WHERE s.user_id = $1 AND s.status <> 'ended' ORDER BY s.created_at DESC LIMIT 1", user_id
    )


async def list_streams(db: Database, status: str, limit: int, offset: int) -> list[Row]:
    return await db.fetch(
        f"{_STREAM_SELECT} WHERE s.status = $1 ORDER BY s.started_at DESC, s.id LIMIT $2 OFFSET $3",
        status, limit, offset,
    )


async def create_stream(db: Database, actor: Actor, user_id: str, fields: dict[str, Any], now: float) -> Row:
    stream_id = new_id()
    geo_mode, geo_countries = geo_columns(fields.get("geo"))
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO live_streams (id, user_id, title, status, playback_id, visibility, price_cents, recording, "
            "ladder, effects, created_at, protection, geo_mode, geo_countries) "
            "VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            stream_id, user_id, fields["title"], secrets.token_hex(10), fields.get("visibility", "free"),
            fields.get("price_cents", 0), fields.get("recording", False), json.dumps(fields.get("ladder", [])),
            json.dumps(fields.get("effects", {})), now, fields.get("protection"), geo_mode, geo_countries,
        )
        await audit.record(tx, actor, "stream.create", "stream", stream_id, now, {"title": fields["title"]})
    return await get_stream(db, stream_id)


async def update_stream(db: Database, actor: Actor, stream_id: str, fields: dict[str, Any], now: float) -> Row:
    columns = {
        "title": fields.get("title"), "visibility": fields.get("visibility"), "price_cents": fields.get("price_cents"),
        "recording": fields.get("recording"),
        "ladder": json.dumps(fields["ladder"]) if "ladder" in fields else None,
        "effects": json.dumps(fields["effects"]) if "effects" in fields else None,
    }
    changes = {k: v for k, v in columns.items() if v is not None}
    if "protection" in fields:
        changes["protection"] = fields["protection"]  # null is a value here: back to the engine's default
    if "geo" in fields:
        changes["geo_mode"], changes["geo_countries"] = geo_columns(fields["geo"])  # null: no rule
    if changes:
        cols = sorted(changes)
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
        async with db.transaction() as tx:
            await tx.execute(f"UPDATE live_streams SET {sets} WHERE id = $1", stream_id, *[changes[c] for c in cols])
            await audit.record(tx, actor, "stream.update", "stream", stream_id, now, {"fields": cols})
    return await get_stream(db, stream_id)


async def mark_live(db: Database, actor: Actor, stream_id: str, now: float) -> bool:
    """Pending to live; ``False`` when it was not pending (a reconnect)."""
    async with db.transaction() as tx:
        n = await tx.execute(
            "UPDATE live_streams SET status = 'live', started_at = $2 WHERE id = $1 AND status = 'pending'",
            stream_id, now,
        )
        if n:
            await audit.record(tx, actor, "stream.live", "stream", stream_id, now)
    return n == 1


async def mark_ended(db: Database, actor: Actor, stream_id: str, reason: str, now: float) -> str | None:
    """End a stream that has not ended; returns the status it had (``live``
    or ``pending``) or ``None`` when it had already ended. Open viewer
    sessions are closed with it."""
    async with db.transaction() as tx:
        before = await tx.fetchval("SELECT status FROM live_streams WHERE id = $1", stream_id)
        if before is None or before == "ended":
            return None
        await tx.execute(
            "UPDATE live_streams SET status = 'ended', ended_at = $2, ended_reason = $3 WHERE id = $1",
            stream_id, now, reason,
        )
        await tx.execute("UPDATE viewers SET left_at = $2 WHERE stream_id = $1 AND left_at IS NULL", stream_id, now)
        await audit.record(tx, actor, "stream.end", "stream", stream_id, now, {"reason": reason})
    return str(before)



async def live_streams(db: Database) -> list[Row]:
    """``id`` and ``playback_id`` of every stream the store lists as live."""
    return await db.fetch("SELECT id, playback_id FROM live_streams WHERE status = 'live' ORDER BY started_at, id")


async def close_stale_viewers(db: Database, now: float) -> int:
    """Close viewer sessions left open on streams that are not live (after a
    crash nothing closed them); returns how many."""
    return await db.execute(
        "UPDATE viewers SET left_at = $1 WHERE left_at IS NULL AND stream_id IN "
        "(SELECT id FROM live_streams WHERE status <> 'live')",
        now,
    )

# -- viewers ---------------------------------------------------------------------
async def join(db: Database, stream_id: str, user_id: str, remote: str, now: float) -> str:
    """Open (or reuse) the viewer's session on a stream and keep the peak.

    No explicit transaction on purpose: the counters live on the stream's
    one row, and an UPDATE that commits on its own holds that row's lock for
    one statement instead of across round trips, which is what lets many
    viewers join at once on PostgreSQL."""
    existing = await db.fetchval(
        "SELECT id FROM viewers WHERE stream_id = $1 AND user_id = $2 AND left_at IS NULL", stream_id, user_id
    )
    if existing is not None:
        return str(existing)
    viewer_id = new_id()
    await db.execute(
        "INSERT INTO viewers (id, stream_id, user_id, joined_at, remote) VALUES ($1, $2, $3, $4, $5)",
        viewer_id, stream_id, user_id, now, remote,
    )
    open_count = "(SELECT COUNT(*) FROM viewers WHERE stream_id = $1 AND left_at IS NULL)"
    await db.execute(
        f"UPDATE live_streams SET total_views = total_views + 1, peak_viewers = CASE WHEN peak_viewers < "
        f"{open_count} THEN {open_count} ELSE peak_viewers END WHERE id = $1",
        stream_id,
    )
    return viewer_id


async def leave(db: Database, stream_id: str, user_id: str, now: float) -> bool:
    return await db.execute(
        "UPDATE viewers SET left_at = $3 WHERE stream_id = $1 AND user_id = $2 AND left_at IS NULL",
        stream_id, user_id, now,
    ) > 0


async def list_viewers(db: Database, stream_id: str, limit: int, offset: int) -> list[Row]:
    return await db.fetch(
        "SELECT v.user_id, u.username, v.joined_at FROM viewers v JOIN users u ON u.id = v.user_id "
        "WHERE v.stream_id = $1 AND v.left_at IS NULL ORDER BY v.joined_at, v.id LIMIT $2 OFFSET $3",
        stream_id, limit, offset,
    )


# -- schedules ---------------------------------------------------------------------
async def create_schedule(db: Database, actor: Actor, user_id: str, fields: dict[str, Any], now: float) -> Row:
    sched_id = new_id()
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO stream_schedules (id, user_id, title, description, starts_at, duration_minutes, visibility, "
            "price_cents, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            sched_id, user_id, fields["title"], fields.get("description", ""), float(fields["starts_at"]),
            fields.get("duration_minutes", 60), fields.get("visibility", "free"), fields.get("price_cents", 0), now,
        )
        await audit.record(tx, actor, "schedule.create", "schedule", sched_id, now)
    row = await db.fetchrow(
        "SELECT c.*, u.username FROM stream_schedules c JOIN users u ON u.id = c.user_id WHERE c.id = $1", sched_id
    )
    assert row is not None
    return row


async def list_schedules(
    db: Database, after: float, limit: int, offset: int, user_id: str | None = None
) -> list[Row]:
    base = "SELECT c.*, u.username FROM stream_schedules c JOIN users u ON u.id = c.user_id WHERE c.starts_at >= $1"
    if user_id is None:
        return await db.fetch(f"{base} ORDER BY c.starts_at, c.id LIMIT $2 OFFSET $3", after, limit, offset)
    return await db.fetch(
        f"{base} AND c.user_id = $4 ORDER BY c.starts_at, c.id LIMIT $2 OFFSET $3", after, limit, offset, user_id
    )


# -- recordings ---------------------------------------------------------------------
async def add_recording(
    db: Database, actor: Actor, stream_id: str, uri: str, duration_s: float, size_bytes: int, now: float,
    *, recording_id: str | None = None, interrupted: bool = False, segments: int = 0,
    stop_reason: str | None = None,
) -> Row:
    """Insert a finished recording; ``recording_id`` is the recorder's own id
    (the asset id its files are stored under) when it reports one."""
    rec_id = recording_id or new_id()
    if recording_id is not None and await db.fetchval("SELECT id FROM recordings WHERE id = $1", rec_id):
        raise Conflict(f"a recording {rec_id!r} exists already", kind="recording-exists")
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO recordings (id, stream_id, uri, duration_s, size_bytes, created_at, interrupted, segments, "
            "stop_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            rec_id, stream_id, uri, float(duration_s), size_bytes, now, interrupted, segments, stop_reason,
        )
        await audit.record(tx, actor, "recording.ready", "stream", stream_id, now, {"recording_id": rec_id})
        row = await tx.fetchrow("SELECT * FROM recordings WHERE id = $1", rec_id)
    assert row is not None
    return recording_view(row)


async def get_recording(db: Database, recording_id: str) -> Row | None:
    row = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", recording_id)
    return recording_view(row) if row is not None else None


async def delete_recording(db: Database, actor: Actor, recording_id: str, now: float) -> bool:
    async with db.transaction() as tx:
        row = await tx.fetchrow("SELECT stream_id FROM recordings WHERE id = $1", recording_id)
        if row is None:
            return False
        await tx.execute("DELETE FROM recordings WHERE id = $1", recording_id)
        await audit.record(tx, actor, "recording.delete", "stream", row["stream_id"], now,
                           {"recording_id": recording_id})
    return True


def recording_view(row: Row) -> dict[str, Any]:
    view = dict(row)
    view["interrupted"] = bool(view.get("interrupted"))
    return view


async def list_recordings(db: Database, stream_id: str, limit: int, offset: int) -> list[Row]:
    rows = await db.fetch(
        "SELECT * FROM recordings WHERE stream_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3",
        stream_id, limit, offset,
    )
    return [recording_view(r) for r in rows]
