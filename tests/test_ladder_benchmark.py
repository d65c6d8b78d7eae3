"""The ladder benchmark's own parts: the engine config it writes, the ffmpeg
command it builds from the engine's encoder options, its playlist and
metrics parsers, and its verdicts. The slow tests run both tools for real
on a tiny clip and check that libx264 got the very same settings."""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from benchmarks.common import BenchmarkError, ParseError, Progress, make_source_clip
from benchmarks.ladder_live import EngineWatch, LiveStep, ProgressOutcome, ffmpeg_live_step, judge_engine
from benchmarks.ladder_vs_ffmpeg import (
    SERIAL_ENGINE,
    FileJob,
    FileRun,
    SegmentEntry,
    Settings,
    TranscodeCounters,
    allowed_cpus,
    bench_ladders,
    engine_config_toml,
    engine_executable,
    engine_transcode_command,
    ffmpeg_ladder_command,
    file_ratios,
    ladder_toml,
    measure_file_run,
    measure_jobs,
    parse_args,
    parse_segments,
    parse_transcode_metrics,
    pinned,
    probe_source,
    render,
    setup_key,
    vod_output_failures,
    x264_stream_args,
)
from engine.app.config import load_config
from engine.media import Codec
from transcode.encoders import SOFTWARE_H264, encoder_options
from transcode.ladder import ENCODE_USES, LadderConfig, RungConfig, SourceInfo, plan_ladder

SOURCE_1080 = SourceInfo(Codec.H264, 1920, 1080, Fraction(30), 6_000_000)


def _load_ladders(tmp_path: Path, text: str) -> dict[str, LadderConfig]:
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return load_config(path, env={}).transcode.all_ladders()


# --- the engine's config ---------------------------------------------------------

def test_bench_ladders_are_the_builtin_rungs_without_passthrough() -> None:
    file_ladder, live_ladder = bench_ladders()
    assert [r.name for r in file_ladder.rungs] == ["1080p", "720p", "480p", "360p"]
    assert [r.name for r in live_ladder.rungs] == ["720p", "480p", "360p"]
    for ladder in (file_ladder, live_ladder):
        assert not ladder.passthrough and ladder.segment_duration == 2
        assert ladder.x264_preset == "veryfast" and ladder.rate_control == "vbr"
        # B-frames and tune come from the job's named settings (file or live).
        assert ladder.bframes is None and ladder.x264_tune == "auto"


def test_config_round_trip_gives_the_same_ladders(tmp_path: Path) -> None:
    file_ladder, live_ladder = bench_ladders("faster")
    ladders = _load_ladders(tmp_path, engine_config_toml([file_ladder, live_ladder], live_ladder.name))
    assert ladders["bench4"] == file_ladder
    assert ladders["bench3"] == live_ladder
    config = load_config(tmp_path / "engine.toml", env={})
    assert config.transcode.enabled and config.transcode.ladder == "bench3"
    assert not config.hls.low_latency and not config.http.api


def test_config_round_trip_of_every_optional_field(tmp_path: Path) -> None:
    rung = RungConfig("mid", 540, 2_000_000, max_frame_rate=Fraction(30000, 1001), profile="main", level="3.1",
                      max_bitrate=2_500_000, buffer_size=3_000_000)
    ladder = LadderConfig("odd", (rung, RungConfig("low", 240, 300_000, max_frame_rate=None)), passthrough=True,
                          rate_control="cbr", x264_preset="fast", x264_tune="zerolatency", bframes=2,
                          encoder_threads=3, parallel_rungs=False, segment_duration=Fraction(3, 2),
                          max_gop_duration=Fraction(4),
                          audio_bitrate=96_000, audio_sample_rate=44_100, audio_channels=1)
    assert _load_ladders(tmp_path, ladder_toml(ladder))["odd"] == ladder
    for tune in ("", "none", "auto", "film,fastdecode"):
        retuned = replace(ladder, x264_tune=tune, bframes=None)
        assert _load_ladders(tmp_path, ladder_toml(retuned))["odd"] == retuned


def test_serial_rungs_ladder_round_trips(tmp_path: Path) -> None:
    file_ladder, _ = bench_ladders()
    serial = replace(file_ladder, name="bench4-serial", parallel_rungs=False)
    ladders = _load_ladders(tmp_path, engine_config_toml([file_ladder, serial], None))
    assert ladders["bench4"].parallel_rungs and not ladders["bench4-serial"].parallel_rungs
    assert replace(ladders["bench4-serial"], name="bench4", parallel_rungs=True) == file_ladder


