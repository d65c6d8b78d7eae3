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
    """Record a paid gift (a tip) from ``sender_id`` on a stream."""
    async with db.transaction() as tx:
        return await send_gift_in(tx, actor, stream_id, sender_id, gift_id, quantity, message, now)


async def send_gift_in(
    tx: Database, actor: Actor, stream_id: str, sender_id: str, gift_id: str, quantity: int, message: str, now: float
) -> Row:
    """:func:`send_gift` inside the caller's transaction."""
    send_id = new_id()
    price = await tx.fetchval("SELECT price_cents FROM gifts WHERE id = $1 AND active = 1", gift_id)
    if price is None:
        raise NotFound(f"no gift {gift_id!r} in the catalogue")
    if await tx.fetchval("SELECT id FROM users WHERE id = $1", sender_id) is None:
        raise NotFound(f"no user {sender_id!r}")
    await tx.execute(
        "INSERT INTO gift_sends (id, stream_id, sender_id, gift_id, quantity, amount_cents, message, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        send_id, stream_id, sender_id, gift_id, quantity, int(price) * quantity, message, now,
    )
    await audit.record(tx, actor, "gift.send", "stream", stream_id, now,
                       {"gift_id": gift_id, "quantity": quantity, "sender_id": sender_id})
    row = await tx.fetchrow(
        "SELECT g.*, u.username FROM gift_sends g JOIN users u ON u.id = g.sender_id WHERE g.id = $1", send_id
    )
    assert row is not None
    return row


async def refund_gift_in(tx: Database, actor: Actor, send_id: str, now: float) -> Row | None:
    """Mark a gift refunded (it leaves the leaderboard); ``None`` when it was
    already refunded or does not exist."""
    n = await tx.execute("UPDATE gift_sends SET refunded_at = $2 WHERE id = $1 AND refunded_at IS NULL", send_id, now)
    if not n:
        return None
    row = await tx.fetchrow("SELECT * FROM gift_sends WHERE id = $1", send_id)
    assert row is not None
    await audit.record(tx, actor, "gift.refund", "stream", row["stream_id"], now, {"gift_send_id": send_id})
    return row


async def leaderboard(db: Database, stream_id: str, limit: int) -> tuple[list[Row], list[Row], int]:
    """``(top senders, recent sends, total)`` for a stream."""
    top = await db.fetch(
        "SELECT g.sender_id AS user_id, u.username, SUM(g.amount_cents) AS total_cents, SUM(g.quantity) AS gifts "
        "FROM gift_sends g JOIN users u ON u.id = g.sender_id WHERE g.stream_id = $1 AND g.refunded_at IS NULL "
        "GROUP BY g.sender_id, u.username ORDER BY total_cents DESC, u.username LIMIT $2",
        stream_id, limit,
    )
    recent = await db.fetch(
        "SELECT g.*, u.username FROM gift_sends g JOIN users u ON u.id = g.sender_id "
        "WHERE g.stream_id = $1 AND g.refunded_at IS NULL ORDER BY g.created_at DESC, g.id LIMIT $2",
        stream_id, limit,
    )
    total = await db.fetchval(
        "SELECT COALESCE(SUM(amount_cents), 0) FROM gift_sends WHERE stream_id = $1 AND refunded_at IS NULL", stream_id
    )
    for row in top:
        row["total_cents"], row["gifts"] = int(row["total_cents"]), int(row["gifts"])
    return top, recent, int(total)


# -- subscriptions ---------------------------------------------------------------------
async def subscribe(
    db: Database, actor: Actor, fan_id: str, creator_id: str, tier: str, now: float, period_s: float
) -> Row:
    """Start (or renew) a fan's subscription to a creator."""
    async with db.transaction() as tx:
        return await subscribe_in(tx, actor, fan_id, creator_id, tier, now, period_s)


async def subscribe_in(
    tx: Database, actor: Actor, fan_id: str, creator_id: str, tier: str, now: float, period_s: float
) -> Row:
    """:func:`subscribe` inside the caller's transaction. A paid period
    extends an active subscription by ``period_s``."""
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
        await tx.execute("UPDATE subscriptions SET tier = $2, current_period_end = $3 WHERE id = $1",
                         sub_id, tier, float(existing["current_period_end"]) + period_s)
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


