"""End to end DASH: real publishers over RTMP, the engine as ``serve`` wires
it, the manifest read back and every segment it names fetched; the ffmpeg
CLI and Shaka Player (headless Chromium) play the live and the VOD manifest;
dash.js is shown to refuse our muxed representations."""

from __future__ import annotations

import asyncio
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from drm.model import Protection
from engine.app import transcode_command
from engine.app.serve import Engine
from packager.dash.mpd import MPD_NS
from packager.hls.config import SegmentFormat
from tests.browser.static_server import serve_directory
from tests.conftest import make_clip, publish, start_engine, wait_for
from tests.transcode.conftest import small_ladder

NS = {"m": MPD_NS, "cenc": "urn:mpeg:cenc:2013", "dashif": "https://dashif.org/CPS"}
pytestmark = pytest.mark.timeout(240)


def rtmp_url(engine: Engine, key: str) -> str:
    assert engine.rtmp is not None
    return f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{key}"


def base_url(engine: Engine) -> str:
    return f"http://127.0.0.1:{engine.http_port}"


def segment_urls(text: str) -> list[tuple[str, str]]:
    """(init or media path, relative to the manifest) of every file the
    manifest names, in order; media expanded from each SegmentTimeline."""
    root = ET.fromstring(text)
    out = []
    for template in root.iter(f"{{{MPD_NS}}}SegmentTemplate"):
        out.append(("init", template.get("initialization", "")))
        number = int(template.get("startNumber", "1"))
        for s in template.iter(f"{{{MPD_NS}}}S"):
            for _ in range(int(s.get("r", "0")) + 1):
                out.append(("media", template.get("media", "").replace("$Number$", str(number))))
                number += 1
    return out


def media_times(text: str) -> dict[str, tuple[int, int]]:
    """Media segment path -> (S@t, timescale) for every segment listed."""
    out = {}
    for template in ET.fromstring(text).iter(f"{{{MPD_NS}}}SegmentTemplate"):
        number = int(template.get("startNumber", "1"))
        scale = int(template.get("timescale", "1"))
        t = 0
        for s in template.iter(f"{{{MPD_NS}}}S"):
            t = int(s.get("t", t))
            for _ in range(int(s.get("r", "0")) + 1):
                out[template.get("media", "").replace("$Number$", str(number))] = (t, scale)
                number += 1
                t += int(s.get("d", "0"))
    return out


def iter_boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each box at the top of ``data``."""
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        assert size >= 8 and pos + size <= len(data), f"bad box {kind!r}"
        yield kind, data[pos + 8 : pos + size]
        pos += size


def first_video_decode_time(segment: bytes) -> int:
    """``tfdt`` of track 1 (the video) in a segment's first ``moof``."""
    moof = next(body for kind, body in iter_boxes(segment) if kind == b"moof")
    for kind, traf in iter_boxes(moof):
        if kind == b"traf":
            inner = dict(iter_boxes(traf))
            if struct.unpack_from(">I", inner[b"tfhd"], 4)[0] == 1:
                assert inner[b"tfdt"][0] == 1
                return int(struct.unpack_from(">Q", inner[b"tfdt"], 4)[0])
    raise AssertionError("no video track fragment")


def tenc_kid(init: bytes) -> bytes:
    """The default KID of the first ``tenc`` box of an init segment (ISO/IEC
    23001-7 8.2: full box header, two reserved or pattern bytes, the
    protected flag, the IV size, then the KID)."""
    at = init.index(b"tenc")
    return init[at + 4 + 8 : at + 4 + 24]


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, dict[str, str]]:
    async with session.get(url) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def decoded_video_frames(ffmpeg: str, url: str, frames: int) -> int:
    """Frames of the first video stream the ffmpeg CLI decodes from ``url``."""
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url, "-map", "0:v:0",
        "-frames:v", str(frames), "-f", "framemd5", "-",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]
    return sum(1 for line in out.decode().splitlines() if line and not line.startswith("#"))


