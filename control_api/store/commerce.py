"""Gifts, subscriptions and pay-per-view unlocks, and the access decision
they feed: who may watch which stream."""

from __future__ import annotations

from typing import Any

from control_api.db import Database, IntegrityError, Row
from control_api.errors import Conflict, Forbidden, NotFound
from control_api.security import new_id
from control_api.store import audit
from control_api.store.audit import Actor


# -- gifts ---------------------------------------------------------------------
def gift_view(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "price_cents": row["price_cents"], "active": bool(row["active"])}


def gift_send_view(row: Row) -> dict[str, Any]:
    keys = ("id", "stream_id", "sender_id", "username", "gift_id", "quantity", "amount_cents", "message", "created_at")
    return {k: row[k] for k in keys}


async def catalogue(db: Database, limit: int, offset: int) -> list[Row]:
    return await db.fetch(
        "SELECT * FROM gifts WHERE active = 1 ORDER BY price_cents, id LIMIT $1 OFFSET $2", limit, offset
    )


async def add_gift(db: Database, actor: Actor, gift_id: str, name: str, price_cents: int, now: float) -> Row:
    async with db.transaction() as tx:
        try:
            await tx.execute(
                "INSERT INTO gifts (id, name, price_cents, active) VALUES ($1, $2, $3, 1)", gift_id, name, price_cents
            )
        except IntegrityError as e:
            raise Conflict(f"a gift with id {gift_id!r} or name {name!r} exists") from e
        await audit.record(tx, actor, "gift.create", "gift", gift_id, now, {"price_cents": price_cents})
        row = await tx.fetchrow("SELECT * FROM gifts WHERE id = $1", gift_id)
    assert row is not None
    return row


async def send_gift(
    db: Database, actor: Actor, stream_id: str, sender_id: str, gift_id: str, quantity: int, message: str, now: float
) -> Row:
    send_id = new_id()
    async with db.transaction() as tx:
        price = await tx.fetchval("SELECT price_cents FROM gifts WHERE id = $1 AND active = 1", gift_id)
        if price is None:
            raise NotFound(f"no gift {gift_id!r} in the catalogue")
        await tx.execute(
            "INSERT INTO gift_sends (id, stream_id, sender_id, gift_id, quantity, amount_cents, message, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            send_id, stream_id, sender_id, gift_id, quantity, int(price) * quantity, message, now,
        )
        await audit.record(tx, actor, "gift.send", "stream", stream_id, now, {"gift_id": gift_id, "quantity": quantity})
        row = await tx.fetchrow(
            "SELECT g.*, u.username FROM gift_sends g JOIN users u ON u.id = g.sender_id WHERE g.id = $1", send_id
        )
    assert row is not None
    return row


async def leaderboard(db: Database, stream_id: str, limit: int) -> tuple[list[Row], list[Row], int]:
    """``(top senders, recent sends, total)`` for a stream."""
    top = await db.fetch(
        "SELECT g.sender_id AS user_id, u.username, SUM(g.amount_cents) AS total_cents, SUM(g.quantity) AS gifts "
        "FROM gift_sends g JOIN users u ON u.id = g.sender_id WHERE g.stream_id = $1 "
        "GROUP BY g.sender_id, u.username ORDER BY total_cents DESC, u.username LIMIT $2",
        stream_id, limit,
    )
    recent = await db.fetch(
        "SELECT g.*, u.username FROM gift_sends g JOIN users u ON u.id = g.sender_id WHERE g.stream_id = $1 "
        "ORDER BY g.created_at DESC, g.id LIMIT $2",
        stream_id, limit,
    )
    total = await db.fetchval("SELECT COALESCE(SUM(amount_cents), 0) FROM gift_sends WHERE stream_id = $1", stream_id)
    for row in top:
        row["total_cents"], row["gifts"] = int(row["total_cents"]), int(row["gifts"])
    return top, recent, int(total)


