"""The streaming story over HTTP with the engine's checks and a real
StreamRegistry (no RTMP here; the end-to-end test adds ffmpeg and a
browser): keys, publish checks, access decisions, viewers, gifts, webhooks,
kicks and bans, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from control_api.webhooks import SIGNATURE_HEADER, verify_signature
from engine.auth import PlaybackRequest, PublishRequest
from engine.errors import PlaybackDenied, PublishDenied
from engine.media import Codec, Track
from tests.control_api.conftest import Api, User

VIDEO = Track(index=0, codec=Codec.H264, time_base=Fraction(1, 1000), width=640, height=360)


class Receiver:
    """A webhook receiver on loopback that records what it gets and can be
    told to fail the first N requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        self.received.append((dict(request.headers), body))
        self.arrived.set()
        return web.Response(status=204)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))

    def events(self) -> list[str]:
        return [json.loads(body)["event"] for _, body in self.received]


async def creator_with_key(api: Api, name: str, **start: Any) -> tuple[User, str, dict[str, Any]]:
    creator = await api.register(name, "creator")
    _, key = await api.call("GET", "/streaming/key", creator, expect=200)
    status, stream = await api.call("POST", "/streaming/start", creator, json={"title": f"{name} live", **start})
    assert status == 201
    return creator, key["stream_key"], stream


async def publish(api: Api, key: str) -> Any:
    """What the RTMP server does on a publish: ask the check, claim the
    stream, start the tracks."""
    grant = await api.checks.authorize_publish(PublishRequest("live", key, "rtmp", "127.0.0.1:5000"))
    publisher = api.registry.claim(grant.playback_name)
    publisher.start((VIDEO,))
    return grant, publisher


async def test_key_is_shown_once_and_only_hashed(api: Api) -> None:
    creator, key, _ = await creator_with_key(api, "keyed")
    assert key.startswith("sk_")
    _, again = await api.call("GET", "/streaming/key", creator, expect=200)
    assert again["stream_key"] is None and again["key_hint"] == "..." + key[-4:]
    rows = await api.plane.db.fetch("SELECT key_hash FROM stream_keys")
    assert all(key not in json.dumps(r) for r in rows)


async def test_publish_check_and_lifecycle(api: Api) -> None:
    receiver = Receiver()
    await receiver.server.start_server()
    admin = await api.admin()
    _, hook = await api.call("POST", "/webhooks", admin, json={"url": receiver.url}, expect=201)
    try:
        creator, key, stream = await creator_with_key(api, "streamer")
        with pytest.raises(PublishDenied):
            await api.checks.authorize_publish(PublishRequest("live", "sk_wrong", "rtmp", "x"))
        grant, publisher = await publish(api, key)
        assert grant.playback_name == stream["playback_id"] and grant.stream_id == stream["id"]
        assert grant.playback_name != key

        _, status = await api.call("GET", "/streaming/status", creator, expect=200)
        assert status["live"] is True
        _, active = await api.call("GET", "/streaming/active", expect=200)
        assert [s["id"] for s in active["items"]] == [stream["id"]]

        # A reconnect inside the engine's grace window gets the same grant.
        again = await api.checks.authorize_publish(PublishRequest("live", key, "rtmp", "x"))
        assert again == grant

        publisher.close()
        await api.checks.publish_ended(grant)
        _, ended = await api.call("GET", f"/streaming/{stream['id']}", expect=200)
        assert ended["status"] == "ended" and ended["ended_at"] is not None
        await asyncio.wait_for(api.plane.webhooks.idle.wait(), 10)
        assert receiver.events() == ["stream.started", "stream.ended"]
        for headers, body in receiver.received:
            assert verify_signature(hook["secret"], headers[SIGNATURE_HEADER], body, time.time())
            assert not verify_signature(hook["secret"], headers[SIGNATURE_HEADER], body + b" ", time.time())
        # A publish with no open session opens a new stream record.
        grant2, publisher2 = await publish(api, key)
        assert grant2.stream_id != grant.stream_id
        publisher2.close()
    finally:
        await receiver.server.close()


async def test_regenerate_key_disconnects_publisher(api: Api) -> None:
    creator, key, _ = await creator_with_key(api, "regen")
    _grant, publisher = await publish(api, key)
    kicked: list[str] = []
    publisher.on_kick = kicked.append
    _, new = await api.call("POST", "/streaming/regenerate-key", creator, expect=200)
    assert new["stream_key"] != key
    assert kicked == ["stream key regenerated"] and publisher.closed
    with pytest.raises(PublishDenied):
        await api.checks.authorize_publish(PublishRequest("live", key, "rtmp", "x"))
    await api.checks.authorize_publish(PublishRequest("live", new["stream_key"], "rtmp", "x"))


