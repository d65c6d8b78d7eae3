"""Headless Chromium against the engine's WebRTC pages.

A tab with the fake camera goes live through /publish (WHIP); other tabs
play it through /watch over WHEP and over HLS, and their decoded-frame
counts must rise. RTMP from the real ffmpeg (H.264 without B-frames, AAC)
plays over WHEP with Opus audio; a source with B-frames is re-encoded once.
Glass-to-glass latency (a sending time drawn into each frame and read back
in the viewer) is printed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.auth import AllowAllChecks
from engine.registry import StreamRegistry
from ingest.rtmp.limits import RtmpLimits
from ingest.rtmp.server import RtmpServer
from packager.hls.config import HlsConfig
from packager.hls.http import HlsHttp
from packager.hls.live import HlsService
from tests.conftest import make_clip, publish, wait_for
from webrtc.config import WebRtcConfig
from webrtc.http import WebRtcHttp

SCRIPT = Path(__file__).with_name("browser_webrtc.mjs")
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]


@dataclass
class Node:
    registry: StreamRegistry
    webrtc: WebRtcHttp
    rtmp: RtmpServer
    base: str


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    if shutil.which("node") is None or shutil.which("/usr/bin/chromium") is None:
        pytest.fail("node and /usr/bin/chromium are needed for the browser tests")
    registry = StreamRegistry(grace_s=1.0)
    checks = AllowAllChecks()
    config = WebRtcConfig(include_interface_addresses=False, session_idle_timeout_s=3)
    rtc = WebRtcHttp(registry, checks, checks, config)
    hls = HlsService(HlsConfig(target_duration_s=1.0), tmp_path / "hls", registry)
    rtmp = RtmpServer(registry, checks, RtmpLimits())
    await rtmp.start("127.0.0.1", 0)
    app = web.Application()
    app.router.add_routes(rtc.routes())
    app.router.add_routes(HlsHttp(hls, checks).routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Node(registry, rtc, rtmp, f"http://127.0.0.1:{port}")
    finally:
        await rtmp.close()
        await rtc.close()
        registry.close()
        await asyncio.sleep(0)
        await hls.close()
        await runner.cleanup()


async def run_browser(node: Node, *args: str, timeout: float = 90) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), "--base", node.base, *args, "--timeout", str(int(timeout - 10)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("the browser script did not finish")
    lines = out.decode().strip().splitlines()
    assert lines, f"no report from the browser script; stderr: {err.decode()[-2000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def assert_played(report: dict[str, Any], mode: str) -> dict[str, Any]:
    watch = report["watch"].get(mode)
    assert watch is not None, report
    assert watch["mode"] == mode, report
    assert watch["decodedAfter"] > watch["decodedBefore"] > 0, report
    return dict(watch)


async def test_browser_publishes_whip_and_plays_whep_and_hls(node: Node) -> None:
    report = await run_browser(node, "--key", "creator1", "--name", "creator1", "--watch", "whep,hls", "--seconds", "5")
    assert report["ok"], report
    whep = assert_played(report, "whep")
    assert_played(report, "hls")
    assert whep["stats"]["videoCodec"] == "video/H264"
    assert whep["stats"]["audioPacketsReceived"] > 0
    assert whep["latencySamples"] > 0
    print(f"browser WHIP -> WHEP glass-to-glass latency, median: {whep['latencyMedianMs']} ms")
    hub = node.webrtc.hubs.get("creator1")
    assert hub is None or hub.transcoded_frames == 0  # H.264 relayed as it came


async def test_browser_publishes_vp8_transcoded_for_hls(node: Node) -> None:
    report = await run_browser(
        node, "--key", "vp8cam", "--name", "vp8cam", "--codec", "video/VP8", "--watch", "hls,whep", "--seconds", "4"
    )
    assert report["ok"], report
    assert_played(report, "hls")
    assert_played(report, "whep")


@pytest.mark.parametrize("bframes", [0, 2], ids=["relay", "bframes"])
async def test_rtmp_plays_over_whep_with_audio(node: Node, ffmpeg: str, tmp_path: Path, bframes: int) -> None:
    clip = make_clip(ffmpeg, tmp_path / f"src{bframes}.flv", seconds=30, size="320x180", gop_seconds=1,
                     bframes=bframes)
    proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{node.rtmp.port}/live/rtmp{bframes}")
    try:
        await wait_for(lambda: node.registry.get(f"rtmp{bframes}") is not None, 20)
        report = await run_browser(node, "--name", f"rtmp{bframes}", "--watch", "whep", "--seconds", "4")
        assert report["ok"], report
        whep = assert_played(report, "whep")
        assert whep["stats"]["audioCodec"] == "audio/opus"
        assert whep["stats"]["audioSamplesReceived"] > 0
        # The closed browser's session is deleted or reaped, which ends the hub.
        await wait_for(lambda: f"rtmp{bframes}" not in node.webrtc.hubs, 20)
        # B-frames force one re-encode for WebRTC; without them H.264 is relayed.
        assert node.webrtc.stats.reencoded_streams == (1 if bframes else 0)
    finally:
        proc.kill()
        await proc.wait()
