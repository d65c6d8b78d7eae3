"""Geographic restrictions through the real serve wiring: the engine with
its control API, 127.0.0.1 as its trusted proxy, ffmpeg publishing two
streams over RTMP. Viewers' addresses arrive in X-Forwarded-For and are
real addresses that the bundled database maps to Germany and to France.

A paid stream allows Germany only; a free stream blocks France. For each,
every protected URL (multivariant and media playlists, init segment,
segment, part, the AES key, the ClearKey licence, a WHEP offer) answers
the allowed viewer as usual and the blocked one 451, with a body that says
why and not who. The token is refused at issue too. An X-Forwarded-For
from a peer that is not a trusted proxy is ignored. Every request of a
viewer costs one database lookup for the whole session.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp

from control_api.app import API_PREFIX, PLANE
from control_api.bootstrap import create_admin
from control_api.config import ApiConfig
from drm.clearkey import b64url
from engine.app.config import load_config
from engine.app.serve import Engine
from tests.conftest import free_port, publish, wait_for
from tests.control_api.conftest import PASSWORD
from tests.geo_data import address_in, database_path
from tests.webrtc.clients import WhepClient

API_SETTINGS: dict[str, Any] = {"scrypt_n": 2**10}


class Viewer:
    """Requests from one address: ``forwarded`` goes in X-Forwarded-For
    (what the trusted proxy in front of the engine would write)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, forwarded: str | None) -> None:
        self.session, self.base, self.forwarded = session, base, forwarded

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {"X-Forwarded-For": self.forwarded} if self.forwarded else {}
        return {**out, **(extra or {})}

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.session.get(self.base + path, headers=self.headers()) as resp:
            return resp.status, await resp.read()

    async def licence(self, path: str, kid: bytes) -> tuple[int, bytes]:
        body = json.dumps({"kids": [b64url(kid)], "type": "temporary"})
        async with self.session.post(self.base + path, data=body,
                                     headers=self.headers({"Content-Type": "application/json"})) as resp:
            return resp.status, await resp.read()

    async def api(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        headers = self.headers({"Authorization": f"Bearer {token}"} if token else None)
        async with self.session.request(method, self.base + API_PREFIX + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def whep(self, name: str, token: str | None) -> tuple[int, str]:
        query = f"?token={token}" if token else ""
        client = WhepClient(f"{self.base}/whep/{name}{query}", decode=False)
        status = await client.start(self.session, self.headers())
        await client.stop(self.session, self.base)
        return status, client.body


async def protected_urls(viewer: Viewer, name: str, token: str | None) -> list[str]:
    """Every URL a player of ``name`` fetches, read from the playlists as the
    allowed viewer gets them (token carried in each URI)."""
    query = f"?token={token}" if token else ""
    multivariant = f"/hls/{name}/index.m3u8{query}"
    status, body = await viewer.get(multivariant)
    assert status == 200, body
    media_uri = next(line for line in body.decode().splitlines() if line and not line.startswith("#"))
    media = f"/hls/{name}/{media_uri}"
    text = ""
    for _ in range(100):
        status, raw = await viewer.get(media)
        assert status == 200, raw
        text = raw.decode()
        if "seg_" in text and "#EXT-X-PART:" in text:
            break
        await asyncio.sleep(0.2)
    variant = media.rsplit("/", 1)[0]
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)
    part = re.findall(r'#EXT-X-PART:.*URI="([^"]+)"', text)
    segment = [line for line in text.splitlines() if line.startswith("seg_")]
    assert init and part and segment, text
    return [multivariant, media, *(f"{variant}/{uri}" for uri in (init.group(1), segment[-1], part[-1]))]


async def test_blocked_countries_get_451_on_every_protected_url(tmp_path: Path, ffmpeg: str,
                                                                 h264_aac_flv: Path) -> None:
    path = database_path()
    germany, france, france6 = address_in(path, "DE"), address_in(path, "FR"), address_in(path, "FR", 6)
    data_dir = tmp_path / "data"
    await create_admin(ApiConfig(data_dir=data_dir, **API_SETTINGS), "moderator", PASSWORD, time.time())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": data_dir, "host": "127.0.0.1", "dev": False}, rtmp={"port": 0},
        http={"port": port, "api": True}, streams={"reconnect_grace_s": 0.5}, transcode={"enabled": False},
        api={**API_SETTINGS, "public_base_url": base, "trusted_proxies": ["127.0.0.1"]},
        drm={"key_requests_per_minute": 10_000},
    )
    engine = Engine(config)
    await engine.start()
    procs = []
    try:
        assert engine.rtmp is not None and engine.api_app is not None and engine.webrtc is not None
        plane = engine.api_app[PLANE]
        async with aiohttp.ClientSession() as session, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        ) as outside:
            local = Viewer(session, base, None)
            de, fr, fr6 = (Viewer(session, base, a) for a in (germany, france, france6))
            # Behind a proxy that is not trusted, X-Forwarded-For is only text.
            untrusted_de, untrusted_fr = Viewer(outside, base, germany), Viewer(outside, base, france)

            _, admin = await local.api("POST", "/auth/login", body={"username": "moderator", "password": PASSWORD})
            users: dict[str, Any] = {}
            for name, role in (("paid_star", "creator"), ("free_star", "creator"), ("fan", "fan")):
                status, users[name] = await local.api("POST", "/auth/register", body={
                    "username": name, "password": PASSWORD, "role": role})
                assert status == 201
            streams: dict[str, Any] = {}
            for creator, visibility in (("paid_star", "subscribers"), ("free_star", "free")):
                token = users[creator]["access_token"]
                _, key = await local.api("GET", "/streaming/key", token)
                status, streams[creator] = await local.api("POST", "/streaming/start", token,
                                                           {"title": creator, "visibility": visibility})
                assert status == 201
                procs.append(await publish(ffmpeg, h264_aac_flv,
                                           f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{key['stream_key']}"))
            paid, free = streams["paid_star"]["playback_id"], streams["free_star"]["playback_id"]
            # The paid stream's creator allows Germany only; an admin blocks France from the free one.
            status, _ = await local.api("PUT", f"/streaming/{streams['paid_star']['id']}/geo",
                                        users["paid_star"]["access_token"], {"geo": {"mode": "allow",
                                                                                     "countries": ["DE"]}})
            assert status == 200
            status, _ = await local.api("PUT", f"/streaming/{streams['free_star']['id']}/geo",
                                        admin["access_token"], {"geo": {"mode": "block", "countries": ["FR"]}})
            assert status == 200
            status, _ = await local.api("POST", "/subscriptions", admin["access_token"], {
                "creator_id": users["paid_star"]["user"]["id"], "fan_id": users["fan"]["user"]["id"]})
            assert status == 201

            # Token issue: refused in France with 451, granted in Germany.
            join = f"/streaming/{streams['paid_star']['id']}/join"
            status, problem = await fr.api("POST", join, users["fan"]["access_token"])
            assert status == 451 and problem["type"] == "/problems/geo-blocked", problem
            assert "(FR)" in problem["detail"] and france not in json.dumps(problem)
            status, joined = await de.api("POST", join, users["fan"]["access_token"])
            assert status == 200, joined
            token = joined["token"]

            for name in (paid, free):
                await wait_for(lambda n=name: n in engine.hls.outputs and engine.hls.outputs[n].multivariant, 30)
            key_periods = {n: await asyncio.to_thread(engine.key_provider.key_period, n, 0) for n in (paid, free)}

            cases = [(paid, token, de, [fr, fr6, untrusted_de]), (free, None, de, [fr, fr6])]
            for name, viewer_token, allowed, blocked_viewers in cases:
                urls = await protected_urls(allowed, name, viewer_token)
                query = f"?token={viewer_token}" if viewer_token else ""
                kid = key_periods[name].key.kid
                key_url, licence_url = f"/keys/{name}/{kid.hex()}{query}", f"/drm/clearkey/{name}{query}"
                for url in urls:
                    status, body = await allowed.get(url)
                    assert status == 200 and body, (name, url, status)
                assert await allowed.get(key_url) == (200, key_periods[name].key.key)
                assert (await allowed.licence(licence_url, kid))[0] == 200
                assert (await allowed.whep(name, viewer_token))[0] == 201

                for blocked in blocked_viewers:
                    answers = [await blocked.get(url) for url in [*urls, key_url]]
                    answers.append(await blocked.licence(licence_url, kid))
                    status, text = await blocked.whep(name, viewer_token)
                    answers.append((status, text.encode()))
                    for url, (status, body) in zip([*urls, key_url, licence_url, "whep"], answers, strict=True):
                        assert status == 451, (name, blocked.forwarded, url, status, body[:200])
                        reason = body.decode()
                        assert "not available in your" in reason, reason
                        assert str(blocked.forwarded) not in reason and "127.0.0.2" not in reason

            # The untrusted peer's X-Forwarded-For (France) does not block it from the free stream either.
            free_urls = await protected_urls(de, free, None)
            for url in free_urls:
                assert (await untrusted_fr.get(url))[0] == 200, url
            # No token at all in France: still 451 (the country is the first refusal); in Germany: 403.
            assert (await fr.get(f"/hls/{paid}/index.m3u8"))[0] == 451
            assert (await de.get(f"/hls/{paid}/index.m3u8"))[0] == 403

            # One database lookup per viewer address for all these requests:
            # Germany, France (v4 and v6), and the untrusted peer itself.
            assert plane.geo.lookups == 4
            async with session.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
            assert "fanz_geo_lookups_total 4.0" in metrics
            refused = float(re.search(r"^fanz_geo_refused_total (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
            assert refused == 3 * 8 + 2 * 8 + 1  # eight URLs for each blocked viewer, and the tokenless one
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        await engine.stop()
