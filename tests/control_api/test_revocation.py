"""Access ends with its reason: a cancelled subscription, a ban or a
creator's block stops the playback tokens issued before it, in the scope it
concerns only, on this node at once and on another node sharing the database
at its next poll (and after a restart)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_api.app import get_checks
from control_api.config import ApiConfig
from control_api.db import Database
from control_api.revocations import (
    EVERY_STREAM,
    DatabaseRevocationFeed,
    Revocation,
    RevocationSet,
    creator_scope,
    scopes_for,
    stream_scope,
    subscription_scope,
)
from engine.auth import PlaybackRequest
from engine.errors import PlaybackDenied
from engine.registry import StreamRegistry
from tests.control_api.conftest import Api, User, serve_api
from tests.control_api.test_payments import joined_token
from tests.control_api.test_streaming_api import creator_with_key, publish


def test_revocation_set_semantics() -> None:
    rs = RevocationSet(token_ttl_s=100)
    scopes = scopes_for("c1", "pb1", "subscribers")
    assert scopes == (EVERY_STREAM, creator_scope("c1"), subscription_scope("c1"))
    assert scopes_for("c1", "pb1", "pay_per_view")[-1] == stream_scope("pb1")
    assert not rs.revoked("u1", scopes, 10.0)
    rs.add(Revocation("u1", subscription_scope("c1"), 50.0))
    assert rs.revoked("u1", scopes, 49.999) and rs.revoked("u1", scopes, 50.0)
    assert not rs.revoked("u1", scopes, 50.001)  # issued after: a new grant
    assert not rs.revoked("u2", scopes, 10.0)  # someone else
    assert not rs.revoked("u1", scopes_for("c1", "pb2", "pay_per_view"), 10.0)  # not a subscription stream
    assert not rs.revoked("u1", scopes_for("c2", "pb3", "subscribers"), 10.0)  # another creator
    rs.add(Revocation("u1", subscription_scope("c1"), 40.0))  # an older one does not move it back
    assert rs.revoked("u1", scopes, 45.0)
    assert rs.prune(now=149.0) == 0 and len(rs) == 1
    assert rs.prune(now=151.0) == 1 and len(rs) == 0


@given(st.lists(st.tuples(st.sampled_from(["u1", "u2"]), st.sampled_from(["*", "creator:c", "stream:p"]),
                          st.floats(min_value=0, max_value=1000)), max_size=20),
       st.floats(min_value=0, max_value=1000))
@settings(max_examples=200, deadline=None)
def test_revocation_set_matches_a_plain_reading(entries: list[tuple[str, str, float]], issued: float) -> None:
    rs = RevocationSet(token_ttl_s=10_000)
    for user, scope, at in entries:
        rs.add(Revocation(user, scope, at))
    scopes = ("*", "creator:c", "stream:p")
    expected = any(u == "u1" and issued <= at for u, _s, at in entries)
    assert rs.revoked("u1", scopes, issued) is expected


async def allowed(api_checks: object, playback_id: str, token: str) -> bool:
    try:
        await api_checks.authorize_playback(PlaybackRequest(playback_id, token, "x"))  # type: ignore[attr-defined]
    except PlaybackDenied:
        return False
    return True


async def test_cancel_block_and_ban_end_playback_in_their_scope(api: Api) -> None:
    admin = await api.admin()
    creator, key, subs_stream = await creator_with_key(api, "scoped", visibility="subscribers")
    grant, publisher = await publish(api, key)
    other, other_key, other_stream = await creator_with_key(api, "elsewhere", visibility="subscribers")
    other_grant, other_pub = await publish(api, other_key)
    fans = {name: await api.register(name) for name in ("canceller", "blocked_one", "banned_one", "bystander")}
    for fan in fans.values():
        for c in (creator, other):
            await api.call("POST", "/subscriptions", admin, json={"creator_id": c.id, "fan_id": fan.id}, expect=201)
    tokens = {name: await joined_token(api, fan, subs_stream["id"]) for name, fan in fans.items()}
    other_tokens = {name: await joined_token(api, fan, other_stream["id"]) for name, fan in fans.items()}
    pid, other_pid = grant.playback_name, other_grant.playback_name
    for name in fans:
        assert await allowed(api.checks, pid, tokens[name])

    async def still_playing() -> set[str]:
        return {n for n in fans if await allowed(api.checks, pid, tokens[n])}

    # The fan cancels: that creator's subscribers-only stream stops, the other creator's does not.
    _, subs = await api.call("GET", "/subscriptions", fans["canceller"], expect=200)
    mine = next(s for s in subs["items"] if s["creator_id"] == creator.id)
    await api.call("DELETE", f"/subscriptions/{mine['id']}", fans["canceller"], expect=200)
    assert await still_playing() == {"blocked_one", "banned_one", "bystander"}
    assert await allowed(api.checks, other_pid, other_tokens["canceller"])
    # Cancelling again changes nothing and revokes nothing new.
    await api.call("DELETE", f"/subscriptions/{mine['id']}", fans["canceller"], expect=200)

    # The creator blocks a fan: refused at once, and join is refused too.
    _, blocked = await api.call("POST", "/users/me/blocks", creator, json={"user_id": fans["blocked_one"].id},
                                expect=201)
    assert blocked["username"] == "blocked_one"
    assert await still_playing() == {"banned_one", "bystander"}
    assert await allowed(api.checks, other_pid, other_tokens["blocked_one"])
    status, problem = await api.call("POST", f"/streaming/{subs_stream['id']}/join", fans["blocked_one"])
    assert status == 403 and problem["type"] == "/problems/blocked"
    _, listed = await api.call("GET", "/users/me/blocks", creator, expect=200)
    assert [b["user_id"] for b in listed["items"]] == [fans["blocked_one"].id]
    # Lifted: a new join plays; the old token stays dead.
    await api.call("DELETE", f"/users/me/blocks/{fans['blocked_one'].id}", creator, expect=204)
    fresh = await joined_token(api, fans["blocked_one"], subs_stream["id"])
    assert await allowed(api.checks, pid, fresh)
    assert not await allowed(api.checks, pid, tokens["blocked_one"])
    status, _ = await api.call("POST", "/users/me/blocks", fans["bystander"], json={"user_id": creator.id})
    assert status == 403  # fans have no block list
    status, _ = await api.call("POST", "/users/me/blocks", creator, json={"user_id": creator.id})
    assert status == 409

    # A ban ends every stream for that viewer.
    await api.call("POST", f"/admin/users/{fans['banned_one'].id}/ban", admin, json={"reason": "abuse"}, expect=200)
    assert await still_playing() == {"bystander"}
    assert not await allowed(api.checks, other_pid, other_tokens["banned_one"])
    assert await allowed(api.checks, other_pid, other_tokens["bystander"])
    publisher.close()
    other_pub.close()


async def test_revocations_reach_other_nodes_and_survive_restarts(api: Api, api_config: ApiConfig) -> None:
    """A second node on the same database: it refuses a revoked token once it
    has polled (driven here by hand, not by waiting), and a node started
    after the revocation refuses it from the start."""
    admin = await api.admin()
    creator, key, stream = await creator_with_key(api, "clustered", visibility="subscribers")
    grant, publisher = await publish(api, key)
    fan = await api.register("roaming_fan")
    await api.call("POST", "/subscriptions", admin, json={"creator_id": creator.id, "fan_id": fan.id}, expect=201)
    token = await joined_token(api, fan, stream["id"])

    feeds: list[DatabaseRevocationFeed] = []

    def by_hand(db: Database) -> DatabaseRevocationFeed:
        feed = DatabaseRevocationFeed(db, poll_s=3600, token_ttl_s=api_config.playback_token_ttl_s, clock=time.time)
        feeds.append(feed)
        return feed

    registry = StreamRegistry(grace_s=0)
    client2, app2 = await serve_api(api_config, registry, revocation_feed=by_hand)
    # A third node polls on its own, often.
    registry4 = StreamRegistry(grace_s=0)
    client4, app4 = await serve_api(replace(api_config, revocation_poll_s=0.1), registry4)
    try:
        node2, node4 = get_checks(app2), get_checks(app4)
        assert await allowed(node2, grant.playback_name, token)
        assert await allowed(node4, grant.playback_name, token)
        await _ban(api, admin, fan)
        assert not await allowed(api.checks, grant.playback_name, token)
        assert await allowed(node2, grant.playback_name, token)  # not polled yet
        assert await feeds[0].poll() >= 1
        assert not await allowed(node2, grant.playback_name, token)
        for _ in range(200):
            if not await allowed(node4, grant.playback_name, token):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the polling node never saw the revocation")
    finally:
        for client, reg in ((client2, registry), (client4, registry4)):
            await client.close()
            reg.close()

    # A node started now loads the revocation at start.
    registry3 = StreamRegistry(grace_s=0)
    client3, app3 = await serve_api(api_config, registry3)
    try:
        assert not await allowed(get_checks(app3), grant.playback_name, token)
    finally:
        await client3.close()
        registry3.close()
    publisher.close()


async def _ban(api: Api, admin: User, fan: User) -> None:
    await api.call("POST", f"/admin/users/{fan.id}/ban", admin, json={"reason": "chargeback fraud"}, expect=200)


@pytest.mark.parametrize("ttl", [60])
async def test_old_revocations_are_forgotten(api: Api, ttl: int) -> None:
    feed = DatabaseRevocationFeed(api.plane.db, poll_s=3600, token_ttl_s=ttl, clock=time.time)
    now = time.time()
    await feed.publish(Revocation("u", EVERY_STREAM, now - ttl - 5, "old"))
    await feed.publish(Revocation("u", EVERY_STREAM, now, "new"))
    assert await feed.prune(now) == 1
    seen: list[Revocation] = []
    await feed.start(seen.append, now)
    await feed.stop()
    assert [r.reason for r in seen if r.user_id == "u"] == ["new"]


async def test_token_ends_with_the_paid_period(api: Api) -> None:
    """A token handed out near the end of a paid period expires with it,
    not two hours later."""
    admin = await api.admin()
    creator, _key, stream = await creator_with_key(api, "period_end", visibility="subscribers")
    fan = await api.register("last_days")
    _, sub = await api.call("POST", "/subscriptions", admin, json={"creator_id": creator.id, "fan_id": fan.id},
                            expect=201)
    _, joined = await api.call("POST", f"/streaming/{stream['id']}/join", fan, expect=200)
    assert joined["expires_at"] == pytest.approx(time.time() + api.config.playback_token_ttl_s, abs=5)
    ends = time.time() + 60
    await api.plane.db.execute("UPDATE subscriptions SET current_period_end = $2 WHERE id = $1", sub["id"], ends)
    _, joined = await api.call("POST", f"/streaming/{stream['id']}/join", fan, expect=200)
    assert joined["expires_at"] <= ends
    _, own = await api.call("POST", f"/streaming/{stream['id']}/join", creator, expect=200)
    assert own["expires_at"] == pytest.approx(time.time() + api.config.playback_token_ttl_s, abs=5)