async def test_subscribers_only_access(api: Api) -> None:
    admin = await api.admin()
    creator, key, stream = await creator_with_key(api, "exclusive", visibility="subscribers")
    grant, publisher = await publish(api, key)
    fan = await api.register("curious_fan")
    status, problem = await api.call("POST", f"/streaming/{stream['id']}/join", fan)
    assert status == 403 and problem["type"] == "/problems/subscription-required"
    with pytest.raises(PlaybackDenied):
        await api.checks.authorize_playback(PlaybackRequest(grant.playback_name, None, "x"))

    await api.call("POST", "/subscriptions", admin, json={"creator_id": creator.id, "fan_id": fan.id, "tier": "basic"},
                   expect=201)
    _, joined = await api.call("POST", f"/streaming/{stream['id']}/join", fan, expect=200)
    url = urlsplit(joined["playback_url"])
    assert url.path == f"/hls/{grant.playback_name}/index.m3u8"
    token = parse_qs(url.query)["token"][0]
    assert token == joined["token"]
    await api.checks.authorize_playback(PlaybackRequest(grant.playback_name, token, "x"))
    with pytest.raises(PlaybackDenied):
        await api.checks.authorize_playback(PlaybackRequest(grant.playback_name, token[:-2] + "AA", "x"))
    # A token for one stream does not open another.
    _other_creator, other_key, _other = await creator_with_key(api, "other_one", visibility="subscribers")
    other_grant, _ = await publish(api, other_key)
    with pytest.raises(PlaybackDenied):
        await api.checks.authorize_playback(PlaybackRequest(other_grant.playback_name, token, "x"))

    _, viewers = await api.call("GET", f"/streaming/{stream['id']}/viewers", creator, expect=200)
    assert viewers["concurrent"] == 1 and viewers["peak"] == 1 and viewers["items"][0]["user_id"] == fan.id
    _, seen_by_fan = await api.call("GET", f"/streaming/{stream['id']}/viewers", fan, expect=200)
    assert seen_by_fan["concurrent"] == 1 and seen_by_fan["items"] == []
    _, left = await api.call("POST", f"/streaming/{stream['id']}/leave", fan, expect=200)
    assert left == {"stream_id": stream["id"], "left": True, "concurrent": 0}

    # Cancelling the subscription stops new joins.
    _, subs = await api.call("GET", "/subscriptions", fan, expect=200)
    await api.call("DELETE", f"/subscriptions/{subs['items'][0]['id']}", fan, expect=200)
    status, _ = await api.call("POST", f"/streaming/{stream['id']}/join", fan)
    assert status == 403
    publisher.close()


async def test_pay_per_view_and_free(api: Api) -> None:
    admin = await api.admin()
    _, _, ppv = await creator_with_key(api, "ppv_creator", visibility="pay_per_view", price_cents=499)
    fan = await api.register("buyer")
    status, problem = await api.call("POST", f"/streaming/{ppv['id']}/join", fan)
    assert status == 403 and problem["type"] == "/problems/payment-required"
    _, unlock = await api.call("POST", f"/streaming/{ppv['id']}/unlock", admin, json={"user_id": fan.id}, expect=201)
    assert unlock["amount_cents"] == 499
    await api.call("POST", f"/streaming/{ppv['id']}/join", fan, expect=200)

    _, key, free = await creator_with_key(api, "free_creator")
    grant, publisher = await publish(api, key)
    await api.checks.authorize_playback(PlaybackRequest(grant.playback_name, None, "x"))
    with pytest.raises(PlaybackDenied):
        await api.checks.authorize_playback(PlaybackRequest("no_such_stream", None, "x"))
    status, problem = await api.call("POST", f"/streaming/{free['id']}/unlock", admin, json={"user_id": fan.id})
    assert status == 409
    publisher.close()


