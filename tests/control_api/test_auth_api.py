"""Accounts over HTTP, on SQLite and PostgreSQL: registration, login,
refresh, logout, TOTP, API keys, role checks, problem details and rate
limits."""

from __future__ import annotations

import time
from dataclasses import replace

import pyotp

from control_api.config import ApiConfig
from engine.registry import StreamRegistry
from tests.control_api.conftest import PASSWORD, Api, serve_api


async def test_register_login_refresh_logout(api: Api) -> None:
    fan = await api.register("fan_one")
    status, me = await api.call("GET", "/users/me", fan, expect=200)
    assert me["username"] == "fan_one" and me["role"] == "fan" and me["banned"] is False

    again = await api.login("fan_one")
    status, body = await api.call("POST", "/auth/refresh", json={"refresh_token": again.refresh_token}, expect=200)
    assert body["refresh_token"] != again.refresh_token
    # The old refresh token was rotated away.
    status, problem = await api.call("POST", "/auth/refresh", json={"refresh_token": again.refresh_token})
    assert status == 401 and problem["type"] == "/problems/invalid-token"

    await api.call("POST", "/auth/logout", fan, json={"refresh_token": fan.refresh_token}, expect=204)
    status, problem = await api.call("GET", "/users/me", fan)
    assert status == 401 and problem["type"] == "/problems/session-revoked"
    status, _ = await api.call("POST", "/auth/refresh", json={"refresh_token": fan.refresh_token})
    assert status == 401


async def test_bad_credentials_and_duplicates(api: Api) -> None:
    await api.register("dup_user")
    status, problem = await api.call("POST", "/auth/register",
                                     json={"username": "dup_user", "password": PASSWORD, "role": "fan"})
    assert status == 409 and problem["type"] == "/problems/username-taken"
    status, problem = await api.call("POST", "/auth/login", json={"username": "dup_user", "password": "wrong pass"})
    assert status == 401 and problem["type"] == "/problems/bad-credentials"
    status, problem = await api.call("POST", "/auth/login", json={"username": "nobody_here", "password": PASSWORD})
    assert status == 401
    status, problem = await api.call("POST", "/auth/register",
                                     json={"username": "x", "password": "short", "role": "admin", "extra": 1})
    assert status == 422
    paths = {e["path"] for e in problem["errors"]}
    assert {"/username", "/password", "/role", "/extra"} <= paths