async def test_live_manifest_names_the_hls_segments_and_ends_static(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path
) -> None:
    engine = await start_engine(tmp_path / "data", streams={"reconnect_grace_s": 0.5})
    proc = None
    try:
        base = base_url(engine)
        proc = await publish(ffmpeg, h264_aac_flv, rtmp_url(engine, "dasher"))
        await wait_for(lambda: "dasher" in engine.hls.outputs, 30)
        output = engine.hls.outputs["dasher"]
        await wait_for(lambda: len(output.variants["src"].playlist.segments) >= 2, 30)
        async with aiohttp.ClientSession() as session:
            status, body, headers = await fetch(session, f"{base}/dash/dasher/manifest.mpd")
            assert status == 200, body
            assert headers["Content-Type"].startswith("application/dash+xml")
            assert headers["Access-Control-Allow-Origin"] == "*"
            assert "no-cache" in headers["Cache-Control"]
            text = body.decode()
            root = ET.fromstring(text)
            assert root.get("type") == "dynamic"
            assert root.get("timeShiftBufferDepth") == "PT12S"  # six 2 s segments, as the HLS window
            timing = root.find("m:UTCTiming", NS)
            assert timing is not None and timing.get("value") == f"{base}/dash/time"
            rep = root.find(".//m:Representation", NS)
            assert rep is not None and rep.get("codecs", "").startswith("avc1.64")
            assert rep.get("codecs", "").endswith(",mp4a.40.2")
            assert (rep.get("width"), rep.get("height")) == ("640", "360")
            named = segment_urls(text)
            assert sum(1 for kind, _ in named if kind == "media") >= 2
            hls = output.variants["src"].playlist
            listed = {s.uri for s in hls.segments}
            times = media_times(text)
            for kind, path in named:
                variant, filename = path.split("/")
                assert variant == "src"
                if kind == "media":
                    assert filename in listed
                else:
                    assert filename == hls.segments[0].init_uri
                status, dash_bytes, dash_headers = await fetch(session, f"{base}/dash/dasher/{path}")
                assert status == 200, path
                assert dash_headers["Access-Control-Allow-Origin"] == "*"
                status, hls_bytes, _ = await fetch(session, f"{base}/hls/dasher/{path}")
                assert status == 200 and dash_bytes == hls_bytes and dash_bytes
                if kind == "media":
                    # S@t is the segment's own first video decode time, in the same 90 kHz.
                    assert times[path] == (first_video_decode_time(dash_bytes), 90000)

            status, body, headers = await fetch(session, f"{base}/dash/time")
            assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
            served = datetime.fromisoformat(body.decode().replace("Z", "+00:00")).timestamp()
            assert abs(served - time.time()) < 5

            frames = await decoded_video_frames(ffmpeg, f"{base}/dash/dasher/manifest.mpd", 30)
            assert frames == 30

            for path in ("/dash/nosuch/manifest.mpd", "/dash/dasher/src/../../x", "/dash/dasher/src/secret.txt"):
                status, _, _ = await fetch(session, base + path)
                assert status == 404, path

            _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            await wait_for(lambda: output.ended, 15)
            status, body, _ = await fetch(session, f"{base}/dash/dasher/manifest.mpd")
            ended = ET.fromstring(body)
            assert ended.get("type") == "static"
            assert ended.get("mediaPresentationDuration", "").startswith("PT")
            assert ended.find("m:UTCTiming", NS) is None
            assert ended.find("m:Period", NS).get("start") == "PT0S"  # type: ignore[union-attr]
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()


