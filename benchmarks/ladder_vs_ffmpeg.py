"""The engine's ladder transcode against the ffmpeg command line doing the
same job, in one run.

1. **File ladder.** The same 1080p30 clip (libx264 high, 6 Mbit/s, 2 s GOP,
   AAC; made once with ffmpeg and cached) goes through
   ``fanz-media transcode`` and through one ``ffmpeg`` process with a
   ``filter_complex`` split and bilinear scale (the engine's scaler), both
   writing VOD HLS in fMP4 with 2 s segments. The ladder is 1080p (re-encoded:
   no passthrough), 720p, 480p and 360p. The ffmpeg encoder options are not
   written by hand: they come from ``transcode.encoders.encoder_options`` and
   the same planned rungs the engine computes, so preset, profile, level,
   bitrate, maxrate, bufsize, GOP length, B-frames, closed GOP, forced IDRs on
   the 2 s grid and scene-cut off are the same on both sides, all from the
   engine's named ``file`` settings (B-frames, lookahead, x264 frame
   threads; the live part uses the ``live`` ones). It prints wall
   time, CPU time (utime+stime of the process and its children, from
   ``getrusage(RUSAGE_CHILDREN)``), source frames per second (frames / wall),
   peak resident memory, and the ratios engine/ffmpeg. Below 1 the engine is
   the faster or cheaper one. ``--cpus N`` runs both tools under
   ``taskset`` on the first N CPUs, ``--parallel M`` runs M copies of the
   job at once (frames/s is then their sum); given several values, every
   (N, M) pair is measured and gets its own ratios. ``--serial-rungs`` adds
   the engine with ``parallel_rungs = false`` (decode, scale and encode on
   one thread) as a third tool, ``engine-serial``.
2. **Live capacity.** How many concurrent live 720p30 streams with a 3-rung
   ladder (720p, 480p, 360p) the machine keeps in real time. For the engine,
   ``fanz-media serve --dev`` on loopback gets N RTMP publishers
   (``ffmpeg -re -stream_loop -1 -c copy -f flv``); a step holds when no
   publisher falls below ``--min-speed``, ``fanz_transcode_dropped_frames_total``
   of every stream stays within ``--max-drop-fraction`` of the frames sent,
   every rendition's newest HLS segment (its EXT-X-PROGRAM-DATE-TIME) stays
   within three target durations of now, and the transcoder's input queue
   ends the load no more than ``--max-lag`` seconds of media behind. For
   ffmpeg, N processes each run ``-re`` over the looped clip with the same
   split/scale/x264 ladder to live HLS; a step holds when every one keeps
   its speed at or above ``--min-speed``. A speed here is the media time an
   ffmpeg process (publisher or ladder) gained per wall second after the
   first ``--warmup`` seconds of media, read from its ``-progress`` output.
   N ramps 1, 2, 3, ... up to ``--max-streams`` and stops at the first step
   that does not hold. This part lives in :mod:`benchmarks.ladder_live`.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.ladder_vs_ffmpeg                  # 10 s clip, ramp to 6 streams, 20 s each
    .venv/bin/python -m benchmarks.ladder_vs_ffmpeg --seconds 4 --max-streams 2 --duration 10
    .venv/bin/python -m benchmarks.ladder_vs_ffmpeg --part file --repeats 3 --json
    .venv/bin/python -m benchmarks.ladder_vs_ffmpeg --part live --side engine
    .venv/bin/python -m benchmarks.ladder_vs_ffmpeg --part file --cpus 1 2 --parallel 1 2 --seconds 3

Caveats worth knowing when reading the figures: the engine runs PyAV's
bundled FFmpeg and libx264 while the CLI is the system's ffmpeg (``--ffmpeg``
picks another), so the x264 builds differ; ffmpeg cannot share one encoder
between output streams, so it encodes the AAC track once per variant where
the engine encodes it once (AAC is well under 1 % of this job); the engine's
wall time includes its interpreter start and encoder probe. The engine's live
output is plain HLS here (``low_latency = false``) to match ffmpeg's.
Everything listens on 127.0.0.1; every process started is ended on exit,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import (
    MAX_LINE,
    BenchmarkError,
    ParseError,
    ProcessSet,
    children_cpu_s,
    format_table,
    make_source_clip,
    parse_playlist,
    run_benchmark,
    sample_peak_rss,
    spawn_logged,
)
from engine.media import Codec
from transcode.encoders import SOFTWARE_H264, encoder_options
from transcode.ladder import (
    ENCODE_USES,
    EncodeUse,
    LadderConfig,
    PlannedRung,
    RungConfig,
    SourceInfo,
    builtin_ladders,
    plan_ladder,
)

HOST = "127.0.0.1"
POLL_S = 1.0
SERVER_START_S = 30.0
STARTUP_LIMIT_S = 15.0
AGE_LIMIT_TARGETS = 3.0
AAC_FRAME = 1024


# --- ladders and commands ---------------------------------------------------------

def bench_ladders(preset: str = "veryfast") -> tuple[LadderConfig, LadderConfig]:
    """The file ladder (1080p, 720p, 480p, 360p; no passthrough) and the live
    one (720p, 480p, 360p), both with the built-in rungs' bitrates, profiles
    and levels, VBR and a 2 s segment grid. B-frames and tune are left to
    the job's named settings: ``file`` for the file part (B-frames,
    lookahead, frame threads), ``live`` for the live part (zerolatency)."""
    rungs = builtin_ladders()["transcode-only"].rungs
    file_ladder = LadderConfig("bench4", rungs, passthrough=False, x264_preset=preset, rate_control="vbr",
                               segment_duration=Fraction(2))
    live_ladder = replace(file_ladder, name="bench3", rungs=tuple(r for r in rungs if r.height <= 720))
    return file_ladder, live_ladder


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return '""'  # how the config spells "not set" (TOML has no null)
    if isinstance(value, (str, Fraction)):
        text = str(value)
        if any(c in text for c in '"\\\n') or len(text) > 200:
            raise BenchmarkError(f"refusing to write {text[:40]!r} into TOML")
        return f'"{text}"'
    raise BenchmarkError(f"no TOML form for {value!r}")


def _rung_toml(rung: RungConfig) -> str:
    # An empty string is how the config spells "no cap" for the frame rate.
    cap = "" if rung.max_frame_rate is None else rung.max_frame_rate
    fields: dict[str, object] = {"name": rung.name, "height": rung.height, "bitrate": rung.bitrate,
                                 "profile": rung.profile, "max_frame_rate": cap}
    optional = {"level": rung.level, "max_bitrate": rung.max_bitrate, "buffer_size": rung.buffer_size}
    fields |= {k: v for k, v in optional.items() if v is not None}
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in fields.items()) + "}"


def ladder_toml(ladder: LadderConfig) -> str:
    """``[transcode.ladders.NAME]`` for ``ladder``: every x264-relevant field
    spelled out, so the engine reads back exactly the ladder the ffmpeg
    command was built from (the tests check the round trip)."""
    fields: dict[str, object] = {
        "passthrough": ladder.passthrough, "x264_preset": ladder.x264_preset, "rate_control": ladder.rate_control,
        "x264_tune": ladder.x264_tune, "bframes": ladder.bframes, "encoder_threads": ladder.encoder_threads,
        "parallel_rungs": ladder.parallel_rungs,
        "segment_duration": ladder.segment_duration, "max_gop_duration": ladder.max_gop_duration,
        "audio_bitrate": ladder.audio_bitrate, "audio_sample_rate": ladder.audio_sample_rate,
        "audio_channels": ladder.audio_channels,
    }
    lines = [f"[transcode.ladders.{ladder.name}]", "rungs = ["]
    lines += [f"  {_rung_toml(r)}," for r in ladder.rungs]
    lines.append("]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def engine_config_toml(ladders: Sequence[LadderConfig], live_ladder: str | None) -> str:
    """The engine's config for both parts: the ladders, and for ``serve`` a
    transcoder on ``live_ladder`` with libx264, plain HLS and no control API."""
    head = ['[server]', 'log_level = "warning"', "", "[http]", "api = false",
            "metrics_stream_labels = true", "",
            "[hls]", 'segment_format = "fmp4"', "low_latency = false", "window_segments = 6", "", "[transcode]"]
    if live_ladder is not None:
        head += ["enabled = true", f"ladder = {_toml_value(live_ladder)}"]
    else:
        head.append("enabled = false")
    head += ['encoder = "libx264"', ""]
    return "\n".join(head) + "\n" + "\n".join(ladder_toml(ladder) for ladder in ladders)


def x264_stream_args(ladder: LadderConfig, rung: PlannedRung, index: int, use: EncodeUse) -> list[str]:
    """ffmpeg options for output video stream ``index``: the engine's own
    option set (``encoder_options``) plus the codec-context fields that
    ``open_encoder`` sets (bitrate, GOP cap, B-frames, closed GOP, global
    header, thread type and count), all for ``use`` (file or live)."""
    spec = f":v:{index}"
    rate = rung.frame_rate or Fraction(30)
    args = [
        f"-b{spec}", str(rung.config.bitrate),
        f"-g{spec}", str(max(1, int(rate * ladder.max_gop_duration))),
        f"-bf{spec}", str(ladder.bframes_for(use)),
        f"-flags{spec}", "+cgop+global_header",
        f"-sc_threshold{spec}", "0",
        f"-thread_type{spec}", use.thread_type.lower(),
    ]  # fmt: skip
    if ladder.encoder_threads:
        args += [f"-threads{spec}", str(ladder.encoder_threads)]
    for key, value in encoder_options(SOFTWARE_H264, ladder, rung, use).items():
        args += [f"-{key}{spec}", value]
    return args


def ffmpeg_ladder_command(ffmpeg: str, source: Path, outdir: Path, ladder: LadderConfig, info: SourceInfo, *,
                          live_duration_s: float | None = None) -> list[str]:
    """One ffmpeg process doing ``ladder`` on ``source`` into HLS under
    ``outdir`` (``index.m3u8`` and ``RUNG/media.m3u8``). With
    ``live_duration_s`` it reads the looped source in real time, follows the
    source's keyframes (as the live engine does) and writes a live playlist;
    otherwise it runs flat out with IDRs on the ladder's segment grid (as
    ``fanz-media transcode`` does) and writes VOD."""
    plan = plan_ladder(ladder, info)
    count = len(plan.rungs)
    chains = [f"[0:v]split={count}" + "".join(f"[s{i}]" for i in range(count))]
    for i, rung in enumerate(plan.rungs):
        fps = f"fps={rung.frame_rate_cap}," if rung.frame_rate_cap is not None else ""
        chains.append(f"[s{i}]{fps}scale={rung.width}:{rung.height}:flags=bilinear[v{i}]")
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-y"]
    if live_duration_s is not None:
        cmd += ["-progress", "pipe:1", "-re", "-stream_loop", "-1"]
    cmd += ["-i", str(source)]
    if live_duration_s is not None:
        cmd += ["-t", f"{live_duration_s:g}"]
    cmd += ["-filter_complex", ";".join(chains)]
    for i in range(count):
        cmd += ["-map", f"[v{i}]", "-map", "0:a:0"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    use = ENCODE_USES["live" if live_duration_s is not None else "file"]
    for i, rung in enumerate(plan.rungs):
        cmd += x264_stream_args(ladder, rung, i, use)
    grid = "source" if live_duration_s is not None else f"expr:gte(t,n_forced*{float(ladder.segment_duration):g})"
    cmd += ["-force_key_frames", grid]
    cmd += ["-c:a", "aac", "-b:a", str(ladder.audio_bitrate), "-ar", str(ladder.audio_sample_rate),
            "-ac", str(ladder.audio_channels)]
    cmd += ["-f", "hls", "-hls_time", f"{float(ladder.segment_duration):g}", "-hls_segment_type", "fmp4",
            "-master_pl_name", "index.m3u8",
            "-var_stream_map", " ".join(f"v:{i},a:{i},name:{r.name}" for i, r in enumerate(plan.rungs)),
            "-hls_segment_filename", str(outdir / "%v" / "seg_%d.m4s")]
    if live_duration_s is not None:
        cmd += ["-hls_list_size", "6", "-hls_flags", "delete_segments+independent_segments+program_date_time"]
    else:
        cmd += ["-hls_playlist_type", "vod"]
    return [*cmd, str(outdir / "%v" / "media.m3u8")]


def engine_executable() -> str:
    beside = Path(sys.executable).with_name("fanz-media")
    exe = str(beside) if beside.exists() else shutil.which("fanz-media")
    if exe is None:
        raise BenchmarkError("fanz-media is not installed in this environment")
    return exe


def engine_transcode_command(exe: str, source: Path, outdir: Path, ladder: str, config: Path) -> list[str]:
    return [exe, "transcode", str(source), str(outdir), "--ladder", ladder, "--encoder", SOFTWARE_H264,
            "--config", str(config), "--quiet"]


def probe_source(path: Path) -> tuple[SourceInfo, int, float]:
    """The source's video as the engine plans it, its frame count and duration."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        rate = video.average_rate or video.guessed_rate
        info = SourceInfo(Codec.H264, video.codec_context.width, video.codec_context.height,
                          Fraction(rate) if rate else None, video.codec_context.bit_rate or video.bit_rate or None)
        frames = video.frames
        duration = float(container.duration or 0) / av.time_base
    if not frames:
        frames = round(duration * float(info.frame_rate or 30))
    return info, frames, duration


