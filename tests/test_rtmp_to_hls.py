"""End to end: real publishers over RTMP, live HLS read by ffprobe and played
by hls.js in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from engine.app.serve import Engine
from packager.hls.config import SegmentFormat
from tests.conftest import make_clip, publish, start_engine, wait_for
from tests.hls_rules import check_media, check_multivariant


def rtmp_url(engine: Engine, key: str) -> str:
    assert engine.rtmp is not None
    return f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{key}"


def hls_url(engine: Engine, name: str, path: str = "index.m3u8") -> str:
    return f"http://127.0.0.1:{engine.http_port}/hls/{name}/{path}"


async def ffprobe_json(ffprobe: str, url: str, *args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        ffprobe, "-v", "error", "-of", "json", *args, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def get_text(url: str) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


def source_counts(ffprobe: str, path: Path) -> dict[str, int]:
    out = subprocess.run(
        [ffprobe, "-v", "error", "-count_packets", "-show_entries", "stream=codec_type,nb_read_packets",
         "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    return {s["codec_type"]: int(s["nb_read_packets"]) for s in json.loads(out)["streams"]}


@pytest.mark.parametrize("fmt", [SegmentFormat.FMP4, SegmentFormat.MPEGTS])
async def test_ffmpeg_publish_becomes_complete_live_hls(
    tmp_path: Path, ffmpeg: str, ffprobe: str, h264_aac_flv: Path, fmt: SegmentFormat
) -> None:
    engine = await start_engine(tmp_path / "data", hls={"segment_format": fmt}, streams={"reconnect_grace_s": 0.5})
    try:
        proc = await publish(ffmpeg, h264_aac_flv, rtmp_url(engine, "creator1"))
        await wait_for(lambda: "creator1" in engine.hls.outputs and engine.hls.outputs["creator1"].multivariant, 30)
        status, text, headers = await get_text(hls_url(engine, "creator1"))
        assert status == 200
        assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        assert "no-cache" in headers["Cache-Control"]
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert re.search(r'CODECS="avc1\.64[0-9a-f]{4},mp4a\.40\.2"', text), text
        assert "RESOLUTION=640x360" in text and "FRAME-RATE=30.000" in text
        bandwidth = int(re.search(r"BANDWIDTH=(\d+)", text).group(1))  # type: ignore[union-attr]
        assert 1_000_000 < bandwidth < 5_000_000
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        output = engine.hls.outputs["creator1"]
        await wait_for(lambda: output.ended, 10)

        status, media, _ = await get_text(hls_url(engine, "creator1", "src/media.m3u8"))
        assert status == 200
        check_media(media, fmp4=fmt is SegmentFormat.FMP4)
        check_multivariant(text)
        version = 7 if fmt is SegmentFormat.FMP4 else 3
        assert f"#EXT-X-VERSION:{version}\n" in media
        assert "#EXT-X-TARGETDURATION:2\n" in media
        assert media.rstrip().endswith("#EXT-X-ENDLIST")
        assert ("#EXT-X-MAP:" in media) == (fmt is SegmentFormat.FMP4)
        assert "#EXT-X-PROGRAM-DATE-TIME:" in media
        durations = [float(d) for d in re.findall(r"#EXTINF:([0-9.]+),", media)]
        # The last segment also carries the audio that outlasts the video.
        assert len(durations) == 3 and all(abs(d - 2.0) < 0.05 for d in durations[:-1]), durations
        assert abs(durations[-1] - 2.0) < 0.2, durations

        # The whole stream, read back through HTTP, is the source: same codecs,
        # same size, every frame present.
        probe = await ffprobe_json(
            ffprobe, hls_url(engine, "creator1", "src/media.m3u8"), "-count_packets", "-show_streams"
        )
        streams = {s["codec_type"]: s for s in probe["streams"]}
        assert streams["video"]["codec_name"] == "h264"
        assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
        assert streams["audio"]["codec_name"] == "aac"
        assert int(streams["audio"]["sample_rate"]) == 48000
        expected = source_counts(ffprobe, h264_aac_flv)
        assert int(streams["video"]["nb_read_packets"]) == expected["video"]
        assert abs(int(streams["audio"]["nb_read_packets"]) - expected["audio"]) <= 2
    finally:
        await engine.stop()


async def test_gstreamer_rtmp2sink_publishes(tmp_path: Path, ffprobe: str) -> None:
    gst = shutil.which("gst-launch-1.0")
    if gst is None:
        pytest.fail("gst-launch-1.0 is not installed: run the README's test command")
    engine = await start_engine(tmp_path / "data", streams={"reconnect_grace_s": 0.2})
    try:
        pipeline = (
            "videotestsrc is-live=true num-buffers=150 ! video/x-raw,width=320,height=240,framerate=30/1 "
            "! x264enc key-int-max=60 bframes=0 tune=zerolatency ! h264parse ! flvmux name=m streamable=true "
            f"! rtmp2sink location={rtmp_url(engine, 'gst')} "
            "audiotestsrc is-live=true num-buffers=235 ! audio/x-raw,rate=48000,channels=2 ! avenc_aac "
            "! aacparse ! m."
        )
        proc = await asyncio.create_subprocess_exec(
            gst, "-q", *pipeline.split(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        await wait_for(lambda: "gst" in engine.hls.outputs and engine.hls.outputs["gst"].ended, 15)
        probe = await ffprobe_json(ffprobe, hls_url(engine, "gst"), "-show_streams", "-count_packets")
        kinds = {s["codec_type"]: s for s in probe["streams"]}
        assert kinds["video"]["codec_name"] == "h264" and kinds["video"]["width"] == 320
        assert kinds["audio"]["codec_name"] == "aac"
        assert int(kinds["video"]["nb_read_packets"]) >= 120
    finally:
        await engine.stop()


async def test_second_publisher_on_live_key_is_refused(engine: Engine, ffmpeg: str, h264_aac_flv: Path) -> None:
    first = await publish(ffmpeg, h264_aac_flv, rtmp_url(engine, "busy"))
    await wait_for(lambda: engine.registry.publisher("busy") is not None, 20)
    second = await publish(ffmpeg, h264_aac_flv, rtmp_url(engine, "busy"))
    await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode != 0
    assert first.returncode is None  # the first one is still publishing
    first.kill()
    await first.wait()


async def test_http_refuses_traversal_and_unknown_files(engine: Engine, ffmpeg: str, h264_aac_flv: Path) -> None:
    proc = await publish(ffmpeg, h264_aac_flv, rtmp_url(engine, "safe"))
    try:
        await wait_for(lambda: "safe" in engine.hls.outputs and engine.hls.outputs["safe"].multivariant, 30)
        base = f"http://127.0.0.1:{engine.http_port}"
        async with aiohttp.ClientSession() as session:
            for path in (
                "/hls/safe/src/..%2F..%2F..%2Fetc%2Fpasswd",
                "/hls/safe/src/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                "/hls/safe/src/../../../../etc/passwd",
                "/hls/..%2Fsafe/index.m3u8",
                "/hls/safe/src/seg_1.m4s.tmp",
                "/hls/nosuch/index.m3u8",
                "/hls/safe/src/.media.m3u8.tmp",
            ):
                # Sent as written: the client must not normalise the dots away.
                async with session.get(URL(base + path, encoded=True)) as resp:
                    assert resp.status == 404, path
            async with session.options(base + "/hls/safe/index.m3u8") as resp:
                assert resp.status == 204
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
            _, media, _ = await get_text(hls_url(engine, "safe", "src/media.m3u8"))
            segment = next(line for line in media.splitlines() if line.startswith("seg_"))
            async with session.get(hls_url(engine, "safe", f"src/{segment}")) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "video/iso.segment"
                assert resp.headers["Cache-Control"] == "public, max-age=86400, immutable"
            async with session.get(base + "/metrics") as resp:
                metrics = await resp.text()
                # By default no series names a stream (http.metrics_stream_labels).
                assert re.search(r"^fanz_stream_bytes_in_total [0-9.e+]+$", metrics, re.M), metrics
                assert "safe" not in metrics
                assert "fanz_hls_segments_written_total" in metrics
            async with session.get(base + "/ready") as resp:
                assert resp.status == 200
            async with session.get(base + "/health") as resp:
                assert (await resp.json())["status"] == "ok"
    finally:
        proc.kill()
        await proc.wait()


@pytest.mark.browser
async def test_hlsjs_keeps_playing_through_a_reconnect(
    tmp_path: Path, ffmpeg: str, media_dir: Path
) -> None:
    from tests.browser.player import play_hls_async

    clip = make_clip(ffmpeg, media_dir / "long_h264_aac.flv", seconds=20, size="426x240", bframes=0)
    engine = await start_engine(tmp_path / "data", streams={"reconnect_grace_s": 8.0})
    try:
        url = rtmp_url(engine, "phoenix")
        first = await publish(ffmpeg, clip, url, extra=["-t", "8"])
        await wait_for(lambda: "phoenix" in engine.hls.outputs and engine.hls.outputs["phoenix"].multivariant, 30)
        player = asyncio.create_task(play_hls_async(hls_url(engine, "phoenix"), min_time=13.0, timeout=90.0))
        await asyncio.wait_for(first.wait(), 60)
        # The publisher is gone; it comes back a moment later with its clock at zero.
        await asyncio.sleep(1.0)
        second = await publish(ffmpeg, clip, url, extra=["-t", "14"])
        report = await player
        second.kill()
        await second.wait()
        assert report.ok, report
        assert report.current_time >= 13.0
        output = engine.hls.outputs["phoenix"]
        media = output.variants["src"].playlist.render()
        assert "#EXT-X-DISCONTINUITY" in media or output.variants["src"].playlist.discontinuity_sequence > 0
    finally:
        await engine.stop()


async def test_sliding_window_removes_old_segments(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    """A long publish (sent faster than real time) keeps only the window and a
    few spare segments on disk, and every playlist follows the HLS rules."""
    from tests.hls_rules import ReloadChecker

    clip = make_clip(ffmpeg, media_dir / "window_clip.flv", seconds=24, size="320x180", bframes=0)
    engine = await start_engine(
        tmp_path / "data",
        hls={"window_segments": 3, "keep_extra_segments": 1},
        streams={"reconnect_grace_s": 0.3},
    )
    try:
        checker = ReloadChecker(fmp4=True)
        proc = await publish(ffmpeg, clip, rtmp_url(engine, "win"), realtime=False)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        output = None
        await wait_for(lambda: "win" in engine.hls.outputs and engine.hls.outputs["win"].ended, 20)
        output = engine.hls.outputs["win"]
        _, index, _ = await get_text(hls_url(engine, "win"))
        check_multivariant(index)
        _, media, _ = await get_text(hls_url(engine, "win", "src/media.m3u8"))
        pl = checker.check(media)
        assert len(pl.segments) == 3 and pl.media_sequence == 9 and pl.ended
        await output.flush()  # the removals that the last segments queued
        on_disk = sorted(p.name for p in (output.directory / "src").glob("seg_*"))
        assert len(on_disk) == 4, on_disk  # the window and one spare
        assert output.segments_written == 12
    finally:
        await engine.stop()


async def test_a_key_with_a_slash_cannot_add_a_variant_to_another_stream(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path
) -> None:
    """Sent as OBS sends it (server rtmp://HOST/live, key victim/evil) while
    victim is live: refused with the reason, and victim's playlists list
    only its own renditions."""
    engine = await start_engine(tmp_path / "data", transcode={"enabled": True, "ladder": "passthrough"})
    victim = await publish(ffmpeg, h264_aac_flv, rtmp_url(engine, "victim"))
    try:
        await wait_for(lambda: "victim" in engine.hls.outputs and engine.hls.outputs["victim"].segments_written, 30)
        intruder = await publish(
            ffmpeg, h264_aac_flv, rtmp_url(engine, "ignored"),
            extra=["-rtmp_app", "live", "-rtmp_playpath", "victim/evil"],
        )
        _, err = await asyncio.wait_for(intruder.communicate(), 30)
        assert intruder.returncode != 0 and b"is not allowed" in err
        status, text, _ = await get_text(hls_url(engine, "victim"))
        assert status == 200 and "evil" not in text
        status, _, _ = await get_text(hls_url(engine, "victim", "evil/media.m3u8"))
        assert status == 404
        assert set(engine.hls.outputs["victim"].variants) == {"source"}
        _, err = await asyncio.wait_for(victim.communicate(), 30)
        assert victim.returncode == 0, err
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()
        await engine.stop()