async def cancel_subscription(db: Database, actor: Actor, sub_id: str, fan_id: str | None,
                              now: float) -> tuple[Row, bool]:
    """Cancel now; ``fan_id`` restricts it to the fan's own subscriptions.
    Returns the row and whether it was active until now."""
    async with db.transaction() as tx:
        return await cancel_subscription_in(tx, actor, sub_id, fan_id, now)


async def cancel_subscription_in(tx: Database, actor: Actor, sub_id: str, fan_id: str | None, now: float,
                                 action: str = "subscription.cancel") -> tuple[Row, bool]:
    """:func:`cancel_subscription` inside the caller's transaction."""
    row = await tx.fetchrow("SELECT * FROM subscriptions WHERE id = $1", sub_id)
    if row is None or (fan_id is not None and row["fan_id"] != fan_id):
        raise NotFound(f"no subscription {sub_id!r}")
    n = await tx.execute(
        "UPDATE subscriptions SET status = 'cancelled', cancelled_at = $2 WHERE id = $1 AND status = 'active'",
        sub_id, now,
    )
    await audit.record(tx, actor, action, "subscription", sub_id, now)
    row = await tx.fetchrow("SELECT * FROM subscriptions WHERE id = $1", sub_id)
    assert row is not None
    return row, bool(n)


async def active_subscription_in(tx: Database, fan_id: str, creator_id: str, now: float) -> Row | None:
    return await tx.fetchrow(
        "SELECT * FROM subscriptions WHERE fan_id = $1 AND creator_id = $2 AND status = 'active' "
        "AND current_period_end > $3 ORDER BY created_at DESC LIMIT 1",
        fan_id, creator_id, now,
    )


async def list_subscriptions(db: Database, fan_id: str, limit: int, offset: int) -> list[Row]:
    return await db.fetch(
        "SELECT * FROM subscriptions WHERE fan_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
        fan_id, limit, offset,
    )


# -- pay-per-view ---------------------------------------------------------------------
async def unlock(db: Database, actor: Actor, stream: Row, user_id: str, now: float) -> Row:
    """Record a pay-per-view purchase at the stream's price (idempotent)."""
    async with db.transaction() as tx:
        return await unlock_in(tx, actor, stream, user_id, now)


async def unlock_in(tx: Database, actor: Actor, stream: Row, user_id: str, now: float) -> Row:
    """:func:`unlock` inside the caller's transaction; a refunded unlock
    bought again is restored."""
    if stream["visibility"] != "pay_per_view":
        raise Conflict("this stream is not pay-per-view", kind="not-pay-per-view")
    row = await tx.fetchrow("SELECT * FROM ppv_unlocks WHERE stream_id = $1 AND user_id = $2", stream["id"], user_id)
    if row is not None and row["refunded_at"] is None:
        return row
    if row is None:
        if await tx.fetchval("SELECT id FROM users WHERE id = $1", user_id) is None:
            raise NotFound(f"no user {user_id!r}")
        unlock_id = new_id()
        await tx.execute(
            "INSERT INTO ppv_unlocks (id, stream_id, user_id, amount_cents, created_at) VALUES ($1, $2, $3, $4, $5)",
            unlock_id, stream["id"], user_id, stream["price_cents"], now,
        )
    else:
        unlock_id = row["id"]
        await tx.execute("UPDATE ppv_unlocks SET refunded_at = NULL, amount_cents = $2, created_at = $3 WHERE id = $1",
                         unlock_id, stream["price_cents"], now)
    await audit.record(tx, actor, "ppv.unlock", "stream", stream["id"], now,
                       {"user_id": user_id, "amount_cents": stream["price_cents"]})
    row = await tx.fetchrow("SELECT * FROM ppv_unlocks WHERE id = $1", unlock_id)
    assert row is not None
    return row


