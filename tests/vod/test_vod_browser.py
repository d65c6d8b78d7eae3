"""Players in headless Chromium: a ``fanz-media transcode`` output stored
as an asset plays as VOD in hls.js; with DVR on, hls.js sees a long
seekable range in a live stream, seeks 60 s back and plays."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import make_clip, publish, start_engine, wait_for


@pytest.mark.browser
@pytest.mark.timeout(180)
async def test_transcoded_asset_plays_in_hlsjs_as_vod(data_dir: Path) -> None:
    from tests.browser.player import play_hls_async

    engine = await start_engine(data_dir)
    try:
        url = f"http://127.0.0.1:{engine.http_port}/vod/clip-one/index.m3u8"
        report = await play_hls_async(url, min_time=5.0, timeout=60.0)
        assert report.ok, report
        assert report.played_time >= 5.0 and report.video_width == 640
        assert report.latency is None  # VOD: no live edge
    finally:
        await engine.stop()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(300)
async def test_dvr_seeks_a_minute_back_into_a_live_stream(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    from tests.browser.player import play_hls_async

    clip = make_clip(ffmpeg, media_dir / "dvr_h264_aac.flv", seconds=100, size="426x240", bframes=0)
    engine = await start_engine(tmp_path / "data", hls={"dvr_window_s": 80.0, "target_duration_s": 2.0})
    proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/dvr")
    try:
        base = f"http://127.0.0.1:{engine.http_port}/hls/dvr"

        def listed_seconds() -> float:
            output = engine.hls.outputs.get("dvr")
            if output is None or not output.variants:
                return 0.0
            return float(sum(s.duration for s in next(iter(output.variants.values())).playlist.segments))

        await wait_for(lambda: listed_seconds() >= 66.0, timeout=120.0, interval=0.5)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/index.m3u8") as r:
                index = await r.text()
            media_uri = next(line for line in index.splitlines() if line and not line.startswith("#"))
            async with http.get(f"{base}/{media_uri}") as r:
                full = await r.text()
            async with http.get(f"{base}/{media_uri}?_HLS_skip=YES") as r:
                delta = await r.text()
        # The whole window is listed, its files still there; parts only near the edge.
        assert full.count("#EXTINF:") >= 33
        lines = full.splitlines()
        first_part = next(i for i, line in enumerate(lines) if line.startswith("#EXT-X-PART:"))
        assert sum(1 for line in lines[first_part:] if line.startswith("#EXTINF:")) <= 5
        skipped = int(delta.split("#EXT-X-SKIP:SKIPPED-SEGMENTS=")[1].split("\n")[0])
        assert skipped >= full.count("#EXTINF:") - 8 and delta.count("#EXTINF:") <= 8

        report = await play_hls_async(f"{base}/index.m3u8", min_time=4.0, timeout=60.0, seek_back=60.0)
        assert report.ok, report
        start, end = report.raw["seekableAtSeek"]
        assert end - start >= 60.0
        assert report.raw["playedAfterSeek"] >= 4.0
        # It plays where it seeked to, a minute behind the edge, not back at the edge.
        assert report.raw["seekedTo"] <= report.current_time <= report.raw["seekedTo"] + 30.0
        assert end - report.current_time >= 30.0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        await engine.stop()
        await asyncio.sleep(0)