# --- playlists and metrics ---------------------------------------------------------

@dataclass(frozen=True)
class SegmentEntry:
    """One media segment: its EXTINF duration and, when the playlist carries
    EXT-X-PROGRAM-DATE-TIME, its start as epoch seconds."""

    duration: float
    start: float | None


def parse_pdt(text: str) -> float:
    """An EXT-X-PROGRAM-DATE-TIME value (RFC 8216 4.3.2.6) as epoch seconds."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ParseError(f"bad program date time {text[:60]!r}") from exc
    if moment.tzinfo is None:
        raise ParseError(f"program date time {text[:60]!r} has no time zone")
    return moment.timestamp()


def parse_segments(text: str) -> list[SegmentEntry]:
    """The segments of a media playlist in order. A date applies to the next
    segment; later ones follow on by their durations (4.3.2.6)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        raise ParseError("playlist does not start with #EXTM3U")
    segments: list[SegmentEntry] = []
    duration: float | None = None
    pending_date: float | None = None
    for raw in lines[1:]:
        line = raw.strip()
        if len(line) > MAX_LINE:
            raise ParseError("playlist line too long")
        if line.startswith("#EXTINF:"):  # 4.3.2.1
            try:
                duration = float(line[8:].split(",", 1)[0])
            except ValueError as exc:
                raise ParseError(f"bad duration in {line[:80]!r}") from exc
            if not (0 <= duration < 3600):
                raise ParseError(f"implausible segment duration {duration}")
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pending_date = parse_pdt(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-DISCONTINUITY") and not line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE"):
            pass  # the date after a discontinuity is written again; nothing to carry
        elif line and not line.startswith("#"):
            if duration is None:
                raise ParseError(f"segment {line[:80]!r} has no #EXTINF")
            start = pending_date
            if start is None and segments and segments[-1].start is not None:
                start = segments[-1].start + segments[-1].duration
            segments.append(SegmentEntry(duration, start))
            duration = pending_date = None
    return segments


