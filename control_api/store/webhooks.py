"""Webhook endpoints and the record of every delivery attempt."""

from __future__ import annotations

import secrets
from typing import Any

from control_api.db import Database, Row
from control_api.errors import NotFound
from control_api.security import new_id
from control_api.store import audit
from control_api.store.audit import Actor
from drm.keystore import Sealer


def endpoint_view(row: Row, secret: str | None = None) -> dict[str, Any]:
    return {"id": row["id"], "url": row["url"], "events": row["events"].split(","), "active": bool(row["active"]),
            "created_at": row["created_at"], "secret": secret}


def delivery_view(row: Row) -> dict[str, Any]:
    keys = ("id", "endpoint_id", "event", "status", "attempts", "last_status", "last_error", "next_attempt_at",
            "created_at", "delivered_at")
    return {k: row[k] for k in keys}


def _context(endpoint_id: str) -> str:
    return f"webhook_endpoints.secret:{endpoint_id}"


def signing_secret(row: Row, sealer: Sealer, id_column: str = "id") -> str:
    """An endpoint's signing secret, opened from its sealed column."""
    return sealer.open(str(row["secret"]), _context(str(row[id_column])))


async def create_endpoint(db: Database, actor: Actor, url: str, events: list[str], now: float,
                          sealer: Sealer) -> tuple[Row, str]:
    """Register an endpoint; returns its row and the signing secret, which is
    stored sealed and shown only this once."""
    endpoint_id, secret = new_id(), "whsec_" + secrets.token_urlsafe(32)
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO webhook_endpoints (id, url, secret, events, active, created_by, created_at) "
            "VALUES ($1, $2, $3, $4, 1, $5, $6)",
            endpoint_id, url, sealer.seal(secret, _context(endpoint_id)), ",".join(events),
            actor.id if actor.kind == "user" else None, now,
        )
        await audit.record(tx, actor, "webhook.create", "webhook", endpoint_id, now, {"url": url, "events": events})
        row = await tx.fetchrow("SELECT * FROM webhook_endpoints WHERE id = $1", endpoint_id)
    assert row is not None
    return row, secret


async def list_endpoints(db: Database, limit: int, offset: int) -> list[Row]:
    return await db.fetch(
        "SELECT * FROM webhook_endpoints WHERE active = 1 ORDER BY created_at, id LIMIT $1 OFFSET $2", limit, offset
    )


async def endpoints_for(db: Database, event: str) -> list[Row]:
    rows = await db.fetch("SELECT * FROM webhook_endpoints WHERE active = 1")
    return [r for r in rows if event in r["events"].split(",")]


async def deactivate_endpoint(db: Database, actor: Actor, endpoint_id: str, now: float) -> None:
    async with db.transaction() as tx:
        if await tx.execute("UPDATE webhook_endpoints SET active = 0 WHERE id = $1 AND active = 1", endpoint_id) == 0:
            raise NotFound(f"no webhook endpoint {endpoint_id!r}")
        await audit.record(tx, actor, "webhook.delete", "webhook", endpoint_id, now)


async def add_delivery(db: Database, delivery_id: str, endpoint_id: str, event: str, payload: str, now: float) -> str:
    await db.execute(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event, payload, status, next_attempt_at, created_at) "
        "VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
        delivery_id, endpoint_id, event, payload, now,
    )
    return delivery_id


async def get_delivery(db: Database, delivery_id: str) -> Row | None:
    return await db.fetchrow(
        "SELECT d.*, e.url, e.secret, e.active FROM webhook_deliveries d "
        "JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = $1",
        delivery_id,
    )


async def pending_deliveries(db: Database) -> list[Row]:
    return await db.fetch(
        "SELECT id, next_attempt_at FROM webhook_deliveries WHERE status = 'pending' ORDER BY next_attempt_at"
    )


async def record_attempt(
    db: Database, delivery_id: str, *, status: str, http_status: int | None, error: str | None,
    next_attempt_at: float | None, now: float,
) -> None:
    await db.execute(
        "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, last_status = $3, last_error = $4, "
        "next_attempt_at = $5, delivered_at = $6 WHERE id = $1",
        delivery_id, status, http_status, error, next_attempt_at, now if status == "delivered" else None,
    )


async def list_deliveries(db: Database, endpoint_id: str, limit: int, offset: int) -> list[Row]:
    return await db.fetch(
        "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
        endpoint_id, limit, offset,
    )


async def seal_clear_secrets(db: Database, sealer: Sealer) -> int:
    """Seal signing secrets stored in clear by earlier versions; returns how
    many were sealed."""
    rows = await db.fetch("SELECT id, secret FROM webhook_endpoints")
    sealed = 0
    for row in rows:
        if not Sealer.is_sealed(row["secret"]):
            sealed += await db.execute(
                "UPDATE webhook_endpoints SET secret = $2 WHERE id = $1 AND secret = $3",
                row["id"], sealer.seal(row["secret"], _context(row["id"])), row["secret"],
            )
    return sealed