# -- subscriptions ---------------------------------------------------------------------
async def subscribe(
    db: Database, actor: Actor, fan_id: str, creator_id: str, tier: str, now: float, period_s: float
) -> Row:
    """Start (or renew) a fan's subscription to a creator."""
    async with db.transaction() as tx:
        role = await tx.fetchval("SELECT role FROM users WHERE id = $1", creator_id)
        if role != "creator":
            raise NotFound(f"no creator {creator_id!r}")
        if await tx.fetchval("SELECT id FROM users WHERE id = $1", fan_id) is None:
            raise NotFound(f"no user {fan_id!r}")
        if fan_id == creator_id:
            raise Conflict("a creator cannot subscribe to themselves")
        existing = await tx.fetchrow(
            "SELECT * FROM subscriptions WHERE fan_id = $1 AND creator_id = $2 AND status = 'active' "
            "AND current_period_end > $3",
            fan_id, creator_id, now,
        )
        if existing is not None:
            sub_id = existing["id"]
            await tx.execute("UPDATE subscriptions SET tier = $2 WHERE id = $1", sub_id, tier)
        else:
            sub_id = new_id()
            await tx.execute(
                "INSERT INTO subscriptions (id, fan_id, creator_id, tier, status, current_period_end, created_at) "
                "VALUES ($1, $2, $3, $4, 'active', $5, $6)",
                sub_id, fan_id, creator_id, tier, now + period_s, now,
            )
        await audit.record(tx, actor, "subscription.start", "subscription", sub_id, now,
                           {"fan_id": fan_id, "creator_id": creator_id, "tier": tier})
        row = await tx.fetchrow("SELECT * FROM subscriptions WHERE id = $1", sub_id)
    assert row is not None
    return row


async def cancel_subscription(db: Database, actor: Actor, sub_id: str, fan_id: str | None, now: float) -> Row:
    """Cancel now; ``fan_id`` restricts it to the fan's own subscriptions."""
    async with db.transaction() as tx:
        row = await tx.fetchrow("SELECT * FROM subscriptions WHERE id = $1", sub_id)
        if row is None or (fan_id is not None and row["fan_id"] != fan_id):
            raise NotFound(f"no subscription {sub_id!r}")
        await tx.execute(
            "UPDATE subscriptions SET status = 'cancelled', cancelled_at = $2 WHERE id = $1 AND status = 'active'",
            sub_id, now,
        )
        await audit.record(tx, actor, "subscription.cancel", "subscription", sub_id, now)
        row = await tx.fetchrow("SELECT * FROM subscriptions WHERE id = $1", sub_id)
    assert row is not None
    return row


async def list_subscriptions(db: Database, fan_id: str, limit: int, offset: int) -> list[Row]:
    return await db.fetch(
        "SELECT * FROM subscriptions WHERE fan_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
        fan_id, limit, offset,
    )


# -- pay-per-view ---------------------------------------------------------------------
async def unlock(db: Database, actor: Actor, stream: Row, user_id: str, now: float) -> Row:
    """Record a pay-per-view purchase at the stream's price (idempotent)."""
    if stream["visibility"] != "pay_per_view":
        raise Conflict("this stream is not pay-per-view", kind="not-pay-per-view")
    async with db.transaction() as tx:
        row = await tx.fetchrow(
            "SELECT * FROM ppv_unlocks WHERE stream_id = $1 AND user_id = $2", stream["id"], user_id
        )
        if row is None:
            if await tx.fetchval("SELECT id FROM users WHERE id = $1", user_id) is None:
                raise NotFound(f"no user {user_id!r}")
            unlock_id = new_id()
            await tx.execute(
                "INSERT INTO ppv_unlocks (id, stream_id, user_id, amount_cents, created_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                unlock_id, stream["id"], user_id, stream["price_cents"], now,
            )
            await audit.record(tx, actor, "ppv.unlock", "stream", stream["id"], now,
                               {"user_id": user_id, "amount_cents": stream["price_cents"]})
            row = await tx.fetchrow("SELECT * FROM ppv_unlocks WHERE id = $1", unlock_id)
    assert row is not None
    return row


# -- the access decision ---------------------------------------------------------------------
async def check_access(db: Database, stream: Row, user_id: str, role: str, now: float) -> None:
    """Return when the user may watch the stream, raise :class:`Forbidden`
    with a problem kind that tells the app what to offer (subscribe or buy)."""
    if stream["visibility"] == "free" or role == "admin" or stream["user_id"] == user_id:
        return
    if stream["visibility"] == "subscribers":
        found = await db.fetchval(
            "SELECT id FROM subscriptions WHERE fan_id = $1 AND creator_id = $2 AND status = 'active' "
            "AND current_period_end > $3 LIMIT 1",
            user_id, stream["user_id"], now,
        )
        if found is None:
            raise Forbidden("this stream is for subscribers; subscribe to the creator first",
                            kind="subscription-required")
        return
    found = await db.fetchval(
        "SELECT id FROM ppv_unlocks WHERE stream_id = $1 AND user_id = $2", stream["id"], user_id
    )
    if found is None:
        raise Forbidden(f"this stream is pay-per-view ({stream['price_cents']} cents); unlock it first",
                        kind="payment-required")
