"""Segments and parts of a stream that needs a playback token are never
cacheable by shared caches; free streams keep long public caching. The engine
runs as ``fanz-media serve`` builds it: the control API's store decides."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from control_api.app import API_PREFIX, PLANE
from control_api.security import PlaybackClaims, issue_playback_token
from engine.app.config import load_config
from engine.app.serve import Engine
from tests.conftest import free_port, publish, wait_for
from tests.control_api.conftest import PASSWORD


async def call(session: aiohttp.ClientSession, base: str, method: str, path: str, token: str | None = None,
               body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, base + API_PREFIX + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def creator_stream(session: aiohttp.ClientSession, base: str, user: str, visibility: str) -> tuple[str, str]:
    """A creator with an open stream: (stream key, playback id)."""
    status, creator = await call(session, base, "POST", "/auth/register", body={
        "username": user, "password": PASSWORD, "role": "creator", "display_name": user})
    assert status == 201, creator
    token = creator["access_token"]
    _, key = await call(session, base, "GET", "/streaming/key", token)
    status, stream = await call(session, base, "POST", "/streaming/start", token,
                                {"title": user, "visibility": visibility})
    assert status == 201, stream
    return key["stream_key"], stream["playback_id"]


async def media_headers(session: aiohttp.ClientSession, url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Cache-Control of the newest segment and of the newest part that the
    media playlist at ``url`` lists."""
    async with session.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    base = url.rsplit("/", 1)[0]
    segment = [line for line in text.splitlines() if line.startswith("seg_")][-1]
    part = [line.split('URI="')[1].split('"')[0] for line in text.splitlines() if line.startswith("#EXT-X-PART:")][-1]
    found = []
    for uri in (segment, part):
        async with session.get(f"{base}/{uri}") as resp:
            assert resp.status == 200, uri
            await resp.read()
            found.append(dict(resp.headers))
    return found[0], found[1]


async def test_paid_media_is_private_and_free_media_public(tmp_path: Path, ffmpeg: str, h264_aac_flv: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": tmp_path / "data", "host": "127.0.0.1"}, rtmp={"port": 0},
        http={"port": port, "api": True}, streams={"reconnect_grace_s": 0.5}, transcode={"enabled": False},
        api={"scrypt_n": 2**12, "public_base_url": base},
    )
    engine = Engine(config)
    await engine.start()
    procs = []
    try:
        assert engine.rtmp is not None and engine.api_app is not None
        async with aiohttp.ClientSession() as session:
            paid_key, paid = await creator_stream(session, base, "paid_star", "subscribers")
            free_key, free = await creator_stream(session, base, "free_star", "free")
            for key in (paid_key, free_key):
                procs.append(await publish(ffmpeg, h264_aac_flv, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{key}"))
            for name in (paid, free):
                await wait_for(lambda n=name: n in engine.hls.outputs and engine.hls.outputs[n].multivariant, 30)

            plane = engine.api_app[PLANE]
            now = time.time()
            token = issue_playback_token(plane.secret, PlaybackClaims(paid, "viewer1", int(now) + 600, now))
            segment, part = await media_headers(session, f"{base}/hls/{paid}/src/media.m3u8?token={token}")
            for headers in (segment, part):
                cache = headers["Cache-Control"]
                assert cache.startswith("private,") and "public" not in cache, cache
            async with session.get(f"{base}/hls/{paid}/src/media.m3u8") as resp:
                assert resp.status == 403

            segment, part = await media_headers(session, f"{base}/hls/{free}/src/media.m3u8")
            for headers in (segment, part):
                assert headers["Cache-Control"] == "public, max-age=86400, immutable"
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        await engine.stop()
