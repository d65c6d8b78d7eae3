"""Key delivery through the real serve wiring (the engine with its control
API on loopback): ``GET /keys/NAME/KID`` and ``POST /drm/clearkey/NAME``
answer exactly the viewers who may play NAME, with NAME's keys only; every
other request is refused, no key ever reaches a log, and no content key
lies in clear anywhere in the data directory."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control_api.app import API_PREFIX, PLANE
from control_api.bootstrap import create_admin
from control_api.config import ApiConfig
from control_api.security import PlaybackClaims, issue_playback_token
from drm.clearkey import b64url
from drm.config import ProviderKind
from drm.model import KeyPeriod
from engine.app.serve import Engine
from tests.conftest import start_engine
from tests.control_api.conftest import PASSWORD
from tests.drm.cpix_service import running_service, service_key
from tests.drm.test_keys import assert_no_clear_key, clear_forms

API_SETTINGS: dict[str, Any] = {"scrypt_n": 2**10}


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def api(self, method: str, path: str, token: str | None = None, body: Any = None,
                  expect: int | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base + API_PREFIX + path, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None)
            if expect is not None:
                assert resp.status == expect, (method, path, resp.status, data)
            return data

    async def key(self, name: str, kid: bytes | str, token: str | None = None) -> tuple[int, bytes]:
        kid_text = kid.hex() if isinstance(kid, bytes) else kid
        params = {"token": token} if token is not None else {}
        async with self.session.get(f"{self.base}/keys/{name}/{kid_text}", params=params) as resp:
            assert resp.headers["Cache-Control"] == "no-store"
            return resp.status, await resp.read()

    async def licence(self, name: str, body: bytes | dict[str, Any], token: str | None = None) -> tuple[int, Any]:
        params = {"token": token} if token is not None else {}
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        async with self.session.post(f"{self.base}/drm/clearkey/{name}", params=params, data=data,
                                     headers={"Content-Type": "application/json"}) as resp:
            assert resp.headers["Cache-Control"] == "no-store"
            raw = await resp.read()
            return resp.status, json.loads(raw) if resp.status == 200 else raw.decode()


def licence_request(*periods: KeyPeriod) -> dict[str, Any]:
    return {"kids": [b64url(p.key.kid) for p in periods], "type": "temporary"}


def keys_in(answer: dict[str, Any]) -> dict[bytes, bytes]:
    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    assert answer["type"] == "temporary"
    assert all(k["kty"] == "oct" for k in answer["keys"])
    return {unb64(k["kid"]): unb64(k["k"]) for k in answer["keys"]}


async def api_engine(data_dir: Path, **drm: object) -> Engine:
    await create_admin(ApiConfig(data_dir=data_dir, **API_SETTINGS), "moderator", PASSWORD, time.time())
    engine = await start_engine(data_dir, server={"dev": False}, http={"api": True}, api=API_SETTINGS, drm=drm)
    assert isinstance(engine, Engine)
    return engine


async def test_the_authorization_matrix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    data_dir = tmp_path / "data"
    engine = await api_engine(data_dir, key_requests_per_minute=10_000)
    keys: list[KeyPeriod] = []
    try:
        async with aiohttp.ClientSession() as session:
            c = Client(session, f"http://127.0.0.1:{engine.http_port}")
            admin = (await c.api("POST", "/auth/login", body={"username": "moderator", "password": PASSWORD},
                                 expect=200))["access_token"]
            users = {}
            for name, role in (("paid_creator", "creator"), ("other_creator", "creator"), ("free_creator", "creator"),
                               ("loyal", "fan"), ("banned", "fan"), ("stranger", "fan")):
                users[name] = await c.api("POST", "/auth/register", body={"username": name, "password": PASSWORD,
                                                                          "role": role}, expect=201)
            streams = {}
            for creator, visibility in (("paid_creator", "subscribers"), ("other_creator", "subscribers"),
                                        ("free_creator", "free")):
                streams[creator] = await c.api("POST", "/streaming/start", users[creator]["access_token"],
                                               {"title": "show", "visibility": visibility, "protection": "cbcs"},
                                               expect=201)
            paid, other, free = (streams[n]["playback_id"] for n in ("paid_creator", "other_creator", "free_creator"))
            for fan, creator in (("loyal", "paid_creator"), ("loyal", "other_creator"), ("banned", "paid_creator")):
                await c.api("POST", "/subscriptions", admin, {"creator_id": users[creator]["user"]["id"],
                                                              "fan_id": users[fan]["user"]["id"]}, expect=201)

            async def join(fan: str, creator: str) -> str:
                joined = await c.api("POST", f"/streaming/{streams[creator]['id']}/join",
                                     users[fan]["access_token"], expect=200)
                return str(joined["token"])

            loyal, banned, loyal_other = (await join("loyal", "paid_creator"), await join("banned", "paid_creator"),
                                          await join("loyal", "other_creator"))
            await c.api("POST", f"/streaming/{streams['paid_creator']['id']}/join", users["stranger"]["access_token"],
                        expect=403)
            plane = engine.api_app[PLANE]  # type: ignore[index]
            now = time.time()
            expired = issue_playback_token(
                plane.secret, PlaybackClaims(paid, users["loyal"]["user"]["id"], int(now) - 5, now - 60))

            # What the packager would do: ask the provider for key periods, off the loop.
            provider = engine.key_provider
            p0, p1, o0, f0 = [await asyncio.to_thread(provider.key_period, n, i)
                              for n, i in ((paid, 0), (paid, 1), (other, 0), (free, 0))]
            keys = [p0, p1, o0, f0]

            # Allowed: the subscriber, for this stream's keys.
            assert await c.key(paid, p0.key.kid, loyal) == (200, p0.key.key)
            assert await c.key(paid, p1.key.kid.hex().upper(), loyal) == (200, p1.key.key)
            status, answer = await c.licence(paid, licence_request(p0, p1), loyal)
            assert status == 200 and keys_in(answer) == {p0.key.kid: p0.key.key, p1.key.kid: p1.key.key}
            # Only the requested key IDs that belong to this stream.
            status, answer = await c.licence(paid, licence_request(o0, p1), loyal)
            assert status == 200 and keys_in(answer) == {p1.key.kid: p1.key.key}
            assert (await c.key(paid, o0.key.kid, loyal))[0] == 404
            assert (await c.licence(paid, licence_request(o0, f0), loyal))[0] == 404
            assert (await c.key(other, o0.key.kid, loyal_other)) == (200, o0.key.key)
            # A free stream's keys need no token, like its playlists.
            assert await c.key(free, f0.key.kid) == (200, f0.key.key)

            # Refused: no token, an expired one, one for another stream, nonsense.
            for token in (None, expired, loyal_other, "garbage", loyal + "x", ""):
                assert (await c.key(paid, p0.key.kid, token))[0] == 403, token
                assert (await c.licence(paid, licence_request(p0), token))[0] == 403, token
            assert (await c.key(free, f0.key.kid, None))[0] == 200
            # The viewer whose access ended: banned (a revocation).
            assert (await c.key(paid, p0.key.kid, banned))[0] == 200
            await c.api("POST", f"/admin/users/{users['banned']['user']['id']}/ban", admin, {"reason": "abuse"},
                        expect=200)
            assert (await c.key(paid, p0.key.kid, banned))[0] == 403
            assert (await c.licence(paid, licence_request(p0), banned))[0] == 403
            assert (await c.key(paid, p0.key.kid, loyal))[0] == 200  # the others play on
            # Bad input, with a good token: never a 500.
            assert (await c.key(paid, "not-a-kid", loyal))[0] == 400
            assert (await c.key("no such name!", p0.key.kid, loyal))[0] == 404
            for body in (b"", b"{", b"[" * 50_000, b'{"kids": ["AAAA"]}', b"\xff" * 100, b"{}" * 20_000,
                         json.dumps({"kids": [b64url(p0.key.kid)], "type": "persistent-license"}).encode()):
                status, text = await c.licence(paid, body, loyal)
                assert status in (400, 413), (body[:20], status, text)
            async with session.options(f"{c.base}/drm/clearkey/{paid}",
                                       headers={"Access-Control-Request-Method": "POST",
                                                "Access-Control-Request-Headers": "content-type"}) as resp:
                assert resp.status == 204 and "POST" in resp.headers["Access-Control-Allow-Methods"]
            async with session.get(f"{c.base}/metrics") as resp:
                metrics = await resp.text()
            assert 'fanz_drm_key_requests_total{result="refused"}' in metrics
    finally:
        await engine.stop()
    # No key in any log line, however formatted.
    logged = caplog.text + "\n".join(repr(r.args) + str(r.msg) for r in caplog.records)
    assert keys and logged
    for period in keys:
        raw, *text_forms = clear_forms(period.key.key)
        for form in [repr(raw), *(f.decode() for f in text_forms)]:
            assert form not in logged
    assert_no_clear_key(data_dir, [p.key.key for p in keys])


async def test_dev_mode_answers_without_a_token_and_requests_are_rate_limited(tmp_path: Path) -> None:
    engine = await start_engine(tmp_path / "data", drm={"key_requests_per_minute": 3})
    assert isinstance(engine, Engine)
    try:
        period = await asyncio.to_thread(engine.key_provider.key_period, "devstream", 0)
        async with aiohttp.ClientSession() as session:
            c = Client(session, f"http://127.0.0.1:{engine.http_port}")
            assert await c.key("devstream", period.key.kid) == (200, period.key.key)
            status, answer = await c.licence("devstream", licence_request(period))
            assert status == 200 and keys_in(answer) == {period.key.kid: period.key.key}
            assert (await c.key("devstream", period.key.kid))[0] == 200
            async with session.get(f"{c.base}/keys/devstream/{period.key.kid.hex()}") as resp:
                assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
            # Each token has its own allowance.
            assert (await c.key("devstream", period.key.kid, "viewer-2"))[0] == 200
    finally:
        await engine.stop()


async def test_key_delivery_can_be_switched_off(tmp_path: Path) -> None:
    engine = await start_engine(tmp_path / "data", drm={"clear_key_delivery": False})
    assert isinstance(engine, Engine)
    try:
        period = await asyncio.to_thread(engine.key_provider.key_period, "devstream", 0)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{engine.http_port}/keys/devstream/{period.key.kid.hex()}") as r:
                assert r.status == 404 and await r.read() != period.key.key
    finally:
        await engine.stop()


async def test_serve_with_a_cpix_key_service_hands_out_its_keys(tmp_path: Path) -> None:
    async with running_service() as service:
        engine = await start_engine(tmp_path / "data", drm={
            "provider": ProviderKind.HTTP, "key_service_url": f"{service.base}/cpix/good",
            "key_service_systems": ["fairplay"],
        })
        assert isinstance(engine, Engine)
        try:
            period = await asyncio.to_thread(engine.key_provider.key_period, "devstream", 2)
            assert period.key.key == service_key("devstream", 2)
            assert any(s.hls_key_uri and s.hls_key_uri.startswith("skd://") for s in period.systems)
            async with aiohttp.ClientSession() as session:
                c = Client(session, f"http://127.0.0.1:{engine.http_port}")
                assert await c.key("devstream", period.key.kid) == (200, period.key.key)
        finally:
            await engine.stop()
    assert_no_clear_key(tmp_path / "data", [period.key.key])