def test_file_config_has_no_live_transcoder(tmp_path: Path) -> None:
    file_ladder, _ = bench_ladders()
    (tmp_path / "engine.toml").write_text(engine_config_toml([file_ladder], None))
    assert not load_config(tmp_path / "engine.toml", env={}).transcode.enabled


# --- the ffmpeg command ------------------------------------------------------------

def _option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


@pytest.mark.parametrize(("use", "bframes", "thread_type"), [("file", "3", "frame"), ("live", "0", "slice")])
def test_x264_args_carry_every_engine_option(use: str, bframes: str, thread_type: str) -> None:
    file_ladder, _ = bench_ladders()
    rungs = plan_ladder(file_ladder, SOURCE_1080).rungs
    for index, rung in enumerate(rungs):
        args = x264_stream_args(file_ladder, rung, index, ENCODE_USES[use])
        pairs = dict(zip(args[::2], args[1::2], strict=True))
        for key, value in encoder_options(SOFTWARE_H264, file_ladder, rung, ENCODE_USES[use]).items():
            assert pairs[f"-{key}:v:{index}"] == value
        assert pairs[f"-b:v:{index}"] == str(rung.config.bitrate)
        assert pairs[f"-g:v:{index}"] == "300"  # 30 fps x the 10 s GOP cap; IDRs come from the grid
        assert pairs[f"-bf:v:{index}"] == bframes
        assert pairs[f"-thread_type:v:{index}"] == thread_type
        assert "+cgop" in pairs[f"-flags:v:{index}"]
        assert ("-tune:v:" + str(index) in pairs) == (use == "live")


def test_file_command_splits_scales_and_maps_every_rung(tmp_path: Path) -> None:
    file_ladder, _ = bench_ladders()
    cmd = ffmpeg_ladder_command("ffmpeg", Path("in.mp4"), tmp_path, file_ladder, SOURCE_1080)
    graph = _option(cmd, "-filter_complex")
    assert graph.startswith("[0:v]split=4[s0][s1][s2][s3];")
    sizes = re.findall(r"scale=(\d+):(\d+):flags=bilinear", graph)
    assert sizes == [("1920", "1080"), ("1280", "720"), ("854", "480"), ("640", "360")]
    assert cmd.count("-map") == 8 and cmd.count("0:a:0") == 4
    assert _option(cmd, "-var_stream_map") == "v:0,a:0,name:1080p v:1,a:1,name:720p v:2,a:2,name:480p v:3,a:3,name:360p"
    assert _option(cmd, "-force_key_frames") == "expr:gte(t,n_forced*2)"
    assert _option(cmd, "-hls_playlist_type") == "vod" and _option(cmd, "-hls_segment_type") == "fmp4"
    assert "-re" not in cmd and "-progress" not in cmd
    assert cmd[-1] == str(tmp_path / "%v" / "media.m3u8")
    assert _option(cmd, "-bf:v:0") == "3" and _option(cmd, "-thread_type:v:0") == "frame"  # file settings


def test_live_command_reads_in_real_time_and_follows_source_keyframes(tmp_path: Path) -> None:
    _, live_ladder = bench_ladders()
    info = SourceInfo(Codec.H264, 1280, 720, Fraction(30), 3_000_000)
    cmd = ffmpeg_ladder_command("ffmpeg", Path("in.mp4"), tmp_path, live_ladder, info, live_duration_s=12)
    assert cmd.index("-re") < cmd.index("-i") < cmd.index("-t") and _option(cmd, "-t") == "12"
    assert _option(cmd, "-stream_loop") == "-1" and _option(cmd, "-progress") == "pipe:1"
    assert _option(cmd, "-force_key_frames") == "source"
    assert "-hls_playlist_type" not in cmd and "program_date_time" in _option(cmd, "-hls_flags")
    assert "split=3" in _option(cmd, "-filter_complex")
    assert _option(cmd, "-bf:v:0") == "0" and _option(cmd, "-tune:v:0") == "zerolatency"  # live settings