async def test_gifts_leaderboard_and_webhook_retry(api: Api) -> None:
    receiver = Receiver(fail_first=2)
    await receiver.server.start_server()
    admin = await api.admin()
    _, hook = await api.call("POST", "/webhooks", admin, json={"url": receiver.url, "events": ["gift.sent"]},
                             expect=201)
    try:
        _, key, stream = await creator_with_key(api, "gifted")
        _grant, publisher = await publish(api, key)
        fans = [await api.register(f"giver_{i}") for i in range(3)]
        _, catalogue = await api.call("GET", "/gifts", expect=200)
        prices = {g["id"]: g["price_cents"] for g in catalogue["items"]}
        gift_path = f"/streaming/{stream['id']}/gift"
        await api.call("POST", gift_path, admin, json={"sender_id": fans[0].id, "gift_id": "rose", "quantity": 3},
                       expect=201)
        await api.call("POST", gift_path, admin, json={"sender_id": fans[1].id, "gift_id": "diamond"}, expect=201)
        await api.call("POST", gift_path, admin, json={"sender_id": fans[0].id, "gift_id": "heart"}, expect=201)
        status, _ = await api.call("POST", gift_path, admin, json={"sender_id": fans[2].id, "gift_id": "unicorn"})
        assert status == 404
        _, board = await api.call("GET", f"/streaming/{stream['id']}/gifts", expect=200)
        assert [(e["username"], e["total_cents"]) for e in board["leaderboard"]] == [
            ("giver_1", prices["diamond"]), ("giver_0", 3 * prices["rose"] + prices["heart"])]
        assert board["total_cents"] == prices["diamond"] + 3 * prices["rose"] + prices["heart"]
        assert len(board["recent"]) == 3

        await asyncio.wait_for(api.plane.webhooks.idle.wait(), 15)
        # Two 503s, then success: the first delivery took three attempts.
        assert receiver.events() == ["gift.sent"] * 3
        _, deliveries = await api.call("GET", f"/webhooks/{hook['id']}/deliveries", admin, expect=200)
        assert {d["status"] for d in deliveries["items"]} == {"delivered"}
        assert sorted(d["attempts"] for d in deliveries["items"]) in ([1, 1, 3], [1, 2, 2])
        publisher.close()
    finally:
        await receiver.server.close()


async def test_webhook_failure_is_recorded_and_targets_restricted(api: Api) -> None:
    admin = await api.admin()
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest", "http://user:pw@127.0.0.1/x",
                "ftp://127.0.0.1/x"):
        status, _problem = await api.call("POST", "/webhooks", admin, json={"url": url})
        assert status in (403, 422), url
    receiver = Receiver(fail_first=100)
    await receiver.server.start_server()
    try:
        _, hook = await api.call("POST", "/webhooks", admin, json={"url": receiver.url}, expect=201)
        _, key, _ = await creator_with_key(api, "unlucky")
        await publish(api, key)
        await asyncio.wait_for(api.plane.webhooks.idle.wait(), 15)
        _, deliveries = await api.call("GET", f"/webhooks/{hook['id']}/deliveries", admin, expect=200)
        [delivery] = deliveries["items"]
        assert delivery["status"] == "failed" and delivery["attempts"] == api.config.webhook_max_attempts
        assert delivery["last_status"] == 503 and delivery["last_error"] == "HTTP 503"
    finally:
        await receiver.server.close()


async def test_ban_ends_live_stream_and_blocks_publish(api: Api) -> None:
    admin = await api.admin()
    creator, key, stream = await creator_with_key(api, "rule_breaker")
    _grant, publisher = await publish(api, key)
    kicked: list[str] = []
    publisher.on_kick = kicked.append
    _, result = await api.call("POST", f"/admin/users/{creator.id}/ban", admin, json={"reason": "terms"},
                               expect=200)
    assert result == {"stream_id": stream["id"], "disconnected": True}
    assert kicked == ["creator banned"]
    _, ended = await api.call("GET", f"/streaming/{stream['id']}", expect=200)
    assert ended["status"] == "ended" and ended["ended_reason"] == "creator banned"
    with pytest.raises(PublishDenied):
        await api.checks.authorize_publish(PublishRequest("live", key, "rtmp", "x"))
    status, _problem = await api.call("GET", "/users/me", creator)
    assert status in (401, 403)
    status, _ = await api.call("POST", "/auth/login", json={"username": "rule_breaker", "password": "correct horse "
                                                                                                    "battery"})
    assert status == 403
    _, audit = await api.call("GET", f"/admin/audit?target_id={creator.id}", admin, expect=200)
    assert "user.ban" in [e["action"] for e in audit["items"]]
    await api.call("POST", f"/admin/users/{creator.id}/unban", admin, expect=200)


