"""Access to VOD assets through the real serve wiring (the control API
mounted in the engine, its store deciding who watches): a recording of a
subscribers-only stream is refused without a token (403) and plays once the
platform has recorded the fan's subscription; a pay-per-view recording once
the fan's unlock is recorded; a free one for anyone; a deleted one answers
404 at once, even to a token issued before."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from cluster.storage import LocalStorage
from control_api.app import API_PREFIX
from control_api.bootstrap import create_admin
from control_api.config import ApiConfig
from engine.app.serve import Engine
from tests.conftest import free_port
from tests.control_api.conftest import PASSWORD
from tests.vod.conftest import recording_layout


async def test_recording_access_follows_subscription_unlock_and_deletion(data_dir: Path) -> None:
    from engine.app.config import load_config

    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    api_settings = {"scrypt_n": 2**12, "public_base_url": base}
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": data_dir, "host": "127.0.0.1"}, rtmp={"port": 0},
        http={"port": http_port, "api": True}, transcode={"enabled": False}, api=api_settings,
    )
    await create_admin(ApiConfig(data_dir=data_dir, **api_settings), "moderator", PASSWORD,  # type: ignore[arg-type]
                       time.time())
    engine = Engine(config)
    await engine.start()
    try:
        async with aiohttp.ClientSession() as session:
            async def call(method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with session.request(method, base + API_PREFIX + path, json=body, headers=headers) as r:
                    return r.status, (await r.json(content_type=None) if r.status != 204 else None)

            async def status_of(url: str) -> int:
                async with session.get(url) as r:
                    await r.read()
                    return r.status

            _, admin = await call("POST", "/auth/login", body={"username": "moderator", "password": PASSWORD})
            atoken = admin["access_token"]
            _, creator = await call("POST", "/auth/register", body={
                "username": "star", "password": PASSWORD, "role": "creator", "display_name": "The Star"})
            ctoken = creator["access_token"]
            status, stream = await call("POST", "/streaming/start", ctoken,
                                        {"title": "Late show", "visibility": "subscribers"})
            assert status == 201
            # The recorder writes the recording under its id, then reports it under that id.
            asset = "5f0c1e2d3a4b5c6d7e8f90a1b2c3d4e5"
            recording_layout(data_dir / "storage" / "assets" / "clip-one", LocalStorage(data_dir / "storage"), asset)
            status, rec = await call("POST", f"/streaming/{stream['id']}/recordings", atoken,
                                     {"id": asset, "uri": f"recordings/{asset}/", "duration_s": 8.0, "size_bytes": 1})
            assert status == 201 and rec["id"] == asset
            status, _ = await call("POST", f"/streaming/{stream['id']}/recordings", atoken,
                                   {"id": asset, "uri": "again", "duration_s": 1.0, "size_bytes": 1})
            assert status == 409
            status, _ = await call("POST", f"/streaming/{stream['id']}/recordings", atoken,
                                   {"id": "../../etc", "uri": "x", "duration_s": 1.0, "size_bytes": 1})
            assert status == 422
            fans = {}
            for name in ("sub_fan", "ppv_fan"):
                _, fan = await call("POST", "/auth/register", body={"username": name, "password": PASSWORD,
                                                                     "role": "fan"})
                fans[name] = fan
            vod = f"{base}/vod/{asset}"

            # Subscribers only: no token, a forged one, or no subscription: refused.
            assert await status_of(f"{vod}/index.m3u8") == 403
            assert await status_of(f"{vod}/index.m3u8?token=forged.token") == 403
            status, problem = await call("POST", f"/recordings/{asset}/watch", fans["sub_fan"]["access_token"])
            assert status == 403 and problem["type"] == "/problems/subscription-required"
            status, _ = await call("POST", "/subscriptions", atoken, {"creator_id": creator["user"]["id"],
                                                                      "fan_id": fans["sub_fan"]["user"]["id"]})
            assert status == 201
            status, watch = await call("POST", f"/recordings/{asset}/watch", fans["sub_fan"]["access_token"])
            assert status == 200 and watch["playback_url"].startswith(f"{vod}/index.m3u8?token=")
            token = watch["token"]
            async with session.get(watch["playback_url"]) as r:
                assert r.status == 200 and r.headers["Cache-Control"].startswith("no-cache")
                index = await r.text()
            media_uri = next(line for line in index.splitlines() if line and not line.startswith("#"))
            assert media_uri.endswith(f"token={token}")
            async with session.get(f"{vod}/{media_uri}") as r:
                media = await r.text()
            segment = next(line for line in media.splitlines() if line and not line.startswith("#"))
            variant = media_uri.split("/")[0]
            async with session.get(f"{vod}/{variant}/{segment}") as r:
                assert r.status == 200 and r.headers["Cache-Control"].startswith("private")
            assert await status_of(f"{vod}/{variant}/{segment.split('?')[0]}") == 403
            assert await status_of(f"{vod}/poster.jpg?token={token}") == 200
            # A token for the asset opens no stream, and a stream's opens no asset.
            assert await status_of(f"{base}/hls/{stream['playback_id']}/index.m3u8?token={token}") in (403, 404)

            # Pay-per-view: the unlock, recorded by the platform, opens it.
            status, changed = await call("PATCH", f"/recordings/{asset}", ctoken,
                                         {"title": "Best of", "visibility": "pay_per_view", "price_cents": 500})
            assert status == 200 and changed["visibility"] == "pay_per_view" and changed["title"] == "Best of"
            status, problem = await call("POST", f"/recordings/{asset}/watch", fans["ppv_fan"]["access_token"])
            assert status == 403 and problem["type"] == "/problems/payment-required"
            status, _ = await call("POST", f"/recordings/{asset}/unlock", atoken,
                                   {"user_id": fans["ppv_fan"]["user"]["id"]})
            assert status == 201
            status, watch2 = await call("POST", f"/recordings/{asset}/watch", fans["ppv_fan"]["access_token"])
            assert status == 200
            assert await status_of(watch2["playback_url"]) == 200

            # Free: anyone, at once (the cached decision is forgotten).
            status, _ = await call("PATCH", f"/recordings/{asset}", ctoken, {"visibility": "free"})
            assert status == 200
            assert await status_of(f"{vod}/index.m3u8") == 200

            # Listing: the creator's own, an admin's all, a fan's none; the stream's list is kept.
            _, mine = await call("GET", "/recordings", ctoken)
            assert [r["id"] for r in mine["items"]] == [asset]
            _, theirs = await call("GET", "/recordings", fans["sub_fan"]["access_token"])
            assert theirs["items"] == []
            _, every = await call("GET", "/recordings", atoken)
            assert [r["id"] for r in every["items"]] == [asset]
            status, by_stream = await call("GET", f"/streaming/{stream['id']}/recordings", ctoken)
            assert status == 200 and [r["id"] for r in by_stream["items"]] == [asset]

            # Deletion: only the creator or an admin; then 404 at once for every URL and token.
            status, _ = await call("DELETE", f"/recordings/{asset}", fans["sub_fan"]["access_token"])
            assert status == 403
            status, _ = await call("DELETE", f"/recordings/{asset}", ctoken)
            assert status == 204
            assert await status_of(watch["playback_url"]) == 404
            assert await status_of(f"{vod}/{variant}/{segment}") == 404
            assert await status_of(f"{vod}/index.m3u8") == 404
            assert not (data_dir / "storage" / "recordings" / asset).exists()
            status, _ = await call("GET", f"/recordings/{asset}", atoken)
            assert status == 404
    finally:
        await engine.stop()