async def test_protected_live_manifest_announces_the_key_period(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path
) -> None:
    """``drm.protection = "cenc"``: the key period the segmenter encrypts
    with shows as ContentProtection whose default_KID is the init segment's
    ``tenc`` KID, with the ClearKey licence URL of the engine."""
    engine = await start_engine(tmp_path / "data", streams={"reconnect_grace_s": 0.5},
                                drm={"protection": Protection.CENC, "rotate_every_segments": 0},
                                hls={"segment_format": SegmentFormat.FMP4})
    proc = None
    try:
        base = base_url(engine)
        proc = await publish(ffmpeg, h264_aac_flv, rtmp_url(engine, "locked"))
        await wait_for(lambda: "locked" in engine.hls.outputs, 30)
        output = engine.hls.outputs["locked"]
        await wait_for(lambda: bool(output.variants["src"].playlist.segments), 30)
        period = output.key_period_at(output.variants["src"].playlist.segments[0].sequence)
        assert period is not None and period.index == 0
        async with aiohttp.ClientSession() as session:
            status, body, _ = await fetch(session, f"{base}/dash/locked/manifest.mpd?token=v%2B1")
            assert status == 200
            root = ET.fromstring(body)
            elements = root.findall(".//m:AdaptationSet/m:ContentProtection", NS)
            assert elements[0].get("value") == "cenc"
            kid = elements[0].get(f"{{{NS['cenc']}}}default_KID", "")
            assert kid.replace("-", "") == period.key.kid.hex()
            init = next(path for kind, path in segment_urls(body.decode()) if kind == "init")
            status, data, _ = await fetch(session, f"{base}/dash/locked/{init}")
            assert status == 200 and tenc_kid(data) == period.key.kid
        laurl = root.find(".//m:ContentProtection/dashif:Laurl", NS)
        assert laurl is not None and laurl.text == f"{base}/drm/clearkey/locked?token=v%2B1"
        for _, path in segment_urls(body.decode()):
            assert path.endswith("?token=v%2B1"), path
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()


