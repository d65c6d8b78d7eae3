"""The live ladder end to end: one RTMP publish, a transcoded ladder packaged
as LL-HLS, checked with ffprobe and played by hls.js in low-latency mode."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import make_clip, publish, start_engine, wait_for
from tests.hls_rules import ReloadChecker, check_multivariant

LADDER = {
    "test": {
        "rungs": [
            {"name": "240p", "height": 240, "bitrate": 500_000},
            {"name": "144p", "height": 144, "bitrate": 200_000, "profile": "main"},
        ],
        "x264_preset": "ultrafast",
    }
}


async def run_json(*cmd: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def keyframe_times(ffprobe: str, url: str) -> list[float]:
    data = await run_json(
        ffprobe, "-v", "error", "-select_streams", "v:0", "-skip_frame", "nokey", "-show_entries",
        "frame=pts_time", "-of", "json", url,
    )
    return [round(float(f["pts_time"]), 3) for f in data["frames"]]


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(300)
async def test_live_ladder_ll_hls(tmp_path: Path, ffmpeg: str, ffprobe: str, media_dir: Path) -> None:
    from engine.settings import coerce
    from tests.browser.player import play_hls_async
    from transcode.ladder import LadderConfig

    ladders = coerce(LADDER, dict[str, LadderConfig], "test")
    clip = make_clip(ffmpeg, media_dir / "ladder_src.flv", seconds=30, size="640x360", bframes=0)
    engine = await start_engine(
        tmp_path / "data",
        transcode={"enabled": True, "ladder": "test", "ladders": ladders},
        hls={"window_segments": 10},
        streams={"reconnect_grace_s": 1.0},
    )
    proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/ladder")  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{engine.http_port}/hls/ladder"
    try:
        await wait_for(
            lambda: "ladder" in engine.hls.outputs and len(engine.hls.outputs["ladder"].variants) == 3
            and all(v.playlist.segments for v in engine.hls.outputs["ladder"].variants.values()),
            60,
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/index.m3u8") as resp:
                variants = check_multivariant(await resp.text())
        by_uri = {v["URI"].split("/")[0]: v for v in variants}
        assert set(by_uri) == {"source", "240p", "144p"}
        assert by_uri["source"]["RESOLUTION"] == "640x360"
        assert by_uri["240p"]["RESOLUTION"] == "426x240"
        assert by_uri["144p"]["RESOLUTION"] == "256x144"
        assert all(re.match(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", v["CODECS"]) for v in variants)
        assert int(by_uri["source"]["BANDWIDTH"]) > int(by_uri["240p"]["BANDWIDTH"]) > int(
            by_uri["144p"]["BANDWIDTH"]
        )
        for v in variants:
            assert "AVERAGE-BANDWIDTH" in v and float(v["FRAME-RATE"]) == pytest.approx(30, abs=0.5)

        # The stream's status says which encoder each rendition uses.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{engine.http_port}/streams/ladder") as resp:
                status = await resp.json()
        encoders = {r["stream"]: r["encoder"] for r in status["transcode"]["renditions"]}
        assert encoders == {"ladder/source": "copy", "ladder/240p": "libx264", "ladder/144p": "libx264"}
        assert status["tracks"][0]["codec"] == "h264" and status["tracks"][0]["width"] == 640
        assert status["hls"]["variants"] == ["144p", "240p", "source"]

        # hls.js in low-latency mode plays the ladder and switches level.
        report = await play_hls_async(
            f"{base}/index.m3u8", min_time=6.0, timeout=90.0, low_latency=True, switch_level=True
        )
        assert report.ok, report
        assert report.level_switched
        # The forced switch itself never stalls playback.
        assert report.stalls_after_switch == 0, report
        print(f"\nhls.js stalls: {report.stalls} in all, {report.stalls_after_switch} after the level switch")
        print(f"\nLL-HLS live latency measured by hls.js: {report.latency}")

        # Every playlist reload of every rung follows the rules, and rendition
        # reports point at the other rungs.
        async with aiohttp.ClientSession() as http:
            for name in by_uri:
                checker = ReloadChecker(fmp4=True)
                for _ in range(2):
                    async with http.get(f"{base}/{name}/media.m3u8") as resp:
                        pl = checker.check(await resp.text())
                    assert {r["URI"] for r in pl.rendition_reports} == {
                        f"../{other}/media.m3u8" for other in by_uri if other != name
                    }
        _, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, err.decode()
        output = engine.hls.outputs["ladder"]
        await wait_for(lambda: output.ended, 30)
        # One media sequence number means the same moment in every rung.
        seqs = {
            name: {s.sequence: s.program_date_time for s in v.playlist.segments}
            for name, v in output.variants.items()
        }
        common = set.intersection(*(set(s) for s in seqs.values()))
        assert len(common) >= 5
        for seq in common:
            # Within an audio frame or two: the renditions' timelines may
            # differ by the AAC encoder's priming delay.
            pdts = [seqs[name][seq] for name in seqs]
            assert max(pdts) - min(pdts) < 0.05, (seq, pdts)
        # ffprobe: each rung's size and codec, and keyframes at the same times.
        keys: dict[str, list[float]] = {}
        for name, size in (("source", (640, 360)), ("240p", (426, 240)), ("144p", (256, 144))):
            url = f"{base}/{name}/media.m3u8"
            data = await run_json(ffprobe, "-v", "error", "-show_streams", "-of", "json", url)
            video = next(s for s in data["streams"] if s["codec_type"] == "video")
            assert video["codec_name"] == "h264" and (video["width"], video["height"]) == size
            keys[name] = await keyframe_times(ffprobe, url)
        assert keys["240p"] == keys["144p"] == keys["source"], keys
        assert len(keys["source"]) >= 5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()
