"""Recordings as VOD assets: read, list, rename, price and delete them.

A recording's id is its asset id (``/vod/ID/``). Its visibility and price
are its own when set, the stream's otherwise; a pay-per-view unlock of the
stream opens its recordings too.
"""

from __future__ import annotations

from typing import Any

from control_api.db import Database, Row
from control_api.errors import NotFound
from control_api.store import audit
from control_api.store.audit import Actor

_SELECT = (
    "SELECT r.id, r.stream_id, r.uri, r.duration_s, r.size_bytes, r.created_at, r.title, "
    "COALESCE(r.visibility, s.visibility) AS visibility, COALESCE(r.price_cents, s.price_cents) AS price_cents, "
    "s.user_id AS user_id, s.playback_id AS playback_id, s.title AS stream_title, "
    "s.geo_mode AS geo_mode, s.geo_countries AS geo_countries "
    "FROM recordings r JOIN live_streams s ON s.id = r.stream_id"
)


def recording_view(row: Row) -> dict[str, Any]:
    """What the API shows of a recording."""
    return {
        "id": row["id"], "stream_id": row["stream_id"], "user_id": row["user_id"],
        "title": row["title"] if row["title"] is not None else row["stream_title"],
        "visibility": row["visibility"], "price_cents": row["price_cents"], "duration_s": row["duration_s"],
        "size_bytes": row["size_bytes"], "created_at": row["created_at"],
        "playlist": f"/vod/{row['id']}/index.m3u8", "download": f"/vod/{row['id']}/download.mp4",
        "poster": f"/vod/{row['id']}/poster.jpg",
    }


def access_row(row: Row) -> dict[str, Any]:
    """The recording in the shape :func:`control_api.store.commerce.check_access`
    reads (its stream's id: the stream's unlocks open it)."""
    return {"id": row["stream_id"], "user_id": row["user_id"], "visibility": row["visibility"],
            "price_cents": row["price_cents"]}


async def find(db: Database, recording_id: str) -> Row | None:
    return await db.fetchrow(f"{_SELECT} WHERE r.id = $1", recording_id)


async def get(db: Database, recording_id: str) -> Row:
    row = await find(db, recording_id)
    if row is None:
        raise NotFound(f"no recording {recording_id!r}")
    return row


async def list_for(db: Database, user_id: str | None, limit: int, offset: int) -> list[Row]:
    """Recordings of ``user_id``'s streams (every recording when ``None``),
    oldest first."""
    if user_id is None:
        return await db.fetch(f"{_SELECT} ORDER BY r.created_at, r.id LIMIT $1 OFFSET $2", limit, offset)
    return await db.fetch(
        f"{_SELECT} WHERE s.user_id = $1 ORDER BY r.created_at, r.id LIMIT $2 OFFSET $3", user_id, limit, offset
    )


async def update(db: Database, actor: Actor, recording_id: str, fields: dict[str, Any], now: float) -> Row:
    """Set the title, visibility or price (``None`` for visibility or price:
    back to the stream's)."""
    changes = {k: fields[k] for k in ("title", "visibility", "price_cents") if k in fields}
    if changes:
        cols = sorted(changes)
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
        async with db.transaction() as tx:
            n = await tx.execute(f"UPDATE recordings SET {sets} WHERE id = $1", recording_id,
                                 *[changes[c] for c in cols])
            if not n:
                raise NotFound(f"no recording {recording_id!r}")
            await audit.record(tx, actor, "recording.update", "recording", recording_id, now, {"fields": cols})
    return await get(db, recording_id)


async def delete(db: Database, actor: Actor, recording_id: str, now: float) -> None:
    async with db.transaction() as tx:
        n = await tx.execute("DELETE FROM recordings WHERE id = $1", recording_id)
        if not n:
            raise NotFound(f"no recording {recording_id!r}")
        await audit.record(tx, actor, "recording.delete", "recording", recording_id, now, {})
