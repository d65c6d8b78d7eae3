"""Two engine processes of one node, run here as two engines in one event
loop with their own public ports, so that each request goes to the engine
chosen: what reaches the engine that does not own a stream is passed to its
owner (LL-HLS blocking reloads, parts, preload hints, WHEP offers and their
DELETE, /streams/NAME), a second publisher is refused, and a publisher that
drops and comes back to the other engine continues there at once."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest

from engine.app.config import load_config
from engine.app.owner_routing import SECRET_HEADER, WorkerIdentity
from engine.app.serve import Engine
from engine.registry import StreamState
from tests.conftest import free_port, make_clip, publish, wait_for

pytest.importorskip("aiortc")
from tests.webrtc.clients import AudioStreamTrack, CounterVideoTrack, WhepClient, WhipClient


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Engine, Engine]]:
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": tmp_path / "data", "dev": True, "host": "127.0.0.1"},
        rtmp={"port": 0},
        http={"port": 0, "api": False},
        transcode={"enabled": False},
        hls={"target_duration_s": 1.0, "part_target_s": 0.5},
        streams={"reconnect_grace_s": 60.0},  # no test waits it out
    )
    ports = (free_port(), free_port())
    secret = secrets.token_urlsafe(16)
    engines = [Engine(config, worker=WorkerIdentity(i, ports, secret, os.getppid())) for i in range(2)]
    started: list[Engine] = []
    try:
        for engine in engines:
            await engine.start()
            started.append(engine)
        yield engines[0], engines[1]
    finally:
        for engine in reversed(started):
            await engine.stop()


def base(engine: Engine) -> str:
    return f"http://127.0.0.1:{engine.http_port}"


def uris(playlist: str, tag: str) -> list[str]:
    return re.findall(tag + r':.*?URI="([^"]+)"', playlist)


@pytest.mark.timeout(120)
async def test_the_other_engine_passes_hls_and_refuses_a_second_publisher(
    pair: tuple[Engine, Engine], ffmpeg: str, media_dir: Path
) -> None:
    owner, other = pair
    clip = make_clip(ffmpeg, media_dir / "routing_h264_aac.flv", seconds=60, size="320x180", rate=30,
                     gop_seconds=1, bframes=0)
    assert owner.rtmp is not None and other.rtmp is not None
    proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{owner.rtmp.port}/live/r")
    try:
        await wait_for(lambda: owner.hls.outputs.get("r") is not None and owner.hls.outputs["r"].segments_written >= 2,
                       30)
        assert owner.directory is not None
        assert owner.directory.owner_now("r") == owner.worker.address  # type: ignore[union-attr]
        assert "r" not in other.hls.outputs
        async with aiohttp.ClientSession() as http:
            url = f"{base(other)}/hls/r/index.m3u8"
            async with http.get(url) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/vnd.apple")
                variant = urljoin(url, next(ln for ln in (await resp.text()).splitlines() if ln and ln[0] != "#"))
            async with http.get(variant) as resp:
                media = await resp.text()
            sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", media).group(1))  # type: ignore[union-attr]
            following = sequence + media.count("#EXTINF")
            # A blocking reload for a part that does not exist yet is held
            # by the owner and answered through the other engine.
            async with http.get(f"{variant}?_HLS_msn={following}&_HLS_part=1") as resp:
                assert resp.status == 200
                held = await resp.text()
            assert any(f"_{following}_1." in uri for uri in uris(held, "#EXT-X-PART"))
            for uri in (uris(held, "#EXT-X-PART")[-1], uris(held, "#EXT-X-PRELOAD-HINT")[0]):
                async with http.get(urljoin(variant, uri)) as resp:
                    assert resp.status == 200, uri
                    assert resp.headers["Content-Length"] == str(len(await resp.read())) != "0"
            segment = next(ln for ln in held.splitlines() if ln and ln[0] != "#")
            async with http.get(urljoin(variant, segment)) as resp:
                assert resp.status == 200 and len(await resp.read()) > 1000
            async with http.get(f"{base(other)}/streams/r") as resp:
                assert resp.status == 200 and (await resp.json())["name"] == "r"
            # The owner's own answer comes back whatever its status; a name no
            # stream can have is answered where it arrives.
            owner.directory.claim_now("ghost", owner.worker.address)  # type: ignore[union-attr]
            async with http.get(f"{base(other)}/hls/ghost/index.m3u8") as resp:
                assert resp.status == 404 and await resp.text() == "no such stream"
            async with http.get(f"{base(other)}/hls/not.a.name/index.m3u8") as resp:
                assert resp.status == 404
            # The private port answers the node's processes only.
            assert other.worker is not None
            private = f"http://{other.worker.address_of(0)}/hls/r/index.m3u8"
            async with http.get(private) as resp:
                assert resp.status == 403
            async with http.get(private, headers={SECRET_HEADER: other.worker.secret}) as resp:
                assert resp.status == 200
        assert other.routing is not None and other.routing.passed >= 7
        # A second publisher of "r" is refused by the engine that does not own it.
        second = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{other.rtmp.port}/live/r")
        assert await second.wait() != 0
        assert other.rtmp.publishes_refused == 1 and other.registry.get("r") is None
    finally:
        proc.kill()
        await proc.wait()


@pytest.mark.timeout(120)
async def test_whep_offer_and_delete_reach_the_owner(pair: tuple[Engine, Engine]) -> None:
    owner, other = pair
    assert owner.webrtc is not None and other.webrtc is not None
    async with aiohttp.ClientSession() as http:
        pub = WhipClient(f"{base(owner)}/whip/w", CounterVideoTrack(), AudioStreamTrack())
        assert await pub.start(http) == 201, pub.body
        assert pub.location is not None and pub.location.startswith("/whip/resource/0.")
        await wait_for(lambda: bool(getattr(owner.registry.get("w"), "tracks", ())), 20)
        viewer = WhepClient(f"{base(other)}/whep/w", decode=False)
        assert await viewer.start(http) == 201, viewer.body
        assert viewer.location is not None and viewer.location.startswith("/whep/resource/0.")
        assert len(owner.webrtc.viewers) == 1 and not other.webrtc.viewers
        await wait_for(lambda: viewer.video_frames > 20 and viewer.audio_frames > 10, 30)
        # A second WHIP publisher of the same name, at the other engine: 409.
        again = WhipClient(f"{base(other)}/whip/w", CounterVideoTrack(), AudioStreamTrack())
        assert await again.start(http) == 409
        await again.pc.close()
        assert await viewer.stop(http, base(other)) == 200
        await wait_for(lambda: not owner.webrtc.viewers, 10)
        async with http.delete(f"{base(other)}/whep/resource/7.nothing") as resp:
            assert resp.status == 404
        assert await pub.stop(http, base(other)) == 200
        await wait_for(lambda: not owner.webrtc.publishers, 20)


@pytest.mark.timeout(120)
async def test_a_publisher_back_at_the_other_engine_takes_its_name_at_once(
    pair: tuple[Engine, Engine], ffmpeg: str, media_dir: Path
) -> None:
    owner, other = pair
    clip = make_clip(ffmpeg, media_dir / "routing_h264_aac.flv", seconds=60, size="320x180", rate=30,
                     gop_seconds=1, bframes=0)
    assert owner.rtmp is not None and other.rtmp is not None and other.worker is not None
    first = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{owner.rtmp.port}/live/g")
    await wait_for(lambda: bool(getattr(owner.registry.get("g"), "tracks", ())), 30)
    first.kill()
    await first.wait()
    await wait_for(lambda: getattr(owner.registry.get("g"), "state", None) is StreamState.WAITING, 10)
    # Back within the grace window, but at the other engine.
    again = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{other.rtmp.port}/live/g")
    try:
        await wait_for(lambda: bool(getattr(other.registry.get("g"), "tracks", ())), 30)
        assert owner.registry.get("g") is None
        assert other.directory is not None and other.directory.owner_now("g") == other.worker.address
        assert again.returncode is None
    finally:
        again.kill()
        await again.wait()