@dataclass(frozen=True)
class TranscodeCounters:
    """One stream's live transcode counters from the engine's /metrics."""

    dropped: float = 0.0
    queue_depth: float = 0.0


def parse_transcode_metrics(text: str) -> dict[str, TranscodeCounters]:
    """``fanz_transcode_dropped_frames_total`` and ``fanz_transcode_queue_depth``
    per stream, from Prometheus text exposition."""
    dropped: dict[str, float] = {}
    depth: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                stream = sample.labels.get("stream")
                if stream is None:
                    continue
                if sample.name == "fanz_transcode_dropped_frames_total":
                    dropped[stream] = sample.value
                elif sample.name == "fanz_transcode_queue_depth":
                    depth[stream] = sample.value
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ParseError(f"unreadable metrics: {exc}") from exc
    return {s: TranscodeCounters(dropped.get(s, 0.0), depth.get(s, 0.0)) for s in dropped.keys() | depth.keys()}


def vod_output_failures(outdir: Path, renditions: Sequence[str], duration_s: float) -> list[str]:
    """Why an output folder is not the full ladder (empty when it is): every
    rendition's playlist must be listed, ended and as long as the source."""
    failures: list[str] = []
    index = outdir / "index.m3u8"
    if not index.exists():
        return [f"{index} is missing"]
    listed = {v.split("/", 1)[0] for v in parse_playlist(index.read_text()).variants}
    for name in renditions:
        playlist = outdir / name / "media.m3u8"
        if name not in listed or not playlist.exists():
            failures.append(f"rendition {name} is missing")
            continue
        text = playlist.read_text()
        total = sum(s.duration for s in parse_segments(text))
        if not parse_playlist(text).ended or abs(total - duration_s) > 0.5:
            failures.append(f"rendition {name}: {total:.2f} s of {duration_s:.2f} s, or not ended")
    return failures


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())




