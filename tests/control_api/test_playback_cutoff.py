"""Through the real engine: fans play a paid LL-HLS stream published with
ffmpeg over RTMP (playlists, segments and parts over HTTP with their
playback tokens), then one cancels, one is banned, one is refunded by the
processor and one is blocked by the creator. Each is refused from the next
request on, including a blocking playlist reload already held open, while
the others keep playing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest

from control_api.app import API_PREFIX
from control_api.bootstrap import create_admin
from control_api.config import ApiConfig
from engine.app.serve import Engine
from tests.conftest import free_port, make_clip, publish, wait_for
from tests.control_api.conftest import PASSWORD

SECRET = "whsec_" + "e" * 40


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, method: str, path: str, token: str | None = None, body: Any = None,
                   expect: int | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base + API_PREFIX + path, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None) if resp.status != 204 else None
            if expect is not None:
                assert resp.status == expect, (method, path, resp.status, data)
            return data

    async def processor_event(self, event_type: str, data: dict[str, Any], event_id: str) -> Any:
        """What the test's fake processor sends: a signed event."""
        body = json.dumps({"id": event_id, "type": event_type, "data": data}).encode()
        t = int(time.time())
        mac = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        async with self.session.post(f"{self.base}{API_PREFIX}/payments/webhook/fakepay", data=body,
                                     headers={"Payment-Signature": f"t={t},v1={mac}"}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def get(self, url: str) -> tuple[int, str]:
        async with self.session.get(url) as resp:
            return resp.status, (await resp.read()).decode("latin-1")


async def media_urls(client: Client, playback_url: str) -> tuple[str, str, str, int]:
    """``(media playlist, a segment, a part, last sequence number)`` of the
    first variant, as a player finds them."""
    status, text = await client.get(playback_url)
    assert status == 200, text
    variant = urljoin(playback_url, next(ln for ln in text.splitlines() if ln and not ln.startswith("#")))
    status, media = await client.get(variant)
    assert status == 200, media
    segment = urljoin(variant, [ln for ln in media.splitlines() if ln and not ln.startswith("#")][-1])
    part = urljoin(variant, re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', media)[-1])
    msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", media).group(1))  # type: ignore[union-attr]
    msn += len([ln for ln in media.splitlines() if ln.startswith("#EXTINF")]) - 1
    return variant, segment, part, msn


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


async def answers(client: Client, playback_url: str, reference_url: str) -> set[int]:
    """The statuses of every kind of request a player makes (multivariant
    playlist, media playlist, segment, part) with ``playback_url``'s token,
    for media that exists now (found through ``reference_url``)."""
    urls = [playback_url, *(await media_urls(client, reference_url))[:3]]
    mine, theirs = token_of(playback_url), token_of(reference_url)
    return {(await client.get(u.replace(theirs, mine)))[0] for u in urls}


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_cancel_ban_refund_and_block_cut_playback(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    from engine.app.config import load_config

    clip = make_clip(ffmpeg, media_dir / "cutoff_h264_aac.flv", seconds=40, size="320x180", bframes=0)
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    api_settings: dict[str, Any] = {"scrypt_n": 2**10, "public_base_url": base,
                                    "payment_processors": {"fakepay": SECRET}}
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": tmp_path / "data", "host": "127.0.0.1"}, rtmp={"port": 0},
        http={"port": http_port, "api": True}, transcode={"enabled": False},
        hls={"low_latency": True, "target_duration_s": 1.0, "part_target_s": 0.25}, api=api_settings,
    )
    await create_admin(ApiConfig(data_dir=tmp_path / "data", **api_settings), "moderator", PASSWORD, time.time())
    engine = Engine(config)
    await engine.start()
    proc: asyncio.subprocess.Process | None = None
    try:
        async with aiohttp.ClientSession() as session:
            c = Client(session, base)
            admin = (await c.call("POST", "/auth/login", body={"username": "moderator", "password": PASSWORD},
                                  expect=200))["access_token"]
            creator = await c.call("POST", "/auth/register", body={"username": "headliner", "password": PASSWORD,
                                                                   "role": "creator"}, expect=201)
            ctoken, creator_id = creator["access_token"], creator["user"]["id"]
            key = await c.call("GET", "/streaming/key", ctoken, expect=200)
            stream = await c.call("POST", "/streaming/start", ctoken, {"title": "Paid show",
                                                                       "visibility": "subscribers"}, expect=201)
            assert engine.rtmp is not None
            proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{key['stream_key']}")
            pid = stream["playback_id"]
            await wait_for(lambda: pid in engine.hls.outputs and engine.hls.outputs[pid].multivariant, 30)

            fans: dict[str, dict[str, Any]] = {}
            for name in ("canceller", "banned", "refunded", "blocked", "loyal"):
                fans[name] = await c.call("POST", "/auth/register", body={"username": name, "password": PASSWORD,
                                                                          "role": "fan"}, expect=201)
            # Paid through the admin path, or (the one refunded later) the processor.
            for name in ("canceller", "banned", "blocked", "loyal"):
                await c.call("POST", "/subscriptions", admin, {"creator_id": creator_id,
                                                               "fan_id": fans[name]["user"]["id"]}, expect=201)
            await c.processor_event("subscription.paid", {"fan_id": fans["refunded"]["user"]["id"],
                                                          "creator_id": creator_id}, "evt_paid_1")
            urls = {}
            for name, fan in fans.items():
                joined = await c.call("POST", f"/streaming/{stream['id']}/join", fan["access_token"], expect=200)
                urls[name] = joined["playback_url"]
            await wait_for(lambda: len(engine.hls.outputs[pid].variants) > 0, 10)

            async def playing() -> set[str]:
                """Who is still served; the others are refused every request."""
                served = set()
                for name in fans:
                    statuses = await answers(c, urls[name], urls["loyal"])
                    assert statuses in ({200}, {403}), (name, statuses)
                    if statuses == {200}:
                        served.add(name)
                return served

            assert await playing() == set(fans)
            assert (await c.get(f"{base}/hls/{pid}/index.m3u8"))[0] == 403


            # A blocking playlist reload held open when the access ends is refused when it is answered.
            variant, _, _, msn = await media_urls(c, urls["canceller"])
            held = asyncio.create_task(c.get(f"{variant}&_HLS_msn={msn + 1}"))
            await asyncio.sleep(0.05)
            subs = await c.call("GET", "/subscriptions", fans["canceller"]["access_token"], expect=200)
            await c.call("DELETE", f"/subscriptions/{subs['items'][0]['id']}", fans["canceller"]["access_token"],
                         expect=200)
            assert (await held)[0] == 403
            assert await playing() == {"banned", "refunded", "blocked", "loyal"}

            await c.call("POST", f"/admin/users/{fans['banned']['user']['id']}/ban", admin, {"reason": "abuse"},
                         expect=200)
            assert await playing() == {"refunded", "blocked", "loyal"}

            receipt = await c.processor_event("payment.refunded", {"payment_event_id": "evt_paid_1"}, "evt_refund_1")
            assert receipt["grant_kind"] == "subscription"
            assert await playing() == {"blocked", "loyal"}

            await c.call("POST", "/users/me/blocks", ctoken, {"user_id": fans["blocked"]["user"]["id"]}, expect=201)
            assert await playing() == {"loyal"}
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()
