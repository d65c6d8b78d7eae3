"""The whole story over HTTP, end to end on one engine: a creator registers,
gets a key and publishes with ffmpeg over RTMP; a fan without a
subscription is refused and cannot subscribe on their own; once the
subscription is paid the fan joins and plays the stream with hls.js in
headless Chromium; paid gifts reach the leaderboard; webhooks reach a local
receiver with valid signatures; a ban ends the live stream."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control_api.app import API_PREFIX
from control_api.bootstrap import create_admin
from control_api.config import ApiConfig
from control_api.webhooks import SIGNATURE_HEADER, verify_signature
from engine.app.serve import Engine
from tests.conftest import free_port, make_clip, publish, wait_for
from tests.control_api.conftest import PASSWORD
from tests.control_api.test_streaming_api import Receiver


class Http:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, method: str, path: str, token: str | None = None, json_body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base + API_PREFIX + path, json=json_body,
                                        headers=headers) as resp:
            return resp.status, (await resp.json(content_type=None) if resp.status != 204 else None)

    async def get_status(self, url: str) -> int:
        async with self.session.get(url) as resp:
            await resp.read()
            return resp.status


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(240)
async def test_creator_fan_story(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    from engine.app.config import load_config
    from tests.browser.player import play_hls_async

    clip = make_clip(ffmpeg, media_dir / "story_h264_aac.flv", seconds=30, size="426x240", bframes=0)
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    api_settings = {"scrypt_n": 2**12, "public_base_url": base, "webhook_allowed_hosts": ("127.0.0.1",),
                    "webhook_backoff_base_s": 0.1}
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": tmp_path / "data", "host": "127.0.0.1"}, rtmp={"port": 0},
        http={"port": http_port, "api": True}, streams={"reconnect_grace_s": 1.0}, transcode={"enabled": False},
        api=api_settings,
    )
    api_config = ApiConfig(data_dir=tmp_path / "data", **api_settings)  # type: ignore[arg-type]
    await create_admin(api_config, "moderator", PASSWORD, time.time())
    receiver = Receiver()
    await receiver.server.start_server()
    # The engine as `fanz-media serve` builds it: the control API mounted, its
    # store deciding who publishes and who watches.
    engine = Engine(config)
    await engine.start()
    ffmpeg_proc: asyncio.subprocess.Process | None = None
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session, base)
            _, admin = await http.call("POST", "/auth/login", json_body={"username": "moderator",
                                                                         "password": PASSWORD})
            admin_token = admin["access_token"]
            status, hook = await http.call("POST", "/webhooks", admin_token, {"url": receiver.url})
            assert status == 201

            # The creator registers, gets a key and opens a subscribers-only stream.
            status, creator = await http.call("POST", "/auth/register", json_body={
                "username": "star", "password": PASSWORD, "role": "creator", "display_name": "The Star"})
            assert status == 201
            ctoken = creator["access_token"]
            _, key = await http.call("GET", "/streaming/key", ctoken)
            status, stream = await http.call("POST", "/streaming/start", ctoken,
                                             {"title": "Late show", "visibility": "subscribers"})
            assert status == 201
            playback_id = stream["playback_id"]

            # ... and publishes with ffmpeg.
            assert engine.rtmp is not None
            ffmpeg_proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{key['stream_key']}")
            await wait_for(lambda: playback_id in engine.hls.outputs and engine.hls.outputs[playback_id].multivariant,
                           30)
            _, state = await http.call("GET", "/streaming/status", ctoken)
            assert state["live"] is True and state["stream"]["id"] == stream["id"]
            _, active = await http.call("GET", "/streaming/active")
            assert [s["id"] for s in active["items"]] == [stream["id"]]

            # The creator changes effects while live; the engine gets them at once.
            look = {"effects": [{"effect": "watermark", "text": "STAR"}]}
            status, _ = await http.call("PUT", f"/streaming/{stream['id']}/effects", ctoken, {"effects": look})
            assert status == 200
            assert engine.registry.settings(playback_id)["effects"] == look

            # A fan without a subscription is refused, by the API and by the HLS server.
            status, fan = await http.call("POST", "/auth/register", json_body={
                "username": "big_fan", "password": PASSWORD, "role": "fan"})
            ftoken = fan["access_token"]
            status, problem = await http.call("POST", f"/streaming/{stream['id']}/join", ftoken)
            assert status == 403 and problem["type"] == "/problems/subscription-required"
            assert await http.get_status(f"{base}/hls/{playback_id}/index.m3u8") == 403
            assert await http.get_status(f"{base}/hls/{playback_id}/index.m3u8?token=forged.token") == 403

            # The fan cannot subscribe on their own; the payment is recorded by
            # an admin (or the payment service, or a processor's event).
            fan_id = fan["user"]["id"]
            status, _ = await http.call("POST", "/subscriptions", ftoken, {"creator_id": creator["user"]["id"],
                                                                            "fan_id": fan_id})
            assert status == 403
            status, _ = await http.call("POST", "/subscriptions", admin_token, {"creator_id": creator["user"]["id"],
                                                                                 "fan_id": fan_id})
            assert status == 201
            status, joined = await http.call("POST", f"/streaming/{stream['id']}/join", ftoken)
            assert status == 200 and joined["playback_url"].startswith(f"{base}/hls/{playback_id}/index.m3u8?token=")
            report = await play_hls_async(joined["playback_url"], min_time=4.0, timeout=60.0)
            assert report.ok, report
            assert report.played_time >= 4.0

            # Paid gifts show on the leaderboard.
            for gift_id, quantity in (("rose", 5), ("diamond", 1)):
                status, _ = await http.call("POST", f"/streaming/{stream['id']}/gift", admin_token,
                                            {"sender_id": fan_id, "gift_id": gift_id, "quantity": quantity,
                                             "message": "love it"})
                assert status == 201
            _, board = await http.call("GET", f"/streaming/{stream['id']}/gifts")
            assert board["leaderboard"][0]["username"] == "big_fan"
            assert board["leaderboard"][0]["total_cents"] == 5 * 100 + 2000 == board["total_cents"]
            _, viewers = await http.call("GET", f"/streaming/{stream['id']}/viewers", ctoken)
            assert viewers["concurrent"] == 1 and viewers["peak"] == 1

            # A ban ends the live stream at once: the encoder is disconnected.
            status, banned = await http.call("POST", f"/admin/users/{creator['user']['id']}/ban", admin_token,
                                             {"reason": "violation"})
            assert status == 200 and banned["disconnected"] is True
            await asyncio.wait_for(ffmpeg_proc.wait(), 20)
            _, ended = await http.call("GET", f"/streaming/{stream['id']}")
            assert ended["status"] == "ended" and ended["ended_reason"] == "creator banned"
            assert engine.registry.publisher(playback_id) is None
            _, active = await http.call("GET", "/streaming/active")
            assert active["items"] == []

            # Webhooks reached the receiver, signed.
            await wait_for(lambda: "stream.ended" in receiver.events(), 15)
            events = receiver.events()
            assert events[0] == "stream.started" and events.count("gift.sent") == 2, events
            assert events.count("stream.ended") == 1, events
            for headers, body in receiver.received:
                assert verify_signature(hook["secret"], headers[SIGNATURE_HEADER], body, time.time())
            started = json.loads(receiver.received[0][1])
            assert started["data"]["playback_id"] == playback_id
    finally:
        if ffmpeg_proc is not None and ffmpeg_proc.returncode is None:
            ffmpeg_proc.kill()
            await ffmpeg_proc.wait()
        await engine.stop()
        await receiver.server.close()