# --- part 1: the file ladder -----------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """Command-line settings of one run."""

    parts: tuple[str, ...]
    sides: tuple[str, ...]
    seconds: int
    repeats: int
    max_streams: int
    duration_s: float
    min_speed: float
    warmup_s: float
    max_drop_fraction: float
    max_lag_s: float
    preset: str
    ffmpeg: str
    cache_dir: Path
    as_json: bool
    cpus: tuple[int | None, ...] = (None,)
    parallel: tuple[int, ...] = (1,)
    serial_rungs: bool = False


@dataclass
class FileRun:
    """One tool transcoding the clip along the file ladder, ``parallel``
    copies at once, on ``cpus`` cores (``None``: no pinning). ``fps`` is
    the aggregate: source frames of every copy per wall second."""

    tool: str
    wall_s: float
    cpu_s: float
    fps: float
    core_pct: float
    peak_rss_mb: float
    output_mb: float
    ok: bool
    failures: list[str] = field(default_factory=list)
    cpus: int | None = None
    parallel: int = 1


@dataclass(frozen=True)
class FileJob:
    """One copy of the job: its command, output folder and log."""

    cmd: list[str]
    outdir: Path
    log: Path


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def pinned(cmd: list[str], cpus: int | None, taskset: str = "taskset") -> list[str]:
    """``cmd`` run under ``taskset`` on the first ``cpus`` allowed CPUs
    (unchanged for ``None``). Both tools' thread pools size themselves from
    the affinity mask (x264 and libavcodec read it), so each sees N cores."""
    if cpus is None:
        return cmd
    allowed = allowed_cpus()
    if not 1 <= cpus <= len(allowed):
        raise BenchmarkError(f"--cpus {cpus}: this process may use {len(allowed)} CPUs")
    return [taskset, "-c", ",".join(str(c) for c in allowed[:cpus]), *cmd]