def test_a_capped_frame_rate_is_decimated_before_scaling(tmp_path: Path) -> None:
    file_ladder, _ = bench_ladders()
    info = SourceInfo(Codec.H264, 1280, 720, Fraction(60), None)
    graph = _option(ffmpeg_ladder_command("ffmpeg", Path("in.mp4"), tmp_path, file_ladder, info), "-filter_complex")
    assert "[s0]fps=30,scale=1280:720" in graph


# --- playlists -----------------------------------------------------------------------

ENGINE_LIVE = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:4
#EXT-X-MAP:URI="init_1.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:00.500Z
#EXTINF:2.00000,
seg_4.m4s
#EXTINF:2.00000,
seg_5.m4s
#EXTINF:1.50000,
seg_6.m4s
"""

FFMPEG_LIVE = """#EXTM3U
#EXT-X-TARGETDURATION:3
#EXTINF:2.000000,
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T03:37:13.022+0000
seg_0.m4s
#EXTINF:3.000000,
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T03:37:15.022+0000
seg_1.m4s
"""


def test_dates_carry_forward_by_duration() -> None:
    base = datetime(2026, 11, 25, 10, 0, 0, 500_000, tzinfo=UTC).timestamp()
    assert parse_segments(ENGINE_LIVE) == [SegmentEntry(2.0, base), SegmentEntry(2.0, base + 2),
                                           SegmentEntry(1.5, base + 4)]


def test_dates_on_every_segment_in_ffmpeg_form() -> None:
    base = datetime(2026, 11, 25, 3, 37, 13, 22_000, tzinfo=UTC).timestamp()
    assert parse_segments(FFMPEG_LIVE) == [SegmentEntry(2.0, base), SegmentEntry(3.0, base + 2)]


def test_playlist_without_dates_has_no_starts() -> None:
    assert parse_segments("#EXTM3U\n#EXTINF:2.0,\na.m4s\n#EXTINF:1,\nb.m4s\n") == [
        SegmentEntry(2.0, None), SegmentEntry(1.0, None)]


@pytest.mark.parametrize("text", [
    "",
    "#EXTM3X\n",
    "#EXTM3U\nseg.m4s\n",
    "#EXTM3U\n#EXTINF:abc,\nseg.m4s\n",
    "#EXTM3U\n#EXTINF:-1,\nseg.m4s\n",
    "#EXTM3U\n#EXTINF:nan,\nseg.m4s\n",
    "#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:yesterday\n#EXTINF:2,\nseg.m4s\n",
    "#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:00\n#EXTINF:2,\nseg.m4s\n",
    "#EXTM3U\n#EXTINF:2," + "9" * 70_000 + "\nseg.m4s\n",
])
def test_malformed_playlists_raise_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_segments(text)


def test_truncated_playlist_drops_the_unfinished_segment() -> None:
    cut = ENGINE_LIVE[: ENGINE_LIVE.rindex("seg_6")]
    assert len(parse_segments(cut)) == 2


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_hostile_playlists_parse_or_raise_parse_error(body: str) -> None:
    for text in (body, "#EXTM3U\n" + body):
        try:
            segments = parse_segments(text)
        except ParseError:
            continue
        assert all(0 <= s.duration < 3600 for s in segments)


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=20),
       st.integers(min_value=1_600_000_000_000, max_value=2_000_000_000_000))
@settings(max_examples=100, deadline=None)
def test_generated_playlists_round_trip(durations_ms: list[int], start_ms: int) -> None:
    moment = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    pdt = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:10", f"#EXT-X-PROGRAM-DATE-TIME:{pdt}"]
    for i, ms in enumerate(durations_ms):
        lines += [f"#EXTINF:{ms / 1000:.3f},", f"seg_{i}.m4s"]
    segments = parse_segments("\n".join(lines))
    assert [round(s.duration * 1000) for s in segments] == durations_ms
    assert segments[0].start == pytest.approx(start_ms / 1000, abs=1e-3)
    assert segments[-1].start == pytest.approx((start_ms + sum(durations_ms[:-1])) / 1000, abs=1e-3)


def test_vod_output_check(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "index.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na/media.m3u8\n")
    (tmp_path / "a" / "media.m3u8").write_text("#EXTM3U\n#EXTINF:2,\n0.m4s\n#EXTINF:1.9,\n1.m4s\n#EXT-X-ENDLIST\n")
    assert vod_output_failures(tmp_path, ["a"], 4.0) == []
    assert vod_output_failures(tmp_path, ["a"], 6.0) == ["rendition a: 3.90 s of 6.00 s, or not ended"]
    assert vod_output_failures(tmp_path, ["a", "b"], 4.0) == ["rendition b is missing"]
    assert vod_output_failures(tmp_path / "a", ["a"], 4.0) == [f"{tmp_path / 'a' / 'index.m3u8'} is missing"]


# --- metrics and verdicts ------------------------------------------------------------

class _EngineLikeCollector:
    """Exposes the two families the way engine/app/serve.py builds them."""

    def __init__(self, streams: dict[str, tuple[int, int]]) -> None:
        self.streams = streams

    def collect(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        dropped = CounterMetricFamily("fanz_transcode_dropped_frames", "drops", labels=["stream"])
        queue = GaugeMetricFamily("fanz_transcode_queue_depth", "queue", labels=["stream"])
        for name, (drops, depth) in self.streams.items():
            dropped.add_metric([name], drops)
            queue.add_metric([name], depth)
        return [dropped, queue]


def test_metrics_as_the_engine_exposes_them() -> None:
    registry = CollectorRegistry()
    registry.register(_EngineLikeCollector({"s0": (0, 3), "s1": (17, 250)}))
    text = generate_latest(registry).decode() + 'other_metric{stream="s0"} 5\n'
    assert parse_transcode_metrics(text) == {"s0": TranscodeCounters(0, 3), "s1": TranscodeCounters(17, 250)}
    assert parse_transcode_metrics("") == {}


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_hostile_metrics_parse_or_raise_parse_error(text: str) -> None:
    try:
        parse_transcode_metrics(text)
    except ParseError:
        pass


def _block(out_s: float | None, speed: float | None = 1.0, ended: bool = False) -> Progress:
    return Progress(None if out_s is None else int(out_s * 1e6), speed, None, ended)


def test_speed_is_measured_after_the_warmup() -> None:
    outcome = ProgressOutcome()
    # Start-up: 2 s of wall for the first 1 s of media; ffmpeg's average speed stays low.
    outcome.observe(_block(1.0, 0.5), now=100.0, warmup_s=3.0)
    outcome.observe(_block(None, None), now=100.5, warmup_s=3.0)
    for i in range(11):  # then 0.95 s of media per wall second
        outcome.observe(_block(3.0 + 0.95 * i, 0.9), now=102.0 + i, warmup_s=3.0)
    outcome.observe(_block(99.0, 0.9, ended=True), now=200.0, warmup_s=3.0)
    assert outcome.speed == pytest.approx(0.95)
    assert outcome.last_speed == 0.9


def test_speed_falls_back_to_ffmpegs_figure_without_a_window() -> None:
    outcome = ProgressOutcome()
    assert outcome.speed is None
    outcome.observe(_block(1.0, 0.8), now=0.0, warmup_s=3.0)
    assert outcome.speed == 0.8
    outcome.observe(_block(3.0, 0.85), now=1.0, warmup_s=3.0)
    outcome.observe(_block(3.5, 0.9), now=1.5, warmup_s=3.0)
    assert outcome.speed == 0.9


def _settings(*extra: str) -> Settings:
    return parse_args(["--duration", "20", *extra])


def _watch(dropped: float, queue: list[float], age: float, first: float = 3.0) -> EngineWatch:
    watch = EngineWatch(dropped={"s0": dropped}, queue={"s0": queue})
    for name in ("720p", "480p"):
        watch.first_segment_s[f"s0/{name}"] = first
        watch.max_age_s[f"s0/{name}"] = age
        watch.target_s[f"s0/{name}"] = 2.0
    return watch


def _judge(watch: EngineWatch, *extra: str) -> LiveStep:
    step = LiveStep("engine", 1, 20.0, 1.0, 3.0, 5.0, 100.0, 1.0)
    judge_engine(step, watch, ["s0"], ["720p", "480p"], _settings(*extra), packets_per_s=76.875, frames_per_s=30)
    return step


def test_engine_verdicts() -> None:
    assert _judge(_watch(0, [2, 0, 1, 3], 4.0)).failures == []
    assert _judge(_watch(0, [0, 300, 200, 100], 4.0)).end_lag_s == pytest.approx(100 / 76.875)
    assert any("behind" in f for f in _judge(_watch(0, [0, 300, 200, 100], 4.0)).failures)
    assert any("dropped" in f for f in _judge(_watch(5, [0], 4.0)).failures)
    assert _judge(_watch(5, [0], 4.0), "--max-drop-fraction", "0.01").failures == []
    assert any("old" in f for f in _judge(_watch(0, [0], 6.5)).failures)
    assert any("first segment" in f for f in _judge(_watch(0, [0], 4.0, first=16.0)).failures)
    missing = _judge(EngineWatch())
    assert any("no transcode counters" in f for f in missing.failures)
    assert sum("no segment" in f for f in missing.failures) == 2


def test_arguments_are_checked() -> None:
    settings_ = parse_args(["--part", "file", "--side", "ffmpeg", "--seconds", "4"])
    assert settings_.parts == ("file",) and settings_.sides == ("ffmpeg",) and settings_.seconds == 4
    assert parse_args([]).parts == ("file", "live") and parse_args([]).max_streams == 6
    assert parse_args([]).cpus == (None,) and parse_args([]).parallel == (1,)
    pinned_ = parse_args(["--cpus", "1", "1", "--parallel", "1", "3", "--serial-rungs"])
    assert pinned_.cpus == (1,) and pinned_.parallel == (1, 3) and pinned_.serial_rungs
    assert not parse_args([]).serial_rungs
    too_many = str(len(allowed_cpus()) + 1)
    for bad in (["--seconds", "0"], ["--duration", "-1"], ["--min-speed", "0"], ["--max-lag", "-1"],
                ["--cpus", "0"], ["--parallel", "0"], ["--cpus", too_many]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_pinning_uses_the_first_allowed_cpus() -> None:
    first = allowed_cpus()[0]
    assert pinned(["ffmpeg", "-i", "x"], None) == ["ffmpeg", "-i", "x"]
    assert pinned(["ffmpeg", "-i", "x"], 1) == ["taskset", "-c", str(first), "ffmpeg", "-i", "x"]
    with pytest.raises(BenchmarkError):
        pinned(["ffmpeg"], len(allowed_cpus()) + 1)
    with pytest.raises(BenchmarkError):
        pinned(["ffmpeg"], 0)


def _file_run(tool: str, wall: float, cpu: float, cpus: int | None, parallel: int) -> FileRun:
    return FileRun(tool, wall, cpu, 300 * parallel / wall, 100 * cpu / wall, 100.0, 5.0, True, [], cpus, parallel)


def test_ratios_and_table_for_every_setup() -> None:
    assert file_ratios({"engine": _file_run("engine", 2.0, 3.0, 1, 1)}) == {}
    serial = {SERIAL_ENGINE: _file_run(SERIAL_ENGINE, 3.0, 3.0, 1, 1), "ffmpeg": _file_run("ffmpeg", 2.0, 2.0, 1, 1)}
    assert file_ratios(serial) == {} and file_ratios(serial, SERIAL_ENGINE)["wall"] == 1.5
    ratios = file_ratios({"engine": _file_run("engine", 2.0, 3.0, 1, 2), "ffmpeg": _file_run("ffmpeg", 4.0, 2.0, 1, 2)})
    assert ratios == {"wall": 0.5, "cpu": 1.5, "fps": 2.0}
    setups = {}
    for cpus in (1, 2):
        best = {t: _file_run(t, w, 1.0, cpus, 2) for t, w in (("engine", 1.0 * cpus), ("ffmpeg", 2.0))}
        setups[setup_key(cpus, 2)] = {"best": {k: asdict(v) for k, v in best.items()},
                                      "ratio_engine_over_ffmpeg": file_ratios(best)}
    text = render({"file": {"ladder": ["a"], "source_size": "1x1", "source_frames": 300, "source_seconds": 10.0,
                            "setups": setups}})
    assert "cpus=1 parallel=2: engine / ffmpeg wall 0.50 (engine faster)" in text
    assert "cpus=2 parallel=2: engine / ffmpeg wall 1.00 (even)" in text
    assert len([line for line in text.splitlines() if line.strip().startswith(("engine", "ffmpeg"))]) == 4


# --- both tools for real -----------------------------------------------------------------

def _x264_options(segment: Path) -> dict[str, str]:
    """The option string libx264 writes into its SEI, as a dict."""
    found = re.search(rb"options: ([^\x00]*)", segment.read_bytes())
    assert found is not None, f"no x264 SEI in {segment}"
    return dict(item.split("=", 1) for item in found.group(1).decode().split() if "=" in item)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_both_tools_give_libx264_the_same_settings(tmp_path: Path, ffmpeg: str) -> None:
    file_ladder, _ = bench_ladders()
    ladder = replace(file_ladder, name="tiny", rungs=(
        RungConfig("240p", 240, 400_000, level="3.0"), RungConfig("144p", 144, 200_000, profile="main", level="2.1")))
    clip = await asyncio.to_thread(make_source_clip, ffmpeg, tmp_path / "cache", seconds=3, width=640, height=360,
                                   video_kbps=800)
    info, frames, duration = probe_source(clip)
    assert frames == 90
    names = plan_ladder(ladder, info).rendition_names
    config = tmp_path / "engine.toml"
    config.write_text(engine_config_toml([ladder], None))
    engine_out, ffmpeg_out = tmp_path / "engine", tmp_path / "ffmpeg"
    ffmpeg_out.mkdir()
    runs = [
        await measure_file_run("engine", engine_transcode_command(engine_executable(), clip, engine_out, "tiny",
                                                                  config), engine_out, tmp_path / "e.log",
                               frames, names, duration),
        await measure_file_run("ffmpeg", ffmpeg_ladder_command(ffmpeg, clip, ffmpeg_out, ladder, info), ffmpeg_out,
                               tmp_path / "f.log", frames, names, duration),
    ]
    for run in runs:
        assert run.ok, run.failures
        assert run.wall_s > 0 and run.cpu_s > 0 and run.peak_rss_mb > 0 and run.output_mb > 0
        assert run.fps == pytest.approx(frames / run.wall_s)
    for name in names:
        engine_opts = _x264_options(sorted((engine_out / name).glob("seg*"))[0])
        ffmpeg_opts = _x264_options(sorted((ffmpeg_out / name).glob("seg*"))[0])
        assert engine_opts == ffmpeg_opts
        assert engine_opts["scenecut"] == "0" and engine_opts["keyint"] == "300"
        # The file settings: B-frames, the preset's lookahead, frame threads.
        assert engine_opts["bframes"] == "3" and engine_opts["sliced_threads"] == "0"
        assert engine_opts["rc_lookahead"] != "0"


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_parallel_copies_on_one_pinned_cpu(tmp_path: Path, ffmpeg: str) -> None:
    file_ladder, _ = bench_ladders("ultrafast")
    ladder = replace(file_ladder, name="tiny", rungs=(RungConfig("144p", 144, 200_000, profile="main"),))
    clip = await asyncio.to_thread(make_source_clip, ffmpeg, tmp_path / "cache", seconds=1, width=320, height=180,
                                   video_kbps=300)
    info, frames, duration = probe_source(clip)
    names = plan_ladder(ladder, info).rendition_names
    jobs = []
    for copy in range(2):
        out = tmp_path / f"f{copy}"
        out.mkdir()
        jobs.append(FileJob(pinned(ffmpeg_ladder_command(ffmpeg, clip, out, ladder, info), 1), out,
                            tmp_path / f"f{copy}.log"))
    run = await measure_jobs("ffmpeg", jobs, frames, names, duration, cpus=1)
    assert run.ok, run.failures
    assert run.parallel == 2 and run.cpus == 1
    assert run.fps == pytest.approx(2 * frames / run.wall_s)
    assert run.output_mb > 0 and run.cpu_s > 0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_ffmpeg_live_step_runs_and_reports_speed(tmp_path: Path, ffmpeg: str) -> None:
    _, live_ladder = bench_ladders("ultrafast")
    ladder = replace(live_ladder, rungs=(RungConfig("144p", 144, 200_000, profile="main"),))
    clip = await asyncio.to_thread(make_source_clip, ffmpeg, tmp_path, seconds=2, width=320, height=180,
                                   video_kbps=300)
    info, _frames, _duration = probe_source(clip)
    step = await ffmpeg_live_step(1, parse_args(["--duration", "4", "--warmup", "1.5", "--min-speed", "0.5"]), clip,
                                  ladder, info)
    assert step.failures == [] and step.held
    assert step.min_speed is not None and 0.5 <= step.min_speed < 1.5
    assert step.cpu_s > 0 and step.peak_rss_mb > 0
