"""WHIP ingest and WHEP playback between real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from engine.auth import AllowAllChecks
from engine.codecs import iter_avcc, parse_asc, parse_avcc
from engine.media import Codec, Packet, StreamStarted
from engine.registry import StreamRegistry
from tests.conftest import wait_for
from tests.webrtc.clients import AudioStreamTrack, CounterVideoTrack, WhepClient, WhipClient
from webrtc.config import WebRtcConfig
from webrtc.http import WebRtcHttp

pytestmark = pytest.mark.timeout(90)


@dataclass
class Node:
    registry: StreamRegistry
    webrtc: WebRtcHttp
    base: str
    http: aiohttp.ClientSession


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    registry = StreamRegistry(grace_s=0.5)
    checks = AllowAllChecks()
    rtc = WebRtcHttp(registry, checks, checks, WebRtcConfig(include_interface_addresses=False))
    app = web.Application()
    app.router.add_routes(rtc.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        yield Node(registry, rtc, f"http://127.0.0.1:{port}", http)
    await rtc.close()
    registry.close()
    await runner.cleanup()


async def test_whip_h264_opus_enters_registry_as_avcc_and_aac(node: Node) -> None:
    client = WhipClient(f"{node.base}/whip/cam1", CounterVideoTrack(), AudioStreamTrack())
    assert await client.start(node.http) == 201, client.body
    assert client.location is not None and client.location.startswith("/whip/resource/")
    await wait_for(lambda: node.registry.get("cam1") is not None and node.registry.get("cam1").tracks, 20)
    stream = node.registry.get("cam1")
    assert stream is not None
    sub = stream.subscribe("test", maxsize=1000)
    got: list[Packet] = []
    started: list[StreamStarted] = []

    async def collect() -> None:
        async for item in sub:
            if isinstance(item, Packet):
                got.append(item)
            elif isinstance(item, StreamStarted):
                started.append(item)

    task = asyncio.create_task(collect())
    await wait_for(lambda: sum(1 for p in got if p.track == 0) >= 30 and any(p.track == 1 for p in got), 20)
    task.cancel()
    video, audio = started[0].tracks
    assert video.codec is Codec.H264 and audio.codec is Codec.AAC
    assert (video.width, video.height) == (320, 240)
    config = parse_avcc(video.extradata)
    assert config.sps and config.pps
    assert parse_asc(audio.extradata).channels == 2
    vpk = [p for p in got if p.track == 0]
    for p in vpk:
        assert list(iter_avcc(p.data))  # well-formed AVCC
        assert p.time_base == video.time_base
    assert [p.pts for p in vpk] == sorted(p.pts for p in vpk)
    apk = [p for p in got if p.track == 1]
    assert all(p.time_base == audio.time_base for p in apk)
    # A second publisher of the same stream is refused while the first is live.
    second = WhipClient(f"{node.base}/whip/cam1", CounterVideoTrack())
    assert await second.start(node.http) == 409
    await second.pc.close()
    assert await client.stop(node.http, node.base) == 200
    async with node.http.delete(node.base + client.location) as resp:
        assert resp.status == 404


async def test_whep_relays_whip_stream(node: Node) -> None:
    pub = WhipClient(f"{node.base}/whip/live1", CounterVideoTrack(), AudioStreamTrack())
    assert await pub.start(node.http) == 201, pub.body
    await wait_for(lambda: node.registry.get("live1") is not None and node.registry.get("live1").tracks, 20)
    viewers = [WhepClient(f"{node.base}/whep/live1", measure_latency=True) for _ in range(2)]
    for v in viewers:
        assert await v.start(node.http) == 201, v.body
    await wait_for(lambda: all(v.video_frames >= 40 and v.audio_frames >= 20 for v in viewers), 30)
    hub = node.webrtc.hubs["live1"]
    assert hub.mode == "relay" and len(hub.feeds) == 2
    assert hub.transcoded_frames == 0
    lat = sorted(viewers[0].latencies_ms[-20:])
    print(f"aiortc WHIP->WHEP glass-to-glass median {lat[len(lat) // 2]:.0f} ms")
    assert await viewers[0].stop(node.http, node.base) == 200
    assert len(hub.feeds) == 1
    await viewers[1].stop(node.http, node.base)
    await wait_for(lambda: "live1" not in node.webrtc.hubs, 5)
    await pub.stop(node.http, node.base)


async def test_whep_unknown_stream_and_bad_requests(node: Node) -> None:
    v = WhepClient(f"{node.base}/whep/nobody")
    assert await v.start(node.http) == 404
    await v.stop()
    async with node.http.post(f"{node.base}/whep/x", data="v=0", headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 415
    async with node.http.post(f"{node.base}/whip/k", data="hello", headers={"Content-Type": "application/sdp"}) as r:
        assert r.status == 400
    async with node.http.patch(f"{node.base}/whip/resource/abc") as resp:
        assert resp.status == 405
    async with node.http.options(f"{node.base}/whip/k") as resp:
        assert resp.status == 204 and resp.headers["Accept-Post"] == "application/sdp"