def _check_file_run(rc: int, log: Path, outdir: Path, renditions: Sequence[str],
                    duration_s: float) -> tuple[list[str], int]:
    if rc != 0:
        return [f"exited with {rc}: {log.read_text(errors='replace').strip()[-400:]}"], 0
    return vod_output_failures(outdir, renditions, duration_s), tree_bytes(outdir)


async def measure_jobs(tool: str, jobs: Sequence[FileJob], frames: int, renditions: Sequence[str],
                       duration_s: float, cpus: int | None = None) -> FileRun:
    """Starts every job at once, waits for all of them, measures the set
    (wall from the first start to the last end, CPU of all, peak of the
    summed resident memory), then checks every output."""
    async with ProcessSet() as procs:
        cpu_before = children_cpu_s()
        started = time.perf_counter()
        running = [await spawn_logged(procs, job.cmd, job.log, log_stdout=False) for job in jobs]
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peak_rss([p.pid for p in running], stop))
        try:
            codes = [await p.wait() for p in running]
        finally:
            stop.set()
            peak = await sampler
        wall = time.perf_counter() - started
        cpu = children_cpu_s() - cpu_before
    failures: list[str] = []
    size = 0
    for job, rc in zip(jobs, codes, strict=True):
        found, written = await asyncio.to_thread(_check_file_run, rc, job.log, job.outdir, renditions, duration_s)
        failures += found if len(jobs) == 1 else [f"{job.outdir.name}: {f}" for f in found]
        size += written
    count = len(jobs)
    return FileRun(tool, wall, cpu, count * frames / wall, 100 * cpu / wall, peak / 2**20, size / 2**20,
                   not failures, failures, cpus, count)