async def test_malformed_tokens_and_bodies(api: Api) -> None:
    for header in ("Bearer nonsense", "Basic abc", "Bearer " + "a.b.c", ""):
        status, problem = await api.call("GET", "/users/me", headers={"Authorization": header})
        assert status == 401, header
        assert problem["status"] == 401 and problem["detail"]
    async with api.client.post("/api/v1/auth/login", data=b"{not json",
                               headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400 and resp.content_type == "application/problem+json"
    async with api.client.post("/api/v1/auth/login", data=b"x" * 70_000,
                               headers={"Content-Type": "application/json"}) as resp:
        assert resp.status in (400, 413) and resp.content_type == "application/problem+json"
    status, problem = await api.call("GET", "/no/such/route")
    assert status == 404 and problem["type"] == "/problems/not-found"
    status, problem = await api.call("DELETE", "/streaming/active")
    assert status == 405


async def test_expired_access_token(api: Api) -> None:
    from control_api.security import AccessClaims, issue_access_token

    fan = await api.register("fan_exp")
    token = issue_access_token(api.plane.secret, AccessClaims(fan.id, "sid", "fan"), time.time() - 3600, 60)
    status, problem = await api.call("GET", "/users/me", headers={"Authorization": f"Bearer {token}"})
    assert status == 401 and problem["type"] == "/problems/token-expired"
    forged = issue_access_token("x" * 40, AccessClaims(fan.id, "sid", "admin"), time.time(), 60)
    status, problem = await api.call("GET", "/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert status == 401 and problem["type"] == "/problems/invalid-token"


async def test_role_checks(api: Api) -> None:
    fan = await api.register("plain_fan")
    creator = await api.register("a_creator", "creator")
    status, problem = await api.call("POST", "/streaming/start", fan, json={"title": "nope"})
    assert status == 403 and problem["type"] == "/problems/forbidden"
    status, _ = await api.call("GET", "/admin/streams", creator)
    assert status == 403
    status, _ = await api.call("GET", "/streaming/key")
    assert status == 401
    admin = await api.admin()
    await api.call("GET", "/admin/streams", admin, expect=200)
    await api.call("PATCH", f"/admin/users/{fan.id}", admin, json={"role": "creator", "verified": True}, expect=200)
    # Role changes take effect on the next request with the same token.
    await api.call("POST", "/streaming/start", fan, json={"title": "now a creator"}, expect=201)


async def test_totp_enable_verify_login_disable(api: Api) -> None:
    user = await api.register("otp_user")
    _, setup = await api.call("POST", "/auth/2fa/enable", user, expect=200)
    assert setup["otpauth_uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(setup["secret"])
    status, _ = await api.call("POST", "/auth/2fa/verify", user, json={"code": "000000" if totp.now() != "000000"
                                                                         else "111111"})
    assert status == 401
    await api.call("POST", "/auth/2fa/verify", user, json={"code": totp.now()}, expect=200)

    status, problem = await api.call("POST", "/auth/login", json={"username": "otp_user", "password": PASSWORD})
    assert status == 401 and problem["type"] == "/problems/otp-required"
    # The code used to verify cannot be replayed within its time step.
    status, problem = await api.call("POST", "/auth/login",
                                     json={"username": "otp_user", "password": PASSWORD, "otp": totp.now()})
    assert status == 401 and problem["type"] == "/problems/otp-invalid"
    next_code = totp.at(time.time() + 30)  # the next step is accepted (clock drift window)
    logged = await api.login("otp_user", otp=next_code)
    step_after = totp.at(time.time() + 30)
    status, _ = await api.call("POST", "/auth/2fa/disable", logged, json={"code": step_after})
    assert status == 401  # same step as the login code: refused
    status, _ = await api.call("GET", "/users/me", logged, expect=200)


async def test_api_keys_for_services(api: Api) -> None:
    admin = await api.admin()
    creator = await api.register("svc_creator", "creator")
    fan = await api.register("svc_fan")
    _, key = await api.call("POST", "/auth/api-keys", admin, json={"name": "payments"}, expect=201)
    assert key["key"].startswith("fk_")
    svc = {"X-API-Key": key["key"]}
    _, sub = await api.call("POST", "/subscriptions", headers=svc,
                            json={"creator_id": creator.id, "fan_id": fan.id, "tier": "gold"}, expect=201)
    assert sub["fan_id"] == fan.id and sub["status"] == "active"
    status, _ = await api.call("GET", "/admin/streams", headers=svc)
    assert status == 403
    _, listed = await api.call("GET", "/auth/api-keys", admin, expect=200)
    assert listed["items"][0]["key"] is None
    await api.call("DELETE", f"/auth/api-keys/{key['id']}", admin, expect=204)
    status, problem = await api.call("GET", "/webhooks", headers=svc)
    assert status == 401 and problem["type"] == "/problems/invalid-api-key"


async def test_auth_rate_limits(api_config: ApiConfig) -> None:
    config = replace(api_config, auth_failures_per_user_address=3, auth_rate_per_minute_per_ip=6)
    registry = StreamRegistry(grace_s=0)
    client, app = await serve_api(config, registry)
    try:
        api = Api(client, app, config, registry)
        await api.register("limited")
        statuses = []
        for _ in range(4):
            status, body = await api.call("POST", "/auth/login", json={"username": "limited", "password": "bad pass!"})
            statuses.append(status)
        assert statuses[:3] == [401, 401, 401] and statuses[3] == 429
        assert body["type"] == "/problems/rate-limited" and body["retry_after"] >= 1
        # Another username from the same address is limited by the address bucket.
        results = [(await api.call("POST", "/auth/login", json={"username": f"other{i}", "password": "bad pass!"}))[0]
                   for i in range(3)]
        assert results[-1] == 429
        async with client.post("/api/v1/auth/login", json={"username": "limited", "password": "x" * 8}) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    finally:
        await client.close()


async def test_pagination(api: Api) -> None:
    for i in range(5):
        await api.register(f"page_user_{i}", "creator")
    _, first = await api.call("GET", "/users?limit=2", expect=200)
    assert len(first["items"]) == 2 and first["next_offset"] == 2
    _, last = await api.call("GET", "/users?limit=2&offset=4", expect=200)
    assert len(last["items"]) == 1 and last["next_offset"] is None
    names = [u["username"] for u in first["items"]] + [u["username"] for u in last["items"]]
    assert len(set(names)) == 3
    status, problem = await api.call("GET", "/users?limit=1000")
    assert status == 422 and problem["errors"][0]["path"] == "?limit"
    status, _ = await api.call("GET", "/users?limit=abc")
    assert status == 422
