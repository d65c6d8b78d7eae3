"""Paid access comes only from a confirmed payment: a fan cannot grant
themselves a subscription, an unlock or a tip; the platform's payment
service (API key) and admins can; a processor's signed event grants once,
and a replayed, stale, forged or tampered one grants nothing. On SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_api.errors import MalformedRequest, ValidationFailed
from control_api.payments import EVENT_DATA, SignatureRefused, check_signature, parse_event
from engine.auth import PlaybackRequest
from engine.errors import PlaybackDenied
from tests.control_api.conftest import Api, User
from tests.control_api.fake_processor import FakeProcessor
from tests.control_api.test_streaming_api import creator_with_key, publish


async def joined_token(api: Api, fan: User, stream_id: str) -> str:
    _, joined = await api.call("POST", f"/streaming/{stream_id}/join", fan, expect=200)
    return str(joined["token"])


async def test_fans_cannot_grant_themselves_paid_access(api: Api) -> None:
    creator, _key, subs_stream = await creator_with_key(api, "paid_creator", visibility="subscribers")
    _, _, ppv = await creator_with_key(api, "ppv_seller", visibility="pay_per_view", price_cents=999)
    fan = await api.register("freeloader")
    for path, body in (
        ("/subscriptions", {"creator_id": creator.id}),
        ("/subscriptions", {"creator_id": creator.id, "fan_id": fan.id}),
        (f"/streaming/{ppv['id']}/unlock", {}),
        (f"/streaming/{ppv['id']}/unlock", {"user_id": fan.id}),
        (f"/streaming/{subs_stream['id']}/gift", {"sender_id": fan.id, "gift_id": "crown"}),
    ):
        status, problem = await api.call("POST", path, fan, json=body)
        assert status == 403, (path, problem)
    # A creator is no better placed than a fan.
    status, _ = await api.call("POST", "/subscriptions", creator, json={"creator_id": creator.id, "fan_id": fan.id})
    assert status == 403
    for stream in (subs_stream, ppv):
        status, _ = await api.call("POST", f"/streaming/{stream['id']}/join", fan)
        assert status == 403
    _, subs = await api.call("GET", "/subscriptions", fan, expect=200)
    assert subs["items"] == []
    _, board = await api.call("GET", f"/streaming/{subs_stream['id']}/gifts", expect=200)
    assert board["total_cents"] == 0


async def test_service_key_and_admin_record_payments(api: Api) -> None:
    admin = await api.admin()
    _, key = await api.call("POST", "/auth/api-keys", admin, json={"name": "billing"}, expect=201)
    svc = {"X-API-Key": key["key"]}
    creator, _key, stream = await creator_with_key(api, "svc_paid", visibility="subscribers")
    _, _, ppv = await creator_with_key(api, "svc_ppv", visibility="pay_per_view", price_cents=250)
    fan = await api.register("paying_fan")
    await api.call("POST", "/subscriptions", headers=svc, json={"creator_id": creator.id, "fan_id": fan.id},
                   expect=201)
    await api.call("POST", f"/streaming/{stream['id']}/join", fan, expect=200)
    _, unlock = await api.call("POST", f"/streaming/{ppv['id']}/unlock", admin, json={"user_id": fan.id},
                               expect=201)
    assert unlock["amount_cents"] == 250 and unlock["user_id"] == fan.id
    await api.call("POST", f"/streaming/{ppv['id']}/join", fan, expect=200)
    _, sent = await api.call("POST", f"/streaming/{stream['id']}/gift", headers=svc,
                             json={"sender_id": fan.id, "gift_id": "heart", "quantity": 2}, expect=201)
    assert sent["sender_id"] == fan.id and sent["amount_cents"] == 1000
    # The service must name who paid.
    status, _ = await api.call("POST", f"/streaming/{ppv['id']}/unlock", headers=svc, json={})
    assert status == 422
    status, _ = await api.call("POST", "/subscriptions", headers=svc, json={"creator_id": creator.id})
    assert status == 422


async def test_signed_event_grants_once(api: Api) -> None:
    creator, key, stream = await creator_with_key(api, "proc_creator", visibility="subscribers")
    grant, publisher = await publish(api, key)
    fan = await api.register("proc_fan")
    processor = FakeProcessor(api)
    body = processor.event("subscription.paid", {"fan_id": fan.id, "creator_id": creator.id, "tier": "gold"},
                           "evt_sub_1")
    headers = processor.sign(body)
    status, receipt = await processor.deliver(body, headers)
    assert status == 200 and receipt["status"] == "recorded" and receipt["grant_kind"] == "subscription"
    _, subs = await api.call("GET", "/subscriptions", fan, expect=200)
    [sub] = subs["items"]
    assert sub["tier"] == "gold" and sub["id"] == receipt["grant_id"]
    token = await joined_token(api, fan, stream["id"])
    await api.checks.authorize_playback(PlaybackRequest(grant.playback_name, token, "x"))

    # The same delivery again (a retry or a replay) is recognised: nothing new.
    for again in (headers, processor.sign(body)):
        status, second = await processor.deliver(body, again)
        assert status == 200 and second["status"] == "duplicate" and second["grant_id"] == sub["id"]
    _, subs = await api.call("GET", "/subscriptions", fan, expect=200)
    assert [s["current_period_end"] for s in subs["items"]] == [sub["current_period_end"]]
    rows = await api.plane.db.fetch("SELECT * FROM audit_log WHERE action = 'subscription.start'")
    assert len(rows) == 1 and rows[0]["actor_kind"] == "processor" and rows[0]["actor_id"] == "testpay"

    # A new event id is a new payment: the next period.
    await processor.send("subscription.paid", {"fan_id": fan.id, "creator_id": creator.id}, "evt_sub_2")
    _, subs = await api.call("GET", "/subscriptions", fan, expect=200)
    period = api.config.subscription_period_days * 86400
    assert subs["items"][0]["current_period_end"] == pytest.approx(sub["current_period_end"] + period)
    publisher.close()


async def test_concurrent_duplicate_deliveries_record_once(api: Api) -> None:
    _, _, ppv = await creator_with_key(api, "rush_seller", visibility="pay_per_view", price_cents=300)
    fans = [await api.register(f"rush_{i}") for i in range(3)]
    processor = FakeProcessor(api)
    bodies = [processor.event("ppv.paid", {"user_id": f.id, "stream_id": ppv["id"]}, f"evt_rush_{i}")
              for i, f in enumerate(fans)]
    results = await asyncio.gather(*(processor.deliver(b) for b in bodies for _ in range(4)))
    assert all(status == 200 for status, _ in results), results
    statuses = sorted(r["status"] for _, r in results)
    assert statuses.count("recorded") == 3 and statuses.count("duplicate") == 9
    assert await api.plane.db.fetchval("SELECT COUNT(*) FROM ppv_unlocks") == 3
    assert await api.plane.db.fetchval("SELECT COUNT(*) FROM payment_events") == 3


async def test_forged_tampered_stale_and_unknown_events_grant_nothing(api: Api) -> None:
    creator = await api.register("target_creator", "creator")
    fan = await api.register("forger")
    processor = FakeProcessor(api)
    body = processor.event("subscription.paid", {"fan_id": fan.id, "creator_id": creator.id})
    now = time.time()
    tampered = body.replace(fan.id.encode(), ("f" * 32).encode())
    good = processor.sign(body)
    t_part, v1_part = good["Payment-Signature"].split(",")
    cases = {
        "tampered body": (tampered, good, None),
        "wrong secret": (body, processor.sign(body, secret="x" * 40), None),
        "stale": (body, processor.sign(body, at=now - api.config.payment_tolerance_s - 60), None),
        "from the future": (body, processor.sign(body, at=now + api.config.payment_tolerance_s + 60), None),
        "time moved": (body, {"Payment-Signature": f"t={int(now) + 1},{v1_part}"}, None),
        "no signature": (body, {"Content-Type": "application/json"}, None),
        "no v1": (body, {"Payment-Signature": t_part}, None),
        "two times": (body, {"Payment-Signature": f"{t_part},{t_part},{v1_part}"}, None),
        "garbage header": (body, {"Payment-Signature": "t=x,,=,v1"}, None),
    }
    for what, (sent, headers, provider) in cases.items():
        status, problem = await processor.deliver(sent, headers, provider)
        assert status == 400 and problem["type"] == "/problems/invalid-signature", (what, problem)
    status, problem = await processor.deliver(body, good, provider="otherpay")
    assert status == 404
    status, problem = await processor.deliver(body, good, provider="Bad-Name")
    assert status == 404
    assert await api.plane.db.fetchval("SELECT COUNT(*) FROM subscriptions") == 0
    assert await api.plane.db.fetchval("SELECT COUNT(*) FROM payment_events") == 0
    # The genuine event still works afterwards: refusals recorded nothing.
    status, receipt = await processor.deliver(body, processor.sign(body))
    assert status == 200 and receipt["status"] == "recorded"


async def test_signed_but_invalid_events(api: Api) -> None:
    creator = await api.register("odd_creator", "creator")
    fan = await api.register("odd_fan")
    processor = FakeProcessor(api)
    for body in (b"not json", b"[]", json.dumps({"id": "e1", "type": "subscription.paid"}).encode(),
                 processor.event("subscription.paid", {"fan_id": fan.id}),
                 processor.event("subscription.paid", {"fan_id": 7, "creator_id": creator.id}),
                 b"\xff\xfe", b"[" * 5000 + b"]" * 5000):
        status, problem = await processor.deliver(body)
        assert status in (400, 422), (body[:40], problem)
    # Signed events naming what does not exist are refused and not stored, so
    # the processor's retry can succeed once the record exists.
    status, _ = await processor.deliver(processor.event("subscription.paid",
                                                        {"fan_id": "0" * 32, "creator_id": creator.id}))
    assert status == 404
    status, _ = await processor.deliver(processor.event("payment.refunded", {"payment_event_id": "evt_never"}))
    assert status == 404
    # Types this API does not act on are acknowledged (so the processor stops
    # sending them) and grant nothing.
    receipt = await processor.send("invoice.created", {"whatever": 1})
    assert receipt["status"] == "ignored" and receipt["grant_kind"] is None
    assert await api.plane.db.fetchval("SELECT COUNT(*) FROM subscriptions") == 0


async def test_ppv_and_tip_events_and_their_refunds(api: Api) -> None:
    _creator, key, ppv = await creator_with_key(api, "ppv_proc", visibility="pay_per_view", price_cents=700)
    grant, publisher = await publish(api, key)
    fan = await api.register("ppv_buyer")
    processor = FakeProcessor(api)
    paid = await processor.send("ppv.paid", {"user_id": fan.id, "stream_id": ppv["id"]}, "evt_ppv")
    assert paid["grant_kind"] == "unlock"
    token = await joined_token(api, fan, ppv["id"])
    await api.checks.authorize_playback(PlaybackRequest(grant.playback_name, token, "x"))
    tip = await processor.send("tip.paid", {"sender_id": fan.id, "stream_id": ppv["id"], "gift_id": "diamond"},
                               "evt_tip")
    _, board = await api.call("GET", f"/streaming/{ppv['id']}/gifts", expect=200)
    assert board["total_cents"] == 2000 and board["recent"][0]["id"] == tip["grant_id"]

    await processor.send("payment.refunded", {"payment_event_id": "evt_tip"}, "evt_tip_refund")
    _, board = await api.call("GET", f"/streaming/{ppv['id']}/gifts", expect=200)
    assert board["total_cents"] == 0 and board["leaderboard"] == []

    refund = await processor.send("payment.refunded", {"payment_event_id": "evt_ppv"}, "evt_ppv_refund")
    assert refund["grant_kind"] == "unlock" and refund["grant_id"] == paid["grant_id"]
    with pytest.raises(PlaybackDenied):
        await api.checks.authorize_playback(PlaybackRequest(grant.playback_name, token, "x"))
    status, problem = await api.call("POST", f"/streaming/{ppv['id']}/join", fan)
    assert status == 403 and problem["type"] == "/problems/payment-required"
    # Bought again: access returns with a new token; the old one stays dead.
    await processor.send("ppv.paid", {"user_id": fan.id, "stream_id": ppv["id"]}, "evt_ppv_again")
    fresh = await joined_token(api, fan, ppv["id"])
    await api.checks.authorize_playback(PlaybackRequest(grant.playback_name, fresh, "x"))
    with pytest.raises(PlaybackDenied):
        await api.checks.authorize_playback(PlaybackRequest(grant.playback_name, token, "x"))
    publisher.close()


SECRET = "whsec_" + "k" * 40


def _valid_header(t: int, body: bytes) -> str:
    import hashlib
    import hmac

    return f"t={t},v1=" + hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


@given(header=st.text(max_size=300), body=st.binary(max_size=200))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_signature_headers_are_refused(header: str, body: bytes) -> None:
    with pytest.raises(SignatureRefused):
        check_signature(SECRET, header, body, 1_700_000_000, 300)


@given(body=st.binary(max_size=200), flip=st.integers(min_value=0), extra=st.binary(min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_any_change_to_a_signed_body_is_refused(body: bytes, flip: int, extra: bytes) -> None:
    now = 1_700_000_000
    header = _valid_header(now, body)
    assert check_signature(SECRET, header, body, now, 300) == now
    changed = [body + extra]
    if body:
        i = flip % len(body)
        changed.append(body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:])
    for other in changed:
        with pytest.raises(SignatureRefused):
            check_signature(SECRET, header, other, now, 300)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                   max_size=4), max_leaves=20)


@given(st.one_of(st.binary(max_size=300), _JSON.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"id": _JSON, "type": st.sampled_from(sorted(EVENT_DATA)), "data": _JSON})
                 .map(lambda v: json.dumps(v).encode())))
@settings(max_examples=300, deadline=None)
def test_hostile_event_bodies_are_refused_as_bad_input(body: bytes) -> None:
    """A body that passed the signature (a processor's bug, or a leaked
    secret) still cannot crash the parser: it is an event or a 400/422."""
    try:
        event = parse_event("p", 0, body)
    except (MalformedRequest, ValidationFailed):
        return
    assert isinstance(event.id, str) and isinstance(event.data, dict)
