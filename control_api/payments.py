"""Payment processors: signed events that confirm a payment.

Paid access (a subscription, a pay-per-view unlock) and tips are recorded
only when money has changed hands: by the platform's payment service (an API
key) or an admin, or by an event a payment processor posts to
``/api/v1/payments/webhook/<name>``. This module reads and authenticates such
an event; :mod:`control_api.store.payments` records what it grants.

The signature scheme is the one Stripe made common: a header
``Payment-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``
under the processor's signing secret (more than one ``v1`` while a secret is
being rotated). An event is refused when no ``v1`` matches (tampered or
forged), or when ``t`` is further than ``payment_tolerance_s`` from now (a
stale capture replayed); within the tolerance a replay is recognised by the
event id, which the store keeps.

Pure code: no I/O, and the caller passes ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from control_api import schemas as S
from control_api.errors import MalformedRequest
from control_api.validation import validate

SIGNATURE_HEADER = "Payment-Signature"
MAX_EVENT_BYTES = 64 * 1024
MAX_SIGNATURES = 8

EVENT_ID: S.Schema = {"type": "string", "minLength": 1, "maxLength": 255}
EVENT: S.Schema = S.obj(
    {"id": EVENT_ID, "type": {"type": "string", "minLength": 1, "maxLength": 100},
     "created": {"type": "integer"}, "data": {"type": "object"}},
    ["id", "type", "data"], closed=False,
)
# What each event type carries in ``data``; other types are acknowledged and ignored.
EVENT_DATA: dict[str, S.Schema] = {
    "subscription.paid": S.obj({"fan_id": S.ID, "creator_id": S.ID, "tier": S.TIER}, ["fan_id", "creator_id"],
                               closed=False),
    "subscription.cancelled": S.obj({"fan_id": S.ID, "creator_id": S.ID}, ["fan_id", "creator_id"], closed=False),
    "ppv.paid": S.obj({"user_id": S.ID, "stream_id": S.ID}, ["user_id", "stream_id"], closed=False),
    "tip.paid": S.obj({"sender_id": S.ID, "stream_id": S.ID, "gift_id": S.ID, "quantity": S.GIFT_QUANTITY,
                       "message": S.GIFT_MESSAGE}, ["sender_id", "stream_id", "gift_id"], closed=False),
    "payment.refunded": S.obj({"payment_event_id": EVENT_ID}, ["payment_event_id"], closed=False),
}


class SignatureRefused(MalformedRequest):
    """The event's signature does not check out: forged, tampered, or
    signed outside the tolerance."""

    kind = "invalid-signature"
    title = "The event's signature was refused"


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """An authenticated processor event."""

    provider: str
    id: str
    type: str
    signed_at: int
    data: dict[str, Any]


class PaymentProcessor(Protocol):
    """Turns a processor's POST into an authenticated :class:`PaymentEvent`
    or raises a problem (:class:`SignatureRefused`, :class:`MalformedRequest`)."""

    name: str

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> PaymentEvent: ...


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex ``v1`` MAC of ``body`` signed at ``timestamp``."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def check_signature(secret: str, header: str, body: bytes, now: float, tolerance_s: float) -> int:
    """Return the signing time when one ``v1`` of ``header`` is a valid MAC
    of ``body`` and the time is within ``tolerance_s`` of ``now``."""
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(",")[: MAX_SIGNATURES + 4]:
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit() and len(value) <= 12):
                raise SignatureRefused(f"{SIGNATURE_HEADER} needs exactly one t=<unix seconds>")
            timestamp = int(value)
        elif key == "v1" and len(macs) < MAX_SIGNATURES:
            macs.append(value)
    if timestamp is None or not macs:
        raise SignatureRefused(f"{SIGNATURE_HEADER} must be t=<unix seconds>,v1=<hex HMAC-SHA256>")
    expected = signature(secret, timestamp, body)
    # Every candidate is compared, so the time taken does not tell which failed.
    matched = False
    for mac in macs:
        matched |= hmac.compare_digest(mac.encode(), expected.encode())
    if not matched:
        raise SignatureRefused("no signature matches this body under the processor's secret")
    if abs(now - timestamp) > tolerance_s:
        raise SignatureRefused(f"the event was signed {int(now - timestamp)} s from now; more than "
                               f"{int(tolerance_s)} s is refused as stale")
    return timestamp


def parse_event(provider: str, signed_at: int, body: bytes) -> PaymentEvent:
    """The event in an authenticated body; its ``data`` is checked for the
    types this API acts on."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MalformedRequest(f"the event is not JSON: {e}") from e
    validate(doc, EVENT)
    schema = EVENT_DATA.get(doc["type"])
    if schema is not None:
        validate(doc["data"], schema)
    return PaymentEvent(provider, doc["id"], doc["type"], signed_at, doc["data"])


class HmacProcessor:
    """A processor that signs its events Stripe-style under one secret."""

    def __init__(self, name: str, secret: str, tolerance_s: float) -> None:
        self.name = name
        self._secret = secret
        self._tolerance_s = tolerance_s

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> PaymentEvent:
        header = headers.get(SIGNATURE_HEADER)
        if header is None:
            raise SignatureRefused(f"the event carries no {SIGNATURE_HEADER} header")
        if len(body) > MAX_EVENT_BYTES:
            raise MalformedRequest(f"event larger than {MAX_EVENT_BYTES} bytes")
        signed_at = check_signature(self._secret, header[:2048], body, now, self._tolerance_s)
        return parse_event(self.name, signed_at, body)


def processors_from(config: Mapping[str, str], tolerance_s: float) -> dict[str, PaymentProcessor]:
    """The configured processors by name."""
    return {name: HmacProcessor(name, secret, tolerance_s) for name, secret in config.items()}
