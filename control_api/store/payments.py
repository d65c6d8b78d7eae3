"""Recording authenticated processor events, once each.

The event row and what the event grants (or takes back) are written in one
transaction, the event row first: a second delivery of the same event, even
one arriving at the same moment on another node, meets the primary key on
``(provider, event_id)``, rolls back whatever it did and is answered as a
duplicate. So a replayed event grants nothing a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from control_api.db import Database, IntegrityError, Row
from control_api.errors import NotFound
from control_api.payments import PaymentEvent
from control_api.revocations import Revocation, stream_scope, subscription_scope
from control_api.store import commerce, streams
from control_api.store.audit import Actor


@dataclass(slots=True)
class Outcome:
    """What recording an event did: the receipt for the processor, the
    revocations to apply and the gift to announce, if any."""

    receipt: dict[str, Any]
    revocations: list[Revocation] = field(default_factory=list)
    gift: Row | None = None


def _receipt(event_id: str, event_type: str, status: str, kind: str | None, grant_id: str | None) -> dict[str, Any]:
    return {"event_id": event_id, "type": event_type, "status": status, "grant_kind": kind, "grant_id": grant_id}


async def _stored(db: Database, provider: str, event_id: str) -> Row | None:
    return await db.fetchrow(
        "SELECT * FROM payment_events WHERE provider = $1 AND event_id = $2", provider, event_id
    )


async def record_event(db: Database, event: PaymentEvent, now: float, period_s: float) -> Outcome:
    """Record ``event`` and apply it, unless it was recorded before."""
    stored = await _stored(db, event.provider, event.id)
    if stored is not None:
        return Outcome(_receipt(event.id, event.type, "duplicate", stored["grant_kind"], stored["grant_id"]))
    try:
        async with db.transaction() as tx:
            await tx.execute(
                "INSERT INTO payment_events (provider, event_id, event_type, signed_at, received_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                event.provider, event.id, event.type, event.signed_at, now,
            )
            outcome = await _apply(tx, event, now, period_s)
            receipt = outcome.receipt
            await tx.execute(
                "UPDATE payment_events SET grant_kind = $3, grant_id = $4 WHERE provider = $1 AND event_id = $2",
                event.provider, event.id, receipt["grant_kind"], receipt["grant_id"],
            )
    except IntegrityError:
        stored = await _stored(db, event.provider, event.id)
        if stored is None:
            raise
        return Outcome(_receipt(event.id, event.type, "duplicate", stored["grant_kind"], stored["grant_id"]))
    return outcome


async def _apply(tx: Database, event: PaymentEvent, now: float, period_s: float) -> Outcome:
    actor = Actor("processor", event.provider)
    data = event.data
    if event.type == "subscription.paid":
        row = await commerce.subscribe_in(tx, actor, data["fan_id"], data["creator_id"], data.get("tier", "standard"),
                                          now, period_s)
        return Outcome(_receipt(event.id, event.type, "recorded", "subscription", row["id"]))
    if event.type == "subscription.cancelled":
        active = await commerce.active_subscription_in(tx, data["fan_id"], data["creator_id"], now)
        if active is None:
            return Outcome(_receipt(event.id, event.type, "recorded", None, None))
        row, was_active = await commerce.cancel_subscription_in(tx, actor, active["id"], None, now)
        return Outcome(_receipt(event.id, event.type, "recorded", "subscription", row["id"]),
                       _subscription_revoked(row, was_active, now, "subscription cancelled"))
    if event.type == "ppv.paid":
        stream = await streams.get_stream(tx, data["stream_id"])
        row = await commerce.unlock_in(tx, actor, stream, data["user_id"], now)
        return Outcome(_receipt(event.id, event.type, "recorded", "unlock", row["id"]))
    if event.type == "tip.paid":
        stream = await streams.get_stream(tx, data["stream_id"])
        gift = await commerce.send_gift_in(tx, actor, stream["id"], data["sender_id"], data["gift_id"],
                                           data.get("quantity", 1), data.get("message", ""), now)
        return Outcome(_receipt(event.id, event.type, "recorded", "gift", gift["id"]),
                       gift={**gift, "creator_id": stream["user_id"]})
    if event.type == "payment.refunded":
        return await _refund(tx, actor, event, now)
    return Outcome(_receipt(event.id, event.type, "ignored", None, None))


def _subscription_revoked(row: Row, was_active: bool, now: float, reason: str) -> list[Revocation]:
    if not was_active:
        return []
    return [Revocation(str(row["fan_id"]), subscription_scope(str(row["creator_id"])), now, reason)]


async def _refund(tx: Database, actor: Actor, event: PaymentEvent, now: float) -> Outcome:
    """Take back what an earlier event of the same processor granted."""
    original = await _stored(tx, event.provider, event.data["payment_event_id"])
    if original is None:
        raise NotFound(f"no event {event.data['payment_event_id']!r} from {event.provider} to refund")
    kind, grant_id = original["grant_kind"], original["grant_id"]
    revocations: list[Revocation] = []
    if kind == "subscription" and original["event_type"] == "subscription.paid":
        row, was_active = await commerce.cancel_subscription_in(tx, actor, grant_id, None, now,
                                                                action="subscription.refund")
        revocations = _subscription_revoked(row, was_active, now, "subscription refunded")
    elif kind == "unlock":
        refunded = await commerce.refund_unlock_in(tx, actor, grant_id, now)
        if refunded is not None:
            revocations = [Revocation(str(refunded["user_id"]), stream_scope(str(refunded["playback_id"])), now,
                                      "unlock refunded")]
    elif kind == "gift":
        await commerce.refund_gift_in(tx, actor, grant_id, now)
    return Outcome(_receipt(event.id, event.type, "recorded", kind, grant_id), revocations)
