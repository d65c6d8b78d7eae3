"""WHIP ingest and WHEP playback between real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.auth import AllowAllChecks, PlaybackRequest, PublishGrant, PublishRequest
from engine.codecs import iter_avcc, parse_asc, parse_avcc
from engine.errors import PlaybackDenied, PublishDenied
from engine.media import Codec, Packet, StreamStarted
from engine.registry import StreamRegistry
from tests.conftest import wait_for
from tests.webrtc.clients import AudioStreamTrack, CounterVideoTrack, WhepClient, WhipClient
from webrtc.config import WebRtcConfig
from webrtc.errors import OfferError
from webrtc.http import WebRtcHttp
from webrtc.negotiate import offered_kinds
from webrtc.sessions import SessionKind

pytestmark = pytest.mark.timeout(90)


@dataclass
class Node:
    registry: StreamRegistry
    webrtc: WebRtcHttp
    base: str
    http: aiohttp.ClientSession


class TokenChecks(AllowAllChecks):
    """Publishing needs the key "secret"; playback needs the token "good"."""

    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        if request.key != "secret" or request.protocol != "whip":
            raise PublishDenied("unknown stream key")
        return PublishGrant("public-name")

    async def authorize_playback(self, request: PlaybackRequest) -> None:
        if request.token != "good":
            raise PlaybackDenied("bad or missing token")


@asynccontextmanager
async def make_node(config: WebRtcConfig | None = None, checks: AllowAllChecks | None = None) -> AsyncIterator[Node]:
    registry = StreamRegistry(grace_s=0.5)
    checks = checks or AllowAllChecks()
    rtc = WebRtcHttp(registry, checks, checks, config or WebRtcConfig(include_interface_addresses=False))
    app = web.Application()
    app.router.add_routes(rtc.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            yield Node(registry, rtc, f"http://127.0.0.1:{port}", http)
    finally:
        await rtc.close()
        registry.close()
        await runner.cleanup()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with make_node() as n:
        yield n


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


async def collect_packets(node: Node, name: str, count: int) -> tuple[list[StreamStarted], list[Packet]]:
    await wait_for(lambda: node.registry.get(name) is not None and bool(node.registry.get(name).tracks), 20)
    stream = node.registry.get(name)
    assert stream is not None
    sub = stream.subscribe("test", maxsize=2000)
    started: list[StreamStarted] = []
    got: list[Packet] = []

    async def run() -> None:
        async for item in sub:
            if isinstance(item, Packet):
                got.append(item)
            elif isinstance(item, StreamStarted):
                started.append(item)

    task = asyncio.create_task(run())
    try:
        await wait_for(lambda: sum(1 for p in got if p.track == 0) >= count, 30)
    finally:
        task.cancel()
        sub.close()
    return started, got


async def test_whip_vp8_is_transcoded_to_h264(node: Node) -> None:
    client = WhipClient(f"{node.base}/whip/vp8", CounterVideoTrack(), video_codec="video/VP8")
    assert await client.start(node.http) == 201, client.body
    started, got = await collect_packets(node, "vp8", 45)
    (video,) = started[0].tracks
    assert video.codec is Codec.H264 and (video.width, video.height) == (320, 240)
    assert parse_avcc(video.extradata).sps
    video_packets = [p for p in got if p.track == 0]
    assert any(p.keyframe for p in video_packets)
    for p in video_packets:
        assert list(iter_avcc(p.data))
    await client.stop(node.http, node.base)


async def test_checks_and_limits() -> None:
    config = WebRtcConfig(include_interface_addresses=False, max_publishers=1, max_viewers_per_stream=1)
    async with make_node(config, TokenChecks()) as node:
        bad = WhipClient(f"{node.base}/whip/wrong", CounterVideoTrack())
        assert await bad.start(node.http) == 403 and "unknown stream key" in bad.body
        await bad.pc.close()
        pub = WhipClient(f"{node.base}/whip/secret", CounterVideoTrack())
        assert await pub.start(node.http) == 201
        await wait_for(lambda: node.registry.get("public-name") is not None, 10)
        # The one publisher slot is taken (a second key would get 503).
        assert node.webrtc.table.count(SessionKind.WHIP) == 1
        second = WhipClient(f"{node.base}/whip/secret", CounterVideoTrack())
        assert await second.start(node.http) == 503
        await second.pc.close()
        anon = WhepClient(f"{node.base}/whep/public-name")
        assert await anon.start(node.http) == 401 and "token" in anon.body
        await anon.stop()
        wrong = WhepClient(f"{node.base}/whep/public-name?token=nope")
        assert await wrong.start(node.http) == 403
        await wrong.stop()
        viewer = WhepClient(f"{node.base}/whep/public-name")
        assert await viewer.start(node.http, headers={"Authorization": "Bearer good"}) == 201
        extra = WhepClient(f"{node.base}/whep/public-name?token=good")
        assert await extra.start(node.http) == 503  # one viewer per stream here
        await extra.stop()
        await wait_for(lambda: viewer.video_frames > 10, 20)
        await viewer.stop(node.http, node.base)
        await pub.stop(node.http, node.base)
        assert node.webrtc.stats.refused >= 5


class NameChecks(AllowAllChecks):
    """Grants whatever playback name the key maps to, like a platform with a
    bad record would."""

    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        return PublishGrant({"k1": "victim/evil", "k2": "a.b"}.get(request.key, request.key))


async def test_whip_refuses_names_outside_the_rule(caplog: pytest.LogCaptureFixture) -> None:
    async with make_node(checks=NameChecks()) as node:
        for key in ("k1", "k2", "x" * 65):
            client = WhipClient(f"{node.base}/whip/{key}", CounterVideoTrack())
            assert await client.start(node.http) == 400, key
            assert "is not allowed" in client.body and "A-Z" in client.body
            await client.pc.close()
        assert node.registry.streams() == ()
        assert node.webrtc.table.count(SessionKind.WHIP) == 0
        assert sum("publish refused" in r.getMessage() for r in caplog.records) == 3


async def test_quiet_sessions_are_reaped_and_failures_end_one_viewer() -> None:
    config = WebRtcConfig(include_interface_addresses=False, session_idle_timeout_s=2.0)
    async with make_node(config) as node:
        pub = WhipClient(f"{node.base}/whip/reap", CounterVideoTrack(), AudioStreamTrack())
        assert await pub.start(node.http) == 201
        await wait_for(lambda: node.registry.get("reap") is not None and bool(node.registry.get("reap").tracks), 20)
        viewers = [WhepClient(f"{node.base}/whep/reap", decode=False) for _ in range(2)]
        for v in viewers:
            assert await v.start(node.http) == 201
        await wait_for(lambda: all(v.video_frames > 10 for v in viewers), 20)
        # One viewer vanishes without a DELETE: only it goes away.
        await viewers[0].stop()
        await wait_for(lambda: len(node.webrtc.viewers) == 1, 30)
        before = viewers[1].video_frames
        await wait_for(lambda: viewers[1].video_frames > before + 15, 20)
        # The publisher vanishes without a DELETE: its session is closed and
        # the stream released, and the remaining viewer's session ends with it.
        await pub.pc.close()
        await wait_for(lambda: not node.webrtc.publishers, 30)
        assert node.registry.publisher("reap") is None
        await wait_for(lambda: not node.webrtc.viewers and not node.webrtc.hubs, 30)
        await viewers[1].stop()


async def test_truncated_and_hostile_offers_get_4xx(node: Node) -> None:
    offerer = WhipClient(f"{node.base}/whip/x", CounterVideoTrack())
    offerer.pc.addTransceiver(offerer.video, direction="sendonly")  # type: ignore[arg-type]
    await offerer.pc.setLocalDescription(await offerer.pc.createOffer())
    sdp = offerer.pc.localDescription.sdp
    await offerer.pc.close()
    cuts = sorted({len(sdp) * i // 12 for i in range(1, 12)})
    bodies = [sdp[:cut] for cut in cuts] + [sdp.replace("m=video", "m=bogus"), "v=0\r\n"]
    for i, body in enumerate(bodies):
        for kind in ("whip", "whep"):
            async with node.http.post(f"{node.base}/{kind}/hostile{i}", data=body.encode(),
                                      headers={"Content-Type": "application/sdp"}) as resp:
                # 404 only for WHEP of a stream that does not exist; never a 5xx.
                assert resp.status in (400, 404), (kind, i, resp.status, await resp.text())
    assert not node.webrtc.publishers and node.registry.publisher("hostile0") is None
    async with node.http.post(f"{node.base}/whip/big", data=b"v=0\n" + b"a" * 70_000,
                              headers={"Content-Type": "application/sdp"}) as resp:
        assert resp.status == 413


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_offered_kinds_only_raises_offer_error(text: str) -> None:
    for body in (text, "v=0\r\n" + text, "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" + text):
        try:
            kinds = offered_kinds(body)
        except OfferError:
            continue
        assert set(kinds) <= {"audio", "video"} and kinds


async def test_through_engine_when_mounted(tmp_path: Path) -> None:
    """The same publish and play through the engine's composition root."""
    from tests.conftest import start_engine

    engine = await start_engine(tmp_path / "data")
    try:
        assert isinstance(engine.webrtc, WebRtcHttp)
        base = f"http://127.0.0.1:{engine.http_port}"
        async with aiohttp.ClientSession() as http:
            pub = WhipClient(f"{base}/whip/eng", CounterVideoTrack(), AudioStreamTrack())
            assert await pub.start(http) == 201, pub.body
            await wait_for(lambda: bool(getattr(engine.registry.get("eng"), "tracks", ())), 20)
            viewer = WhepClient(f"{base}/whep/eng", decode=False)
            assert await viewer.start(http) == 201, viewer.body
            await wait_for(lambda: viewer.video_frames > 20 and viewer.audio_frames > 10, 20)
            await viewer.stop(http, base)
            await pub.stop(http, base)
    finally:
        await engine.stop()
