"""Geo answers on a node of several engine processes (two engines in one
event loop, as tests/test_owner_routing.py runs them): a request that
reaches the engine without the stream is passed to the owner, and the
owner's playback check sees the viewer's address from the trusted proxy's
X-Forwarded-For, not the proxy's nor the passing engine's."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest

from engine.app.config import load_config
from engine.app.owner_routing import WorkerIdentity
from engine.app.serve import Engine
from engine.auth import PlaybackGrant, PlaybackRequest, PublishGrant, PublishRequest
from engine.errors import GeoBlocked
from tests.conftest import free_port, make_clip, publish, wait_for

GERMANY, FRANCE = "53.127.255.255", "86.223.255.255"


class CountryChecks:
    """Any key publishes under its own name; viewers at ``FRANCE`` are
    refused for their country. Records every address it is asked about."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        return PublishGrant(playback_name=request.key)

    async def publish_ended(self, grant: PublishGrant) -> None:
        return None

    async def authorize_playback(self, request: PlaybackRequest) -> PlaybackGrant:
        self.seen.append(request.remote)
        if request.remote == FRANCE:
            raise GeoBlocked("FR")
        return PlaybackGrant(public=True)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Engine, Engine, CountryChecks]]:
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": tmp_path / "data", "dev": False, "host": "127.0.0.1"},
        rtmp={"port": 0}, http={"port": 0, "api": False}, transcode={"enabled": False},
        webrtc={"enabled": False}, api={"trusted_proxies": ["127.0.0.1"]},
        hls={"target_duration_s": 1.0, "part_target_s": 0.5}, streams={"reconnect_grace_s": 60.0},
    )
    ports = (free_port(), free_port())
    secret = secrets.token_urlsafe(16)
    checks = CountryChecks()
    engines = [Engine(config, checks=(checks, checks), worker=WorkerIdentity(i, ports, secret, os.getppid()))
               for i in range(2)]
    started: list[Engine] = []
    try:
        for engine in engines:
            await engine.start()
            started.append(engine)
        yield engines[0], engines[1], checks
    finally:
        for engine in reversed(started):
            await engine.stop()


@pytest.mark.timeout(120)
async def test_a_passed_request_keeps_the_viewers_country(
    pair: tuple[Engine, Engine, CountryChecks], ffmpeg: str, media_dir: Path
) -> None:
    owner, other, checks = pair
    clip = make_clip(ffmpeg, media_dir / "routing_h264_aac.flv", seconds=60, size="320x180", rate=30,
                     gop_seconds=1, bframes=0)
    assert owner.rtmp is not None
    proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{owner.rtmp.port}/live/g")
    try:
        await wait_for(lambda: owner.hls.outputs.get("g") is not None and owner.hls.outputs["g"].segments_written >= 2,
                       30)
        assert "g" not in other.hls.outputs
        url = f"http://127.0.0.1:{other.http_port}/hls/g/index.m3u8"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers={"X-Forwarded-For": GERMANY}) as resp:
                assert resp.status == 200
                variant = urljoin(url, next(ln for ln in (await resp.text()).splitlines() if ln and ln[0] != "#"))
            for target in (url, variant):
                async with http.get(target, headers={"X-Forwarded-For": FRANCE}) as resp:
                    assert resp.status == 451 and "(FR)" in await resp.text()
                async with http.get(target, headers={"X-Forwarded-For": f"{FRANCE}, {GERMANY}"}) as resp:
                    assert resp.status == 200  # the proxy's own entry is the one believed
        assert other.routing is not None and other.routing.passed >= 5
        assert checks.seen and set(checks.seen) <= {GERMANY, FRANCE}
    finally:
        proc.kill()
        await proc.wait()
