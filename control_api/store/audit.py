"""The audit log: who changed what, when. Written inside the same
transaction as the change it describes, so neither exists without the
other."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from control_api.db import Database, Row
from control_api.security import new_id


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: ``kind`` is ``user``, ``api_key`` or ``system``
    (the engine itself, e.g. a publish starting)."""

    kind: str
    id: str | None
    remote: str = ""


SYSTEM = Actor("system", None)


async def record(
    db: Database, actor: Actor, action: str, target_kind: str, target_id: str | None, now: float,
    detail: dict[str, Any] | None = None,
) -> None:
    await db.execute(
        "INSERT INTO audit_log (id, actor_kind, actor_id, action, target_kind, target_id, detail, remote, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        new_id(), actor.kind, actor.id, action, target_kind, target_id, json.dumps(detail or {}), actor.remote, now,
    )


async def list_entries(db: Database, limit: int, offset: int, target_id: str | None = None) -> list[Row]:
    if target_id is None:
        return await db.fetch(
            "SELECT * FROM audit_log ORDER BY created_at DESC, id LIMIT $1 OFFSET $2", limit, offset
        )
    return await db.fetch(
        "SELECT * FROM audit_log WHERE target_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
        target_id, limit, offset,
    )


def audit_view(row: Row) -> dict[str, Any]:
    return {**row, "detail": json.loads(row["detail"])}