async def test_admin_kick_and_suspended_creator(api: Api) -> None:
    admin = await api.admin()
    creator, key, stream = await creator_with_key(api, "kickme")
    _grant, publisher = await publish(api, key)
    _, live = await api.call("GET", "/admin/streams", admin, expect=200)
    assert [s["id"] for s in live["items"]] == [stream["id"]]
    _, result = await api.call("POST", f"/admin/streams/{stream['id']}/kick", admin, json={"reason": "test"},
                               expect=200)
    assert result["disconnected"] is True and publisher.closed
    _, live = await api.call("GET", "/admin/streams", admin, expect=200)
    assert live["items"] == []
    await api.call("PATCH", f"/admin/users/{creator.id}", admin, json={"creator_status": "suspended"}, expect=200)
    with pytest.raises(PublishDenied):
        await api.checks.authorize_publish(PublishRequest("live", key, "rtmp", "x"))


async def test_schedule_record_and_recordings(api: Api) -> None:
    admin = await api.admin()
    creator, _key, stream = await creator_with_key(api, "planner")
    start = time.time() + 86400
    _, sched = await api.call("POST", "/streaming/schedule", creator,
                              json={"title": "Friday show", "starts_at": start, "visibility": "free"}, expect=201)
    _, listed = await api.call("GET", f"/streaming/schedule?creator_id={creator.id}", expect=200)
    assert [s["id"] for s in listed["items"]] == [sched["id"]]
    _, rec = await api.call("POST", f"/streaming/{stream['id']}/record", creator, json={"enabled": True},
                            expect=200)
    assert rec["recording"] is True
    other = await api.register("not_owner", "creator")
    status, _ = await api.call("POST", f"/streaming/{stream['id']}/record", other, json={"enabled": False})
    assert status == 403
    _, made = await api.call("POST", f"/streaming/{stream['id']}/recordings", admin,
                             json={"uri": "s3://bucket/rec.mp4", "duration_s": 12.5, "size_bytes": 1000}, expect=201)
    _, recs = await api.call("GET", f"/streaming/{stream['id']}/recordings", creator, expect=200)
    assert recs["items"][0]["id"] == made["id"]
    _, stopped = await api.call("POST", "/streaming/stop", creator, expect=200)
    assert stopped["status"] == "ended"
    status, _ = await api.call("POST", "/streaming/stop", creator)
    assert status == 404


async def test_effects_are_checked_stored_and_handed_to_the_engine(api: Api) -> None:
    creator, _key, stream = await creator_with_key(api, "styled")
    look = {"effects": [{"effect": "watermark", "text": "STAR", "position": "top-left"}]}
    _, row = await api.call("PUT", f"/streaming/{stream['id']}/effects", creator, json={"effects": look}, expect=200)
    assert row["effects"] == look
    assert api.registry.settings(stream["playback_id"])["effects"] == look
    for bad in (
        {"effects": [{"effect": "sparkles"}]},  # no such effect
        {"effects": "watermark"},  # not a list
        {"effects": [], "colour": "red"},  # not a setting
        {"effects": [], "budget_ms": 0},
        {"effects": [{"effect": "watermark", "image": "/etc/passwd"}]},  # server files: config only
    ):
        status, problem = await api.call("PUT", f"/streaming/{stream['id']}/effects", creator, json={"effects": bad})
        assert status == 422 and "effects" in problem["detail"], problem
    # A refused change leaves the stored effects as they were.
    assert api.registry.settings(stream["playback_id"])["effects"] == look
    other = await api.register("not_styled", "creator")
    status, _ = await api.call("PUT", f"/streaming/{stream['id']}/effects", other, json={"effects": look})
    assert status == 403


async def test_a_stream_record_chooses_its_protection_and_the_publish_check_returns_it(api: Api) -> None:
    creator, key, stream = await creator_with_key(api, "drm_creator", protection="cbcs")
    assert stream["protection"] == "cbcs"
    assert api.registry.settings(stream["playback_id"])["protection"] == "cbcs"
    grant, publisher = await publish(api, key)
    assert grant.protection == "cbcs"
    publisher.close()
    # null is the engine's default again; an unknown scheme is refused.
    _, again = await api.call("POST", "/streaming/start", creator, json={"title": "t", "protection": None},
                              expect=200)
    assert again["protection"] is None
    assert api.registry.settings(stream["playback_id"])["protection"] is None
    assert (await api.checks.authorize_publish(PublishRequest("live", key, "rtmp", "x"))).protection is None
    status, _ = await api.call("POST", "/streaming/start", creator, json={"title": "t", "protection": "rot13"})
    assert status == 422
    _, other_key, other = await creator_with_key(api, "plain_creator")
    assert other["protection"] is None
    grant, publisher = await publish(api, other_key)
    assert grant.protection is None
    publisher.close()