async def measure_file_run(tool: str, cmd: list[str], outdir: Path, log: Path, frames: int,
                           renditions: Sequence[str], duration_s: float) -> FileRun:
    """Runs ``cmd`` alone to the end and measures it, then checks its output."""
    return await measure_jobs(tool, [FileJob(cmd, outdir, log)], frames, renditions, duration_s)


SERIAL_ENGINE = "engine-serial"
"""The engine with ``parallel_rungs = false`` (``--serial-rungs``): decode,
scale and encode one after another on one thread, for comparison."""


def file_ratios(best: dict[str, FileRun], engine_tool: str = "engine") -> dict[str, float]:
    """``engine_tool`` / ffmpeg for wall time, CPU time and aggregate frames
    per second (empty unless both tools have a good run)."""
    engine, ffmpeg = best.get(engine_tool), best.get("ffmpeg")
    if engine is None or ffmpeg is None:
        return {}
    return {"wall": engine.wall_s / ffmpeg.wall_s, "cpu": engine.cpu_s / ffmpeg.cpu_s,
            "fps": engine.fps / ffmpeg.fps}


def setup_key(cpus: int | None, parallel: int) -> str:
    return f"cpus={'all' if cpus is None else cpus} parallel={parallel}"


async def file_part(settings: Settings, file_ladder: LadderConfig) -> dict[str, Any]:
    """Both tools, alternating, ``settings.repeats`` times for every
    (``--cpus``, ``--parallel``) pair; the fastest run of each counts."""
    clip = await asyncio.to_thread(make_source_clip, settings.ffmpeg, settings.cache_dir, seconds=settings.seconds)
    info, frames, duration = await asyncio.to_thread(probe_source, clip)
    renditions = plan_ladder(file_ladder, info).rendition_names
    runs: list[FileRun] = []
    setups = [(cpus, parallel) for cpus in settings.cpus for parallel in settings.parallel]
    serial_ladder = replace(file_ladder, name=f"{file_ladder.name}-serial", parallel_rungs=False)
    tools = list(settings.sides)
    if settings.serial_rungs and "engine" in tools:
        tools.insert(tools.index("engine") + 1, SERIAL_ENGINE)
    with tempfile.TemporaryDirectory(prefix="fanz-ladder-file-") as tmp:
        work = Path(tmp)
        config = work / "engine.toml"
        config.write_text(engine_config_toml([file_ladder, serial_ladder], None))
        exe = engine_executable() if "engine" in settings.sides else ""
        for cpus, parallel in setups:
            for repeat in range(settings.repeats):
                for tool in tools:
                    jobs = []
                    for copy in range(parallel):
                        outdir = work / f"{tool}-{repeat}-{copy}"
                        if tool == "engine":
                            cmd = engine_transcode_command(exe, clip, outdir, file_ladder.name, config)
                        elif tool == SERIAL_ENGINE:
                            cmd = engine_transcode_command(exe, clip, outdir, serial_ladder.name, config)
                        else:
                            outdir.mkdir()
                            cmd = ffmpeg_ladder_command(settings.ffmpeg, clip, outdir, file_ladder, info)
                        jobs.append(FileJob(pinned(cmd, cpus), outdir, work / f"{tool}-{repeat}-{copy}.log"))
                    if not settings.as_json:
                        print(f"file ladder: {tool}, {setup_key(cpus, parallel)}, run {repeat + 1} of "
                              f"{settings.repeats} ...", file=sys.stderr, flush=True)
                    run = await measure_jobs(tool, jobs, frames, renditions, duration, cpus)
                    for failure in run.failures:
                        print(f"  {tool}: {failure}", file=sys.stderr, flush=True)
                    runs.append(run)
                    for job in jobs:
                        shutil.rmtree(job.outdir, ignore_errors=True)
    by_setup: dict[str, dict[str, FileRun]] = {}
    for run in runs:
        best = by_setup.setdefault(setup_key(run.cpus, run.parallel), {})
        if run.ok and (run.tool not in best or run.wall_s < best[run.tool].wall_s):
            best[run.tool] = run
    first = by_setup.get(setup_key(*setups[0]), {})
    return {
        "source": str(clip), "source_frames": frames, "source_seconds": duration,
        "source_size": f"{info.width}x{info.height}", "ladder": list(renditions),
        "runs": [asdict(r) for r in runs],
        "setups": {key: {"best": {k: asdict(v) for k, v in best.items()},
                         "ratio_engine_over_ffmpeg": file_ratios(best),
                         "ratio_serial_engine_over_ffmpeg": file_ratios(best, SERIAL_ENGINE)}
                   for key, best in by_setup.items()},
        # The first setup, as before --cpus and --parallel existed.
        "best": {k: asdict(v) for k, v in first.items()},
        "ratio_engine_over_ffmpeg": file_ratios(first),
    }