@pytest.fixture(scope="module")
def vod(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fanz-media transcode`` output of an 8 s clip: index.m3u8 and manifest.mpd."""
    media = tmp_path_factory.mktemp("dash_vod_media")
    clip = make_clip(ffmpeg, media / "clip.mp4", seconds=8, gop_seconds=1)
    index = transcode_command.run(clip, tmp_path_factory.mktemp("dash_vod") / "out", small_ladder(), "libx264",
                                  quiet=True)
    return index.parent


def test_vod_manifest_is_static_beside_the_hls_playlists(vod: Path, ffmpeg: str) -> None:
    text = (vod / "manifest.mpd").read_text()
    root = ET.fromstring(text)
    assert root.get("type") == "static"
    reps = root.findall(".//m:Representation", NS)
    assert sorted(r.get("id", "") for r in reps) == sorted(p.name for p in vod.iterdir() if p.is_dir())
    for kind, path in segment_urls(text):
        assert (vod / path).is_file(), (kind, path)
        playlist = (vod / path.split("/")[0] / "media.m3u8").read_text()
        assert path.split("/")[1] in playlist
    for path, (t, scale) in media_times(text).items():
        assert scale == 90000 and t == first_video_decode_time((vod / path).read_bytes()), path
    media = sum(1 for kind, _ in segment_urls(text) if kind == "media")
    hls = sum(1 for p in vod.glob("*/media.m3u8") for line in p.read_text().splitlines() if line.startswith("seg_"))
    assert media == hls
    duration = root.get("mediaPresentationDuration", "")
    assert 7.5 <= float(duration[2:-1]) <= 8.6, duration


async def test_ffmpeg_decodes_the_vod_manifest(vod: Path, ffmpeg: str) -> None:
    async with serve_directory(vod) as url:
        frames = await decoded_video_frames(ffmpeg, f"{url.rstrip('/')}/manifest.mpd", 1000)
    assert frames == 240  # 8 s at 30 fps, the first Representation's every frame


@pytest.mark.browser
async def test_shaka_plays_the_vod_manifest_and_dashjs_refuses_muxed(vod: Path) -> None:
    from tests.browser.player import play_hls_async

    async with serve_directory(vod) as url:
        manifest = f"{url.rstrip('/')}/manifest.mpd"
        report = await play_hls_async(manifest, player="shaka", min_time=4.0, timeout=60.0)
        assert report.ok, report.errors
        assert {lvl.height for lvl in report.levels} == {360, 288, 240}
        assert all(lvl.codecs.replace(" ", "").endswith(",mp4a.40.2") for lvl in report.levels)
        # dash.js asks Media Capabilities about each Representation's codecs,
        # which takes one codec per video type, and drops every muxed one.
        refused = await play_hls_async(manifest, player="dashjs", min_time=1.0, timeout=30.0)
        assert not refused.ok
        assert any("No streams to play" in e for e in refused.errors), refused.errors


@pytest.mark.browser
async def test_shaka_plays_the_live_manifest(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    from tests.browser.player import play_hls_async

    clip = make_clip(ffmpeg, media_dir / "dash_live_h264_aac.flv", seconds=30, size="426x240", bframes=0)
    engine = await start_engine(tmp_path / "data", streams={"reconnect_grace_s": 0.5})
    proc = None
    try:
        proc = await publish(ffmpeg, clip, rtmp_url(engine, "shakalive"))
        await wait_for(lambda: "shakalive" in engine.hls.outputs, 30)
        output = engine.hls.outputs["shakalive"]
        await wait_for(lambda: len(output.variants["src"].playlist.segments) >= 2, 30)
        report = await play_hls_async(f"{base_url(engine)}/dash/shakalive/manifest.mpd", player="shaka",
                                      min_time=6.0, timeout=60.0)
        assert report.ok, report.errors
        assert report.latency is not None  # Shaka took it for live
        assert (report.video_width, report.video_height) == (426, 240)
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()


async def test_a_paid_manifest_and_its_segments_need_the_token(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path
) -> None:
    """The engine as ``fanz-media serve`` builds it, with the control API
    deciding: the manifest and every file it names answer 403 without the
    viewer's token and 200 with it, which the manifest carries into them."""
    from control_api.app import PLANE
    from control_api.security import PlaybackClaims, issue_playback_token
    from engine.app.config import load_config
    from tests.conftest import free_port
    from tests.packager.test_segment_caching import creator_stream

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": tmp_path / "data", "host": "127.0.0.1"}, rtmp={"port": 0},
        http={"port": port, "api": True}, streams={"reconnect_grace_s": 0.5}, transcode={"enabled": False},
        api={"scrypt_n": 2**12, "public_base_url": base},
    )
    engine = Engine(config)
    await engine.start()
    proc = None
    try:
        assert engine.rtmp is not None and engine.api_app is not None
        async with aiohttp.ClientSession() as session:
            key, paid = await creator_stream(session, base, "dash_star", "subscribers")
            proc = await publish(ffmpeg, h264_aac_flv, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{key}")
            await wait_for(lambda: paid in engine.hls.outputs and engine.hls.outputs[paid].multivariant, 30)
            plane = engine.api_app[PLANE]
            now = time.time()
            token = issue_playback_token(plane.secret, PlaybackClaims(paid, "viewer1", int(now) + 600, now))
            other = issue_playback_token(plane.secret, PlaybackClaims("someone-else", "viewer1", int(now) + 600, now))
            for query in ("", f"?token={other}"):
                status, _, _ = await fetch(session, f"{base}/dash/{paid}/manifest.mpd{query}")
                assert status == 403, query
            status, body, _ = await fetch(session, f"{base}/dash/{paid}/manifest.mpd?token={token}")
            assert status == 200
            named = segment_urls(body.decode())
            assert named
            for _, path in named:
                assert path.endswith(f"?token={token}"), path
                status, data, headers = await fetch(session, f"{base}/dash/{paid}/{path}")
                assert status == 200 and data, path
                assert headers["Cache-Control"].startswith("private,")
                status, _, _ = await fetch(session, f"{base}/dash/{paid}/{path.split('?')[0]}")
                assert status == 403, path
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()


async def test_a_reconnect_opens_a_new_period(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    clip = make_clip(ffmpeg, media_dir / "dash_reconnect.flv", seconds=12, size="426x240", bframes=0)
    engine = await start_engine(tmp_path / "data", streams={"reconnect_grace_s": 8.0})
    procs = []
    try:
        base = base_url(engine)
        procs.append(await publish(ffmpeg, clip, rtmp_url(engine, "phoenix"), extra=["-t", "5"]))
        await procs[0].wait()
        await wait_for(lambda: "phoenix" in engine.hls.outputs, 30)
        output = engine.hls.outputs["phoenix"]
        procs.append(await publish(ffmpeg, clip, rtmp_url(engine, "phoenix"), extra=["-t", "6"]))
        await wait_for(lambda: any(s.discontinuity for s in output.variants["src"].playlist.segments), 30)
        await wait_for(lambda: not output.variants["src"].playlist.segments[-1].discontinuity, 30)
        async with aiohttp.ClientSession() as session:
            status, body, _ = await fetch(session, f"{base}/dash/phoenix/manifest.mpd")
            assert status == 200
            root = ET.fromstring(body)
            periods = root.findall("m:Period", NS)
            assert len(periods) == 2
            hls = list(output.variants["src"].playlist.segments)
            first_new = next(s for s in hls if s.discontinuity)
            assert periods[1].get("id") == f"p{first_new.sequence}"
            ends = []
            inits = []
            for period in periods:
                template = period.find(".//m:SegmentTemplate", NS)
                assert template is not None
                inits.append(template.get("initialization"))
                s = template.findall(".//m:S", NS)
                first_t = int(s[0].get("t", ""))
                ends.append((first_t, template))
            assert inits[0] != inits[1] and inits[1] == f"src/{first_new.init_uri}"
            # The media timeline carries on across the reconnect.
            scale = int(ends[1][1].get("timescale", ""))
            assert ends[1][0] == round(first_new.start * scale)
            for _, path in segment_urls(body.decode()):
                status, data, _ = await fetch(session, f"{base}/dash/phoenix/{path}")
                assert status == 200 and data, path
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        await engine.stop()


@pytest.mark.browser
async def test_shaka_plays_on_through_a_reconnect(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    from tests.browser.player import play_hls_async

    clip = make_clip(ffmpeg, media_dir / "dash_long_h264_aac.flv", seconds=20, size="426x240", bframes=0)
    engine = await start_engine(tmp_path / "data", streams={"reconnect_grace_s": 8.0})
    procs = []
    try:
        url = rtmp_url(engine, "phoenix")
        procs.append(await publish(ffmpeg, clip, url, extra=["-t", "8"]))
        await wait_for(lambda: "phoenix" in engine.hls.outputs, 30)
        output = engine.hls.outputs["phoenix"]
        await wait_for(lambda: len(output.variants["src"].playlist.segments) >= 2, 30)
        player = asyncio.create_task(play_hls_async(f"{base_url(engine)}/dash/phoenix/manifest.mpd", player="shaka",
                                                    min_time=14.0, timeout=90.0))
        await procs[0].wait()
        await asyncio.sleep(1.0)
        procs.append(await publish(ffmpeg, clip, url))
        await wait_for(lambda: any(s.discontinuity for s in output.variants["src"].playlist.segments), 30)
        assert len(output.period_starts) == 2
        # The first broadcast holds 8 s of media: 14 s played crossed into the second Period.
        report = await player
        assert report.ok, (report.errors, report.warnings)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        await engine.stop()


async def test_mpeg_ts_output_has_no_dash_manifest(tmp_path: Path, ffmpeg: str, h264_aac_flv: Path) -> None:
    engine = await start_engine(tmp_path / "data", hls={"segment_format": SegmentFormat.MPEGTS},
                                streams={"reconnect_grace_s": 0.5})
    proc = None
    try:
        proc = await publish(ffmpeg, h264_aac_flv, rtmp_url(engine, "tsonly"))
        await wait_for(lambda: "tsonly" in engine.hls.outputs and engine.hls.outputs["tsonly"].multivariant, 30)
        async with aiohttp.ClientSession() as session:
            status, body, headers = await fetch(session, f"{base_url(engine)}/dash/tsonly/manifest.mpd")
        assert status == 404
        assert b"fMP4" in body and headers["Access-Control-Allow-Origin"] == "*"
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()
