"""The browser playback harness plays what it should and fails when it should.

HLS made by the real ffmpeg (VOD in fMP4 and MPEG-TS, a two-rung ladder, and
a live sliding-window playlist written while the test runs) is served from
loopback with CORS; headless Chromium plays it with hls.js, Shaka Player and
the native player, and ffmpeg's DASH with Shaka Player and dash.js. Broken
inputs (a missing playlist, garbage segments, a clip shorter than the wanted
play time) must come back as ok=False.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.browser.player import (
    HarnessError,
    HarnessOutputError,
    PlaybackReport,
    Player,
    build_command,
    ensure_browser_deps,
    parse_report,
    play_hls_async,
)
from tests.browser.static_server import serve_directory

_SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
_VIDEO = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25",
          "-sc_threshold", "0"]
_ENCODE = [*_VIDEO, "-c:a", "aac", "-b:a", "64k"]


def _ffmpeg(ffmpeg: str, args: list[str]) -> None:
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="session")
def hls_root(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    """A folder with VOD renditions: vod_fmp4/, vod_ts/ (6 s each), abr/ (two
    rungs behind master.m3u8), broken/ (a playlist over garbage segments)."""
    root = tmp_path_factory.mktemp("hls")
    for name, kind in (("vod_fmp4", "fmp4"), ("vod_ts", "mpegts")):
        (root / name).mkdir()
        _ffmpeg(ffmpeg, [*_SOURCE, "-t", "6", *_ENCODE, "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
                         "-hls_segment_type", kind, str(root / name / "index.m3u8")])
    abr = root / "abr"
    abr.mkdir()
    _ffmpeg(ffmpeg, [*_SOURCE, "-t", "8", "-filter_complex", "[0:v]split=2[hi][lo];[lo]scale=160:90[lo2]",
                     "-map", "[hi]", "-map", "[lo2]", "-map", "1:a", "-map", "1:a", *_ENCODE,
                     "-b:v:0", "600k", "-b:v:1", "150k", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
                     "-master_pl_name", "master.m3u8", "-var_stream_map", "v:0,a:0 v:1,a:1",
                     "-hls_segment_filename", str(abr / "v%v" / "seg%d.ts"), str(abr / "v%v" / "index.m3u8")])
    _write_cenc_hls(ffmpeg, root / "cenc")
    # DASH as ffmpeg's muxer writes it: video and audio in AdaptationSets of their own.
    (root / "dash").mkdir()
    _ffmpeg(ffmpeg, [*_SOURCE, "-t", "6", *_ENCODE, "-f", "dash", "-seg_duration", "2", "-use_timeline", "1",
                     "-use_template", "1", "-adaptation_sets", "id=0,streams=v id=1,streams=a",
                     str(root / "dash" / "manifest.mpd")])
    broken = root / "broken"
    broken.mkdir()
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for i in range(3):
        (broken / f"seg{i}.ts").write_bytes(bytes(range(256)) * 200)
        lines += ["#EXTINF:2.0,", f"seg{i}.ts"]
    (broken / "index.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST", ""]))
    return root


_KID = "0123456789abcdef0123456789abcdef"
_KEY = "00112233445566778899aabbccddeeff"


def _write_cenc_hls(ffmpeg: str, out: Path) -> None:
    """Video-only fMP4 HLS encrypted with cenc-aes-ctr under _KID/_KEY. PyAV's
    FFmpeg writes it (Debian's ffmpeg 5.1 leaves the senc boxes out of HLS
    segments); there is no pssh box and no EXT-X-KEY, so the player learns
    the key ID only from the --clearkey option."""
    out.mkdir()
    clear = out / "clear.mp4"
    _ffmpeg(ffmpeg, [*_SOURCE[:4], "-t", "6", *_VIDEO, str(clear)])
    with av.open(str(clear)) as src, av.open(str(out / "index.m3u8"), "w", format="hls", options={
        "hls_time": "2", "hls_playlist_type": "vod", "hls_segment_type": "fmp4",
        "hls_segment_options": f"encryption_scheme=cenc-aes-ctr:encryption_key={_KEY}:encryption_kid={_KID}",
    }) as dst:
        video = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                dst.mux(packet)
    clear.unlink()


@pytest.fixture(scope="session")
def browser_ready() -> None:
    ensure_browser_deps()


@pytest.fixture
async def hls_server(hls_root: Path, browser_ready: None) -> AsyncIterator[str]:
    async with serve_directory(hls_root) as base:
        yield base


@pytest.fixture(params=["mpegts", "fmp4"])
async def live_server(request: pytest.FixtureRequest, tmp_path: Path, ffmpeg: str,
                      browser_ready: None) -> AsyncIterator[str]:
    """A live playlist of MPEG-TS or fMP4 segments (1 s each, 6 in the
    window, with program date-time) written in real time by ffmpeg for up to
    30 s; yields its URL once three segments exist."""
    out = tmp_path / "live"
    out.mkdir()
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-re", *_SOURCE, "-t", "30", *_ENCODE,
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "6", "-hls_segment_type", request.param,
        "-hls_flags", "delete_segments+program_date_time", str(out / "index.m3u8"),
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(30):
            while (not (out / "index.m3u8").exists()
                   or (out / "index.m3u8").read_text().count("#EXTINF") < 3):
                assert proc.returncode is None, "the live ffmpeg exited early"
                await asyncio.sleep(0.2)
        async with serve_directory(tmp_path) as base:
            yield f"{base}live/index.m3u8"
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


def _assert_played(report: PlaybackReport, min_time: float) -> None:
    assert report.ok, report.errors
    assert report.errors == ()
    assert report.played_time >= min_time
    assert report.decoded_frames is not None and report.decoded_frames > 0
    assert (report.video_width, report.video_height) in {(320, 180), (160, 90)}


@pytest.mark.browser
@pytest.mark.parametrize("player", ["hlsjs", "shaka"])
@pytest.mark.parametrize("folder", ["vod_fmp4", "vod_ts"])
async def test_vod_plays_past_three_seconds(hls_server: str, player: Player, folder: str) -> None:
    report = await play_hls_async(f"{hls_server}{folder}/index.m3u8", player=player, min_time=3, timeout=60)
    _assert_played(report, 3)
    assert report.player == player
    assert report.player_version == {"hlsjs": "1.7.4", "shaka": "5.2.12"}[player]
    assert report.latency is None, "VOD has no live latency"


@pytest.mark.browser
@pytest.mark.parametrize("player", ["shaka", "dashjs"])
async def test_demuxed_dash_plays_past_three_seconds(hls_server: str, player: Player) -> None:
    report = await play_hls_async(f"{hls_server}dash/manifest.mpd", player=player, min_time=3, timeout=60)
    _assert_played(report, 3)
    assert report.player_version == {"shaka": "5.2.12", "dashjs": "5.2.1"}[player]


@pytest.mark.browser
async def test_native_player_plays_vod(hls_server: str) -> None:
    report = await play_hls_async(f"{hls_server}vod_ts/index.m3u8", player="native", min_time=3, timeout=60)
    _assert_played(report, 3)


@pytest.mark.browser
@pytest.mark.parametrize("player", ["hlsjs", "shaka"])
async def test_live_plays_and_reports_latency(live_server: str, player: Player) -> None:
    report = await play_hls_async(live_server, player=player, min_time=3, timeout=60)
    _assert_played(report, 3)
    assert report.latency is not None and report.latency > 0
    assert report.pdt_latency is not None


@pytest.mark.browser
@pytest.mark.parametrize("player", ["hlsjs", "shaka"])
async def test_switch_level_on_ladder(hls_server: str, player: Player) -> None:
    report = await play_hls_async(f"{hls_server}abr/master.m3u8", player=player, min_time=3, timeout=60,
                                  switch_level=True)
    _assert_played(report, 3)
    assert report.level_switched
    assert sorted((lv.width, lv.height) for lv in report.levels) == [(160, 90), (320, 180)]


@pytest.mark.browser
async def test_shaka_clearkey_plays_with_the_right_key(hls_server: str) -> None:
    report = await play_hls_async(f"{hls_server}cenc/index.m3u8", player="shaka", min_time=3, timeout=60,
                                  clearkey={_KID: _KEY})
    _assert_played(report, 3)


@pytest.mark.browser
async def test_shaka_clearkey_fails_with_a_wrong_key(hls_server: str) -> None:
    report = await play_hls_async(f"{hls_server}cenc/index.m3u8", player="shaka", min_time=3, timeout=30,
                                  clearkey={_KID: "f" * 32})
    assert not report.ok
    assert report.errors
    assert report.played_time == 0


@pytest.mark.browser
async def test_switch_level_fails_with_one_level(hls_server: str) -> None:
    report = await play_hls_async(f"{hls_server}vod_ts/index.m3u8", min_time=3, timeout=60, switch_level=True)
    assert not report.ok
    assert any("cannot switch" in e for e in report.errors)


@pytest.mark.browser
@pytest.mark.parametrize("player", ["hlsjs", "shaka", "native"])
async def test_missing_playlist_fails(hls_server: str, player: Player) -> None:
    report = await play_hls_async(f"{hls_server}nothing/index.m3u8", player=player, min_time=3, timeout=30)
    assert not report.ok
    assert report.errors
    assert report.played_time == 0


@pytest.mark.browser
async def test_hlsjs_reports_404_status(hls_server: str) -> None:
    report = await play_hls_async(f"{hls_server}nothing/index.m3u8", min_time=3, timeout=30)
    assert any("manifestLoadError" in e and "404" in e for e in report.errors), report.errors


@pytest.mark.browser
@pytest.mark.parametrize("player", ["hlsjs", "shaka"])
async def test_garbage_segments_fail(hls_server: str, player: Player) -> None:
    report = await play_hls_async(f"{hls_server}broken/index.m3u8", player=player, min_time=3, timeout=30)
    assert not report.ok
    assert report.errors
    assert report.played_time < 3


@pytest.mark.browser
async def test_clip_shorter_than_min_time_fails(hls_server: str) -> None:
    report = await play_hls_async(f"{hls_server}vod_fmp4/index.m3u8", min_time=30, timeout=60)
    assert not report.ok
    assert any("ended" in e for e in report.errors), report.errors
    assert 3 < report.played_time < 30


def test_usage_error_raises(browser_ready: None) -> None:
    cmd = [*build_command("http://127.0.0.1:9/x.m3u8"), "--bogus"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "unknown argument --bogus" in result.stderr
    assert result.stdout == ""


def test_clearkey_only_with_shaka(browser_ready: None) -> None:
    cmd = build_command("http://127.0.0.1:9/x.m3u8", player="hlsjs", clearkey={"0" * 32: "1" * 32})
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "--clearkey" in result.stderr


def test_licence_server_only_with_shaka(browser_ready: None) -> None:
    shaka = build_command("http://127.0.0.1:9/x.m3u8", player="shaka", licence_server="http://127.0.0.1:9/lic")
    assert shaka[-2:] == ["--licence-server", "http://127.0.0.1:9/lic"]
    cmd = build_command("http://127.0.0.1:9/x.m3u8", player="hlsjs", licence_server="http://127.0.0.1:9/lic")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "--licence-server" in result.stderr


_GOOD = {
    "ok": True, "url": "http://127.0.0.1/x.m3u8", "player": "hlsjs", "playerVersion": "1.7.4",
    "browserVersion": "156.0.0.0", "currentTime": 3.5, "playedTime": 3.2,
    "levels": [{"width": 320, "height": 180, "bitrate": 600000, "codecs": "avc1.42c014"}],
    "currentLevel": 0, "levelSwitched": False, "videoWidth": 320, "videoHeight": 180, "errors": [],
    "warnings": ["w"], "stalls": 0, "stallsAfterSwitch": 0, "droppedFrames": 0, "decodedFrames": 90, "latency": None,
    "pdtLatency": None, "elapsed": 4.2,
}


def test_parse_report_reads_last_line() -> None:
    report = parse_report("noise\n" + json.dumps(_GOOD) + "\n\n")
    assert report.ok and report.played_time == 3.2 and report.levels[0].height == 180
    assert report.warnings == ("w",)


@pytest.mark.parametrize("text", ["", "\n\n", "not json", "[1, 2]", json.dumps(_GOOD)[:-5],
                                  json.dumps({**_GOOD, "ok": "yes"}), json.dumps({**_GOOD, "stalls": True}),
                                  json.dumps({**_GOOD, "levels": [1]}), json.dumps({**_GOOD, "errors": [3]})])
def test_parse_report_rejects_malformed(text: str) -> None:
    with pytest.raises(HarnessOutputError):
        parse_report(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=20,
)


@given(st.text(max_size=300))
def test_parse_report_hostile_text(text: str) -> None:
    with contextlib.suppress(HarnessOutputError):
        parse_report(text)


@given(st.dictionaries(st.sampled_from(sorted(_GOOD)), _JSON, max_size=len(_GOOD)))
def test_parse_report_hostile_fields(overrides: dict[str, object]) -> None:
    """Any mix of wrong-typed fields is either a valid report or a HarnessOutputError."""
    try:
        report = parse_report(json.dumps({**_GOOD, **overrides}))
    except HarnessOutputError:
        return
    assert isinstance(report.ok, bool)
    assert isinstance(report.errors, tuple)


def test_harness_error_tree() -> None:
    assert issubclass(HarnessOutputError, HarnessError)
    assert issubclass(HarnessOutputError, ValueError)