# --- command line ------------------------------------------------------------------------

FILE_COLUMNS = (
    ("tool", "tool"), ("cpus", "cpus"), ("parallel", "parallel"), ("wall_s", "wall s"), ("cpu_s", "cpu s"),
    ("fps", "frames/s"), ("core_pct", "% core"),
    ("peak_rss_mb", "peak RSS MB"), ("output_mb", "output MB"), ("ok", "ok"),
)
LIVE_COLUMNS = (
    ("side", "side"), ("streams", "N"), ("cpu_s_per_stream_min", "cpu s/stream-min"), ("core_pct", "% core"),
    ("peak_rss_mb", "peak RSS MB"), ("min_speed", "min speed"), ("max_dropped", "dropped"),
    ("max_segment_age_s", "max seg age s"), ("end_lag_s", "end lag s"), ("held", "real time"),
)


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    file = result.get("file")
    if file:
        lines.append(f"file ladder {'/'.join(file['ladder'])} from {file['source_size']}, "
                     f"{file['source_frames']} frames ({file['source_seconds']:.1f} s) per copy; "
                     "fastest run of each (frames/s: all copies together):")
        rows = [run for setup in file["setups"].values() for run in setup["best"].values()]
        lines.append(format_table(rows, FILE_COLUMNS))
        for key, setup in file["setups"].items():
            ratios = setup["ratio_engine_over_ffmpeg"]
            if not ratios:
                continue
            verdict = "engine faster" if ratios["wall"] < 1 else "ffmpeg faster" if ratios["wall"] > 1 else "even"
            lines.append(f"{key}: engine / ffmpeg wall {ratios['wall']:.2f} ({verdict}), "
                         f"cpu {ratios['cpu']:.2f} (lower is better), frames/s {ratios['fps']:.2f}")
            serial = setup.get("ratio_serial_engine_over_ffmpeg")
            if serial:
                lines.append(f"{key}: engine with serial rungs / ffmpeg wall {serial['wall']:.2f}, "
                             f"cpu {serial['cpu']:.2f}, frames/s {serial['fps']:.2f}")
    live = result.get("live")
    if live:
        if lines:
            lines.append("")
        lines.append(f"live ladder {'/'.join(live['ladder'])} from 720p30, one step per N:")
        lines.append(format_table(live["steps"], LIVE_COLUMNS))
        for side, best in live["max_streams_held"].items():
            lines.append(f"most live streams kept in real time by {side}: {best}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--part", choices=("file", "live", "both"), default="both")
    parser.add_argument("--side", choices=("engine", "ffmpeg", "both"), default="both")
    parser.add_argument("--seconds", type=int, default=10, help="length of the 1080p file clip (default 10)")
    parser.add_argument("--repeats", type=int, default=1, help="file runs per tool; the fastest counts (default 1)")
    parser.add_argument("--max-streams", type=int, default=6, help="last live ramp step (default 6)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each live step (default 20)")
    parser.add_argument("--min-speed", type=float, default=0.97, help="lowest ffmpeg speed that is real time")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of media before speed is judged")
    parser.add_argument("--max-drop-fraction", type=float, default=0.0,
                        help="engine drops allowed, as a fraction of the frames sent (default 0)")
    parser.add_argument("--max-lag", type=float, default=1.0,
                        help="seconds of media the engine's transcode queue may hold at the end (default 1)")
    parser.add_argument("--x264-preset", default="veryfast")
    parser.add_argument("--ffmpeg", default=shutil.which("ffmpeg") or "ffmpeg")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "fanz-benchmark",
                        help="where the source clips are kept between runs")
    parser.add_argument("--cpus", type=int, nargs="+", default=None, metavar="N",
                        help="file part: run both tools under taskset on the first N CPUs; several N run in turn "
                             "(default: no pinning)")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1], metavar="M",
                        help="file part: M copies of the job at once (frames/s is their sum); several M run in turn")
    parser.add_argument("--serial-rungs", action="store_true",
                        help="file part: also run the engine with parallel_rungs = false (one thread for decode, "
                             "scale and encode) as the tool engine-serial")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if min(args.parallel) < 1 or (args.cpus is not None and min(args.cpus) < 1):
        parser.error("--cpus and --parallel must be at least 1")
    if args.cpus is not None and max(args.cpus) > len(allowed_cpus()):
        parser.error(f"--cpus: this machine lets the benchmark use {len(allowed_cpus())} CPUs")
    if args.cpus is not None and shutil.which("taskset") is None:
        parser.error("--cpus needs taskset (util-linux)")
    if min(args.seconds, args.repeats, args.max_streams) < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--seconds, --repeats, --max-streams and --duration must be positive")
    if args.max_drop_fraction < 0 or args.max_lag < 0 or not 0 < args.min_speed <= 2:
        parser.error("--max-drop-fraction and --max-lag must be >= 0, --min-speed in (0, 2]")
    return Settings(
        parts=("file", "live") if args.part == "both" else (args.part,),
        sides=("engine", "ffmpeg") if args.side == "both" else (args.side,),
        seconds=args.seconds, repeats=args.repeats, max_streams=args.max_streams, duration_s=args.duration,
        min_speed=args.min_speed, warmup_s=args.warmup, max_drop_fraction=args.max_drop_fraction,
        max_lag_s=args.max_lag, preset=args.x264_preset, ffmpeg=args.ffmpeg, cache_dir=args.cache_dir,
        as_json=args.json, cpus=(None,) if args.cpus is None else tuple(dict.fromkeys(args.cpus)),
        parallel=tuple(dict.fromkeys(args.parallel)), serial_rungs=args.serial_rungs,
    )


async def run(settings: Settings) -> dict[str, Any]:
    # The live part builds on this module's commands and parsers, so it is
    # imported here rather than at the top, where the import would be circular.
    from benchmarks.ladder_live import live_part

    file_ladder, live_ladder = bench_ladders(settings.preset)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "ffmpeg": settings.ffmpeg, "x264_preset": settings.preset}
    if "file" in settings.parts:
        result["file"] = await file_part(settings, file_ladder)
    if "live" in settings.parts:
        result["live"] = await live_part(settings, live_ladder)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    return run_benchmark("ladder_vs_ffmpeg", functools.partial(run, settings), render, as_json=settings.as_json)


if __name__ == "__main__":
    raise SystemExit(main())
