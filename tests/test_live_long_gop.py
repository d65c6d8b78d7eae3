"""A publisher with OBS's default keyframe interval (250 frames, 8.3 s at
30 fps) still gets short segments: the rungs place their own keyframes on the
HLS target grid, aligned across rungs, and the passthrough rendition, whose
segments could be no shorter than the publisher's keyframe interval, is left
out of the ladder with the reason in the stream status."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import start_engine, wait_for
from tests.hls_rules import check_multivariant
from tests.test_live_ladder import LADDER, keyframe_times

SECONDS = 12
TARGET = 2.0
TOLERANCE = 0.05

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def publish_long_gop(ffmpeg: str, url: str) -> asyncio.subprocess.Process:
    """testsrc and a tone, encoded live by the ffmpeg CLI with a 250-frame GOP
    and B-frames, published over RTMP in real time."""
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
        "-re", "-f", "lavfi", "-i", f"testsrc=size=640x360:rate=30:duration={SECONDS}",
        "-re", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "250", "-sc_threshold", "0",
        "-bf", "2", "-b:v", "1500k", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
        "-f", "flv", url,
    ]
    return await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


async def start(tmp_path: Path):  # type: ignore[no-untyped-def]
    from engine.settings import coerce
    from transcode.ladder import LadderConfig

    ladders = coerce(LADDER, dict[str, LadderConfig], "test")
    return await start_engine(
        tmp_path / "data",
        transcode={"enabled": True, "ladder": "test", "ladders": ladders},
        hls={"window_segments": 10, "target_duration_s": TARGET},
        streams={"reconnect_grace_s": 1.0},
        http={"metrics_stream_labels": True},
    )


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, url
        return await resp.text()


async def test_250_frame_gop_gets_short_aligned_segments_without_passthrough(
    tmp_path: Path, ffmpeg: str, ffprobe: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="transcode.live")
    engine = await start(tmp_path)
    proc = await publish_long_gop(ffmpeg, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/gop")
    http = f"http://127.0.0.1:{engine.http_port}"
    try:
        await wait_for(
            lambda: "gop" in engine.hls.outputs and len(engine.hls.outputs["gop"].variants) == 2
            and all(len(v.playlist.segments) >= 2 for v in engine.hls.outputs["gop"].variants.values()),
            60,
        )
        # The status says why the source is not passed through, and which
        # decoder and encoder the stream uses; /metrics too.
        async with aiohttp.ClientSession() as session, session.get(f"{http}/streams/gop") as resp:
            status = (await resp.json())["transcode"]
        assert "not passed through" in status["passthrough"] and "2 s" in status["passthrough"], status
        assert status["keyframes"] == "own"
        assert (status["decoder"], status["encoder"]) == ("software", "libx264")
        assert {r["stream"] for r in status["renditions"]} == {"gop/240p", "gop/144p"}
        metrics = await get_text(f"{http}/metrics")
        assert 'fanz_transcode_stream_info{decoder="software",encoder="libx264",stream="gop"} 1.0' in metrics
        assert any(
            r.getMessage().startswith("stream gop: no source rendition: source keyframes are more than 2 s")
            for r in caplog.records
        ), caplog.records

        variants = check_multivariant(await get_text(f"{http}/hls/gop/index.m3u8"))
        assert sorted(v["URI"].split("/")[0] for v in variants) == ["144p", "240p"]

        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        output = engine.hls.outputs["gop"]
        await wait_for(lambda: output.ended, 30)
        assert "gop/source" not in {s.name for s in engine.registry.streams()}

        # Every segment of every rendition is at most the target.
        keys: dict[str, list[float]] = {}
        for name in ("240p", "144p"):
            url = f"{http}/hls/gop/{name}/media.m3u8"
            playlist = await get_text(url)
            target = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", playlist).group(1))  # type: ignore[union-attr]
            durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+),", playlist)]
            assert target <= TARGET, playlist
            assert len(durations) >= SECONDS / TARGET - 1, playlist
            assert max(durations) <= TARGET + TOLERANCE, durations
            keys[name] = await keyframe_times(ffprobe, url)
        # The same keyframes in every rendition, one per target.
        assert keys["240p"] == keys["144p"], keys
        gaps = [b - a for a, b in zip(keys["240p"], keys["240p"][1:], strict=False)]
        assert len(gaps) >= 4 and all(abs(g - TARGET) <= TOLERANCE for g in gaps), keys
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()


@pytest.mark.browser
async def test_250_frame_gop_plays_in_hlsjs_with_a_rendition_switch(tmp_path: Path, ffmpeg: str) -> None:
    from tests.browser.player import play_hls_async

    engine = await start(tmp_path)
    proc = await publish_long_gop(ffmpeg, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/gop")
    try:
        await wait_for(
            lambda: "gop" in engine.hls.outputs and len(engine.hls.outputs["gop"].variants) == 2
            and all(v.playlist.segments for v in engine.hls.outputs["gop"].variants.values()),
            60,
        )
        report = await play_hls_async(
            f"http://127.0.0.1:{engine.http_port}/hls/gop/index.m3u8",
            min_time=4.0, timeout=60.0, low_latency=True, switch_level=True,
        )
        assert report.ok, report
        assert report.level_switched, report
        assert {(lv.width, lv.height) for lv in report.levels} == {(426, 240), (256, 144)}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()