async def refund_unlock_in(tx: Database, actor: Actor, unlock_id: str, now: float) -> Row | None:
    """Mark an unlock refunded; ``None`` when it already was (or is gone).
    The row carries the stream's ``playback_id``."""
    n = await tx.execute("UPDATE ppv_unlocks SET refunded_at = $2 WHERE id = $1 AND refunded_at IS NULL",
                         unlock_id, now)
    if not n:
        return None
    row = await tx.fetchrow(
        "SELECT p.*, s.playback_id FROM ppv_unlocks p JOIN live_streams s ON s.id = p.stream_id WHERE p.id = $1",
        unlock_id,
    )
    assert row is not None
    await audit.record(tx, actor, "ppv.refund", "stream", row["stream_id"], now, {"user_id": row["user_id"]})
    return row


# -- blocks ---------------------------------------------------------------------
def block_view(row: Row) -> dict[str, Any]:
    return {k: row[k] for k in ("creator_id", "user_id", "username", "created_at")}


async def block(db: Database, actor: Actor, creator_id: str, user_id: str, now: float) -> Row:
    """Block a user from a creator's streams (idempotent)."""
    if creator_id == user_id:
        raise Conflict("a creator cannot block themselves")
    async with db.transaction() as tx:
        if await tx.fetchval("SELECT id FROM users WHERE id = $1", user_id) is None:
            raise NotFound(f"no user {user_id!r}")
        exists = await tx.fetchval(
            "SELECT user_id FROM creator_blocks WHERE creator_id = $1 AND user_id = $2", creator_id, user_id
        )
        if exists is None:
            await tx.execute("INSERT INTO creator_blocks (creator_id, user_id, created_at) VALUES ($1, $2, $3)",
                             creator_id, user_id, now)
            await audit.record(tx, actor, "user.block", "user", user_id, now, {"creator_id": creator_id})
        row = await tx.fetchrow(
            "SELECT b.*, u.username FROM creator_blocks b JOIN users u ON u.id = b.user_id "
            "WHERE b.creator_id = $1 AND b.user_id = $2", creator_id, user_id,
        )
    assert row is not None
    return row


async def unblock(db: Database, actor: Actor, creator_id: str, user_id: str, now: float) -> None:
    async with db.transaction() as tx:
        n = await tx.execute("DELETE FROM creator_blocks WHERE creator_id = $1 AND user_id = $2", creator_id, user_id)
        if not n:
            raise NotFound(f"user {user_id!r} is not blocked")
        await audit.record(tx, actor, "user.unblock", "user", user_id, now, {"creator_id": creator_id})


async def list_blocks(db: Database, creator_id: str, limit: int, offset: int) -> list[Row]:
    return await db.fetch(
        "SELECT b.*, u.username FROM creator_blocks b JOIN users u ON u.id = b.user_id WHERE b.creator_id = $1 "
        "ORDER BY b.created_at DESC, b.user_id LIMIT $2 OFFSET $3",
        creator_id, limit, offset,
    )


# -- the access decision ---------------------------------------------------------------------
async def check_access(db: Database, stream: Row, user_id: str, role: str, now: float) -> float | None:
    """Return when the user may watch the stream, raise :class:`Forbidden`
    with a problem kind that tells the app what to offer (subscribe or buy).
    The value returned is when the access ends by itself (the end of the paid
    subscription period), ``None`` when it does not."""
    if role == "admin" or stream["user_id"] == user_id:
        return None
    blocked = await db.fetchval(
        "SELECT user_id FROM creator_blocks WHERE creator_id = $1 AND user_id = $2", stream["user_id"], user_id
    )
    if blocked is not None:
        raise Forbidden("the creator has blocked you", kind="blocked")
    if stream["visibility"] == "free":
        return None
    if stream["visibility"] == "subscribers":
        until = await db.fetchval(
            "SELECT MAX(current_period_end) FROM subscriptions WHERE fan_id = $1 AND creator_id = $2 "
            "AND status = 'active' AND current_period_end > $3",
            user_id, stream["user_id"], now,
        )
        if until is None:
            raise Forbidden("this stream is for subscribers; subscribe to the creator first",
                            kind="subscription-required")
        return float(until)
    found = await db.fetchval(
        "SELECT id FROM ppv_unlocks WHERE stream_id = $1 AND user_id = $2 AND refunded_at IS NULL",
        stream["id"], user_id,
    )
    if found is None:
        raise Forbidden(f"this stream is pay-per-view ({stream['price_cents']} cents); unlock it first",
                        kind="payment-required")
    return None
