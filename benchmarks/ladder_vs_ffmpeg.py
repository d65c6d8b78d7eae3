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
   the 2 s grid and scene-cut off are the same on both sides. It prints wall
   time, CPU time (utime+stime of the process and its children, from
   ``getrusage(RUSAGE_CHILDREN)``), source frames per second (frames / wall),
   peak resident memory, and the ratios engine/ffmpeg. Below 1 the engine is
   the faster or cheaper one.
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
   that does not hold.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.ladder_vs_ffmpeg                  # 10 s clip, ramp to 6 streams, 20 s each
    .venv/bin/python -m benchmarks.ladder_vs_ffmpeg --seconds 4 --max-streams 2 --duration 10
    .venv/bin/python -m benchmarks.ladder_vs_ffmpeg --part file --repeats 3 --json
    .venv/bin/python -m benchmarks.ladder_vs_ffmpeg --part live --side engine

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
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import (
    MAX_LINE,
    BenchmarkError,
    ParseError,
    ProcessSet,
    Progress,
    ProgressParser,
    format_table,
    free_port,
    make_source_clip,
    parse_playlist,
    publisher_command,
    to_json,
    tree_usage,
    wait_for_port,
)
from engine.media import Codec
from transcode.encoders import SOFTWARE_H264, encoder_options
from transcode.ladder import LadderConfig, PlannedRung, RungConfig, SourceInfo, builtin_ladders, plan_ladder

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
    and levels, VBR, no B-frames and a 2 s segment grid."""
    rungs = builtin_ladders()["transcode-only"].rungs
    file_ladder = LadderConfig("bench4", rungs, passthrough=False, x264_preset=preset, rate_control="vbr",
                               bframes=0, segment_duration=Fraction(2))
    live_ladder = replace(file_ladder, name="bench3", rungs=tuple(r for r in rungs if r.height <= 720))
    return file_ladder, live_ladder


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
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
        "bframes": ladder.bframes, "encoder_threads": ladder.encoder_threads,
        "segment_duration": ladder.segment_duration, "max_gop_duration": ladder.max_gop_duration,
        "audio_bitrate": ladder.audio_bitrate, "audio_sample_rate": ladder.audio_sample_rate,
        "audio_channels": ladder.audio_channels,
    }
    # Written even when unset: an empty string is "no tune", whatever the default.
    fields["x264_tune"] = "" if ladder.x264_tune is None else ladder.x264_tune
    lines = [f"[transcode.ladders.{ladder.name}]", "rungs = ["]
    lines += [f"  {_rung_toml(r)}," for r in ladder.rungs]
    lines.append("]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def engine_config_toml(ladders: Sequence[LadderConfig], live_ladder: str | None) -> str:
    """The engine's config for both parts: the ladders, and for ``serve`` a
    transcoder on ``live_ladder`` with libx264, plain HLS and no control API."""
    head = ['[server]', 'log_level = "warning"', "", "[http]", "api = false", "",
            "[hls]", 'segment_format = "fmp4"', "low_latency = false", "window_segments = 6", "", "[transcode]"]
    if live_ladder is not None:
        head += ["enabled = true", f"ladder = {_toml_value(live_ladder)}"]
    else:
        head.append("enabled = false")
    head += ['encoder = "libx264"', ""]
    return "\n".join(head) + "\n" + "\n".join(ladder_toml(ladder) for ladder in ladders)


def x264_stream_args(ladder: LadderConfig, rung: PlannedRung, index: int) -> list[str]:
    """ffmpeg options for output video stream ``index``: the engine's own
    option set (``encoder_options``) plus the codec-context fields that
    ``open_encoder`` sets (bitrate, GOP cap, B-frames, closed GOP, global
    header, threads)."""
    spec = f":v:{index}"
    rate = rung.frame_rate or Fraction(30)
    args = [
        f"-b{spec}", str(rung.config.bitrate),
        f"-g{spec}", str(max(1, int(rate * ladder.max_gop_duration))),
        f"-bf{spec}", str(ladder.bframes),
        f"-flags{spec}", "+cgop+global_header",
        f"-sc_threshold{spec}", "0",
    ]  # fmt: skip
    if ladder.encoder_threads:
        args += [f"-threads{spec}", str(ladder.encoder_threads)]
    for key, value in encoder_options(SOFTWARE_H264, ladder, rung).items():
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
    for i, rung in enumerate(plan.rungs):
        cmd += x264_stream_args(ladder, rung, i)
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


# --- processes ----------------------------------------------------------------------

def children_cpu_s() -> float:
    """CPU seconds of every child this process has reaped so far (and of
    their reaped descendants): the difference around a run is its cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def sample_peak_rss(pids: Sequence[int], stop: asyncio.Event, interval_s: float = 0.25) -> int:
    """The largest summed resident memory of the trees under ``pids`` until ``stop``."""
    peak = 0
    while not stop.is_set():
        usages = await asyncio.to_thread(lambda: [tree_usage(pid) for pid in pids])
        peak = max(peak, sum(u.rss_bytes for u in usages))
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
    return peak


@dataclass
class ProgressOutcome:
    """What one ffmpeg process reported through ``-progress`` before it exited.

    ffmpeg's own ``speed=`` is an average since the process started, so its
    start-up (opening the input, the RTMP handshake, x264's first frames)
    weighs on it for the whole run. :attr:`speed` is instead the media time
    gained over the wall time between the first block past the warm-up and
    the last one: the rate the process kept once running.
    """

    returncode: int | None = None
    last_speed: float | None = None
    window_start: tuple[float, int] | None = None
    window_end: tuple[float, int] | None = None
    stderr_tail: str = ""

    def observe(self, block: Progress, now: float, warmup_s: float) -> None:
        """Records one ``-progress`` block received at ``now`` (seconds)."""
        if block.speed is not None:
            self.last_speed = block.speed
        if block.ended or block.out_time_us is None or block.out_time_us < warmup_s * 1e6:
            return
        if self.window_start is None:
            self.window_start = (now, block.out_time_us)
        self.window_end = (now, block.out_time_us)

    @property
    def speed(self) -> float | None:
        """Speed over the judged window; ffmpeg's own figure when the window
        is under a second long (a run shorter than its warm-up)."""
        if self.window_start is not None and self.window_end is not None:
            wall = self.window_end[0] - self.window_start[0]
            if wall >= 1.0:
                return (self.window_end[1] - self.window_start[1]) / 1e6 / wall
        return self.last_speed


async def follow_progress(proc: asyncio.subprocess.Process, warmup_s: float,
                          ended: asyncio.Event | None = None) -> ProgressOutcome:
    """Reads ``proc``'s ``-progress`` blocks until it exits; the first
    ``warmup_s`` seconds of media are not judged. Sets ``ended``, if given,
    when the process is done."""
    assert proc.stdout is not None and proc.stderr is not None
    loop = asyncio.get_running_loop()
    outcome = ProgressOutcome()
    parser = ProgressParser()

    async def drain_stderr() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            outcome.stderr_tail = (outcome.stderr_tail + line.decode(errors="replace"))[-2000:]

    stderr_task = asyncio.create_task(drain_stderr())
    try:
        async for raw in proc.stdout:
            block = parser.feed_line(raw.decode(errors="replace"))
            if block is not None:
                outcome.observe(block, loop.time(), warmup_s)
        outcome.returncode = await proc.wait()
    finally:
        await stderr_task
        if ended is not None:
            ended.set()
    return outcome


def _log_fd(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


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


@dataclass
class FileRun:
    """One tool transcoding the clip along the file ladder once."""

    tool: str
    wall_s: float
    cpu_s: float
    fps: float
    core_pct: float
    peak_rss_mb: float
    output_mb: float
    ok: bool
    failures: list[str] = field(default_factory=list)


def _check_file_run(rc: int, log: Path, outdir: Path, renditions: Sequence[str],
                    duration_s: float) -> tuple[list[str], int]:
    if rc != 0:
        return [f"exited with {rc}: {log.read_text(errors='replace').strip()[-400:]}"], 0
    return vod_output_failures(outdir, renditions, duration_s), tree_bytes(outdir)


async def measure_file_run(tool: str, cmd: list[str], outdir: Path, log: Path, frames: int,
                           renditions: Sequence[str], duration_s: float) -> FileRun:
    """Runs ``cmd`` alone to the end and measures it, then checks its output."""
    async with ProcessSet() as procs:
        fd = _log_fd(log)
        cpu_before = children_cpu_s()
        started = time.perf_counter()
        try:
            proc = await procs.spawn(cmd, stdout=asyncio.subprocess.DEVNULL, stderr=fd)
        finally:
            os.close(fd)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peak_rss([proc.pid], stop))
        try:
            rc = await proc.wait()
        finally:
            stop.set()
            peak = await sampler
        wall = time.perf_counter() - started
        cpu = children_cpu_s() - cpu_before
    failures, size = await asyncio.to_thread(_check_file_run, rc, log, outdir, renditions, duration_s)
    return FileRun(tool, wall, cpu, frames / wall, 100 * cpu / wall, peak / 2**20, size / 2**20, not failures,
                   failures)


async def file_part(settings: Settings, file_ladder: LadderConfig) -> dict[str, Any]:
    """Both tools, alternating, ``settings.repeats`` times; the fastest run
    of each counts."""
    clip = await asyncio.to_thread(make_source_clip, settings.ffmpeg, settings.cache_dir, seconds=settings.seconds)
    info, frames, duration = await asyncio.to_thread(probe_source, clip)
    renditions = plan_ladder(file_ladder, info).rendition_names
    runs: list[FileRun] = []
    with tempfile.TemporaryDirectory(prefix="fanz-ladder-file-") as tmp:
        work = Path(tmp)
        config = work / "engine.toml"
        config.write_text(engine_config_toml([file_ladder], None))
        exe = engine_executable() if "engine" in settings.sides else ""
        for repeat in range(settings.repeats):
            for tool in settings.sides:
                outdir = work / f"{tool}-{repeat}"
                if tool == "engine":
                    cmd = engine_transcode_command(exe, clip, outdir, file_ladder.name, config)
                else:
                    outdir.mkdir()
                    cmd = ffmpeg_ladder_command(settings.ffmpeg, clip, outdir, file_ladder, info)
                if not settings.as_json:
                    print(f"file ladder: {tool}, run {repeat + 1} of {settings.repeats} ...", file=sys.stderr,
                          flush=True)
                run = await measure_file_run(tool, cmd, outdir, work / f"{tool}-{repeat}.log", frames,
                                             renditions, duration)
                for failure in run.failures:
                    print(f"  {tool}: {failure}", file=sys.stderr, flush=True)
                runs.append(run)
                shutil.rmtree(outdir, ignore_errors=True)
    best: dict[str, FileRun] = {}
    for run in runs:
        if run.ok and (run.tool not in best or run.wall_s < best[run.tool].wall_s):
            best[run.tool] = run
    ratios: dict[str, float] = {}
    if "engine" in best and "ffmpeg" in best:
        ratios = {"wall": best["engine"].wall_s / best["ffmpeg"].wall_s,
                  "cpu": best["engine"].cpu_s / best["ffmpeg"].cpu_s}
    return {
        "source": str(clip), "source_frames": frames, "source_seconds": duration,
        "source_size": f"{info.width}x{info.height}", "ladder": list(renditions),
        "runs": [asdict(r) for r in runs], "best": {k: asdict(v) for k, v in best.items()},
        "ratio_engine_over_ffmpeg": ratios,
    }


# --- part 2: live capacity ---------------------------------------------------------------

@dataclass
class LiveStep:
    """N live streams through one side for one duration, and the verdict."""

    side: str
    streams: int
    duration_s: float
    cpu_s: float
    cpu_s_per_stream_min: float
    core_pct: float
    peak_rss_mb: float
    min_speed: float | None
    max_dropped: float | None = None
    max_segment_age_s: float | None = None
    end_lag_s: float | None = None
    held: bool = False
    failures: list[str] = field(default_factory=list)


@dataclass
class EngineWatch:
    """What polling the engine's /metrics and rendition playlists saw."""

    dropped: dict[str, float] = field(default_factory=dict)
    queue: dict[str, list[float]] = field(default_factory=dict)
    first_segment_s: dict[str, float] = field(default_factory=dict)
    max_age_s: dict[str, float] = field(default_factory=dict)
    target_s: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def observe_metrics(self, counters: dict[str, TranscodeCounters], keys: Sequence[str]) -> None:
        for key in keys:
            seen = counters.get(key)
            if seen is not None:
                self.dropped[key] = max(self.dropped.get(key, 0.0), seen.dropped)
                self.queue.setdefault(key, []).append(seen.queue_depth)

    def observe_playlist(self, where: str, text: str, since_start_s: float, now_epoch: float) -> None:
        segments = parse_segments(text)
        info = parse_playlist(text)
        if info.target_duration is not None:
            self.target_s[where] = info.target_duration
        if not segments or segments[-1].start is None:
            return
        self.first_segment_s.setdefault(where, since_start_s)
        age = now_epoch - segments[-1].start
        self.max_age_s[where] = max(self.max_age_s.get(where, 0.0), age)


async def watch_engine(http: aiohttp.ClientSession, base: str, keys: Sequence[str], renditions: Sequence[str],
                       watch: EngineWatch, started: float, ended: asyncio.Event) -> None:
    """Polls /metrics and every rendition playlist until a publisher ends
    (after that the streams wind down and the figures mean nothing)."""
    loop = asyncio.get_running_loop()
    while not ended.is_set():
        try:
            async with http.get(f"{base}/metrics") as response:
                watch.observe_metrics(parse_transcode_metrics(await response.text()), keys)
        except (aiohttp.ClientError, TimeoutError, ParseError) as exc:
            watch.errors.append(f"/metrics: {exc!r}")
        for key in keys:
            for name in renditions:
                where = f"{key}/{name}"
                try:
                    async with http.get(f"{base}/hls/{where}/media.m3u8") as response:
                        if response.status == 200:
                            watch.observe_playlist(where, await response.text(), loop.time() - started, time.time())
                except (aiohttp.ClientError, TimeoutError, ParseError) as exc:
                    watch.errors.append(f"{where}: {exc!r}")
        try:
            await asyncio.wait_for(ended.wait(), POLL_S)
        except TimeoutError:
            pass


def judge_engine(step: LiveStep, watch: EngineWatch, keys: Sequence[str], renditions: Sequence[str],
                 settings: Settings, packets_per_s: float, frames_per_s: float) -> None:
    """Fills the engine-specific figures of ``step`` and its verdict."""
    sent = settings.duration_s * frames_per_s
    lags: list[float] = []
    for key in keys:
        dropped = watch.dropped.get(key)
        if dropped is None:
            step.failures.append(f"{key}: no transcode counters in /metrics")
        elif dropped > settings.max_drop_fraction * sent:
            step.failures.append(f"{key}: {dropped:g} frames dropped of about {sent:g}")
        recent = watch.queue.get(key, [])[-3:]
        if recent:
            lags.append(min(recent) / packets_per_s)
        for name in renditions:
            where = f"{key}/{name}"
            first = watch.first_segment_s.get(where)
            limit = AGE_LIMIT_TARGETS * watch.target_s.get(where, 2.0)
            if first is None:
                step.failures.append(f"{where}: no segment with a program date time appeared")
            elif first > STARTUP_LIMIT_S:
                step.failures.append(f"{where}: first segment after {first:.1f} s")
            elif watch.max_age_s[where] > limit:
                step.failures.append(f"{where}: newest segment {watch.max_age_s[where]:.1f} s old (limit {limit:g} s)")
    step.max_dropped = max(watch.dropped.values()) if watch.dropped else None
    step.max_segment_age_s = max(watch.max_age_s.values()) if watch.max_age_s else None
    step.end_lag_s = max(lags) if lags else None
    if step.end_lag_s is not None and step.end_lag_s > settings.max_lag_s:
        step.failures.append(f"transcode queue ended {step.end_lag_s:.2f} s of media behind")
    if len(watch.errors) > len(keys) * 3:
        step.failures.append(f"{len(watch.errors)} polls failed, e.g. {watch.errors[-1]}")


def _speed_failures(outcomes: Sequence[ProgressOutcome], min_speed: float, what: str) -> list[str]:
    failures = []
    for i, outcome in enumerate(outcomes):
        if outcome.returncode != 0:
            failures.append(f"{what} {i} exited with {outcome.returncode}: {outcome.stderr_tail.strip()[-300:]}")
        elif outcome.speed is None or outcome.speed < min_speed:
            shown = "unknown" if outcome.speed is None else f"{outcome.speed:.3f}x"
            failures.append(f"{what} {i} fell to speed {shown}")
    return failures


def _new_step(side: str, count: int, settings: Settings, cpu_s: float, wall_s: float, peak: int,
              outcomes: Sequence[ProgressOutcome]) -> LiveStep:
    speeds = [s for s in (o.speed for o in outcomes) if s is not None]
    return LiveStep(side, count, settings.duration_s, cpu_s, cpu_s / (count * settings.duration_s / 60),
                    100 * cpu_s / wall_s if wall_s > 0 else 0.0, peak / 2**20, min(speeds) if speeds else None)


async def engine_live_step(count: int, settings: Settings, clip: Path, ladder: LadderConfig,
                           renditions: Sequence[str], frames_per_s: float) -> LiveStep:
    """A fresh ``fanz-media serve`` under ``count`` RTMP publishers."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="fanz-ladder-engine-") as tmp:
        work = Path(tmp)
        config = work / "engine.toml"
        config.write_text(engine_config_toml([ladder], ladder.name))
        rtmp, http_port = free_port(HOST), free_port(HOST)
        cmd = [engine_executable(), "serve", "--dev", "--config", str(config), "--host", HOST,
               "--rtmp-port", str(rtmp), "--http-port", str(http_port), "--data-dir", str(work / "data")]
        log = work / "server.log"
        async with ProcessSet() as procs:
            fd = _log_fd(log)
            try:
                srv = await procs.spawn(cmd, stdout=fd, stderr=fd)
            finally:
                os.close(fd)
            try:
                await wait_for_port(HOST, rtmp, srv, SERVER_START_S)
                await wait_for_port(HOST, http_port, srv, SERVER_START_S)
            except BenchmarkError as exc:
                raise BenchmarkError(f"engine: {exc}\n{log.read_text(errors='replace')[-2000:]}") from exc
            await asyncio.sleep(1.0)
            before = await asyncio.to_thread(tree_usage, srv.pid)
            stop_rss = asyncio.Event()
            sampler = asyncio.create_task(sample_peak_rss([srv.pid], stop_rss, POLL_S))
            keys = [f"s{i}" for i in range(count)]
            started = loop.time()
            pubs = [await procs.spawn(publisher_command(settings.ffmpeg, clip, f"rtmp://{HOST}:{rtmp}/live/{k}",
                                                        settings.duration_s),
                                      stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                    for k in keys]
            ended = asyncio.Event()
            watch = EngineWatch()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                watcher = asyncio.create_task(
                    watch_engine(http, f"http://{HOST}:{http_port}", keys, renditions, watch, started, ended))
                try:
                    async with asyncio.timeout(settings.duration_s + 60):
                        outcomes = await asyncio.gather(*(follow_progress(p, settings.warmup_s, ended) for p in pubs))
                finally:
                    ended.set()
                    await watcher
            wall = loop.time() - started
            await asyncio.sleep(1.0)
            after = await asyncio.to_thread(tree_usage, srv.pid)
            stop_rss.set()
            peak = await sampler
            server_rc = srv.returncode
        step = _new_step("engine", count, settings, after.cpu_s - before.cpu_s, wall, peak, outcomes)
        step.failures += _speed_failures(outcomes, settings.min_speed, "publisher")
        if server_rc is not None:
            step.failures.append(f"server exited with {server_rc}: {log.read_text(errors='replace')[-300:]}")
    packets_per_s = frames_per_s + ladder.audio_sample_rate / AAC_FRAME
    judge_engine(step, watch, keys, renditions, settings, packets_per_s, frames_per_s)
    step.held = not step.failures
    return step


async def ffmpeg_live_step(count: int, settings: Settings, clip: Path, ladder: LadderConfig,
                           info: SourceInfo) -> LiveStep:
    """``count`` ffmpeg processes, each a real-time ladder to live HLS."""
    with tempfile.TemporaryDirectory(prefix="fanz-ladder-ffmpeg-") as tmp:
        work = Path(tmp)
        async with ProcessSet() as procs:
            cpu_before = children_cpu_s()
            started = time.perf_counter()
            cmds = []
            for i in range(count):
                (work / f"s{i}").mkdir()
                cmds.append(ffmpeg_ladder_command(settings.ffmpeg, clip, work / f"s{i}", ladder, info,
                                                  live_duration_s=settings.duration_s))
            runs = [await procs.spawn(c, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                    for c in cmds]
            stop_rss = asyncio.Event()
            sampler = asyncio.create_task(sample_peak_rss([p.pid for p in runs], stop_rss, POLL_S))
            try:
                async with asyncio.timeout(settings.duration_s + 60):
                    outcomes = await asyncio.gather(*(follow_progress(p, settings.warmup_s) for p in runs))
            finally:
                stop_rss.set()
                peak = await sampler
            wall = time.perf_counter() - started
            cpu = children_cpu_s() - cpu_before
    step = _new_step("ffmpeg", count, settings, cpu, wall, peak, outcomes)
    step.failures += _speed_failures(outcomes, settings.min_speed, "ffmpeg")
    step.held = not step.failures
    return step


async def live_part(settings: Settings, live_ladder: LadderConfig) -> dict[str, Any]:
    """Ramps each side 1, 2, 3, ... streams until a step does not hold."""
    clip = await asyncio.to_thread(make_source_clip, settings.ffmpeg, settings.cache_dir, seconds=10,
                                   width=1280, height=720, video_kbps=3000)
    info, _frames, _duration = await asyncio.to_thread(probe_source, clip)
    renditions = plan_ladder(live_ladder, info).rendition_names
    frames_per_s = float(info.frame_rate or 30)
    steps: list[LiveStep] = []
    best: dict[str, int] = {}
    for side in settings.sides:
        best[side] = 0
        for count in range(1, settings.max_streams + 1):
            if not settings.as_json:
                print(f"live: {side}, {count} stream(s) for {settings.duration_s:g} s ...", file=sys.stderr,
                      flush=True)
            if side == "engine":
                step = await engine_live_step(count, settings, clip, live_ladder, renditions, frames_per_s)
            else:
                step = await ffmpeg_live_step(count, settings, clip, live_ladder, info)
            steps.append(step)
            for failure in step.failures:
                print(f"  {side} x{count}: {failure}", file=sys.stderr, flush=True)
            if not step.held:
                break
            best[side] = count
    return {"source": str(clip), "ladder": list(renditions), "steps": [asdict(s) for s in steps],
            "max_streams_held": best}


# --- command line ------------------------------------------------------------------------

FILE_COLUMNS = (
    ("tool", "tool"), ("wall_s", "wall s"), ("cpu_s", "cpu s"), ("fps", "frames/s"), ("core_pct", "% core"),
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
                     f"{file['source_frames']} frames ({file['source_seconds']:.1f} s); fastest run of each:")
        lines.append(format_table(file["best"].values(), FILE_COLUMNS))
        for what, ratio in file["ratio_engine_over_ffmpeg"].items():
            verdict = "engine faster" if ratio < 1 else "ffmpeg faster" if ratio > 1 else "even"
            lines.append(f"engine / ffmpeg {what}: {ratio:.2f} ({verdict if what == 'wall' else 'lower is better'})")
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
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
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
        as_json=args.json,
    )


async def run(settings: Settings) -> dict[str, Any]:
    file_ladder, live_ladder = bench_ladders(settings.preset)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "ffmpeg": settings.ffmpeg, "x264_preset": settings.preset}
    if "file" in settings.parts:
        result["file"] = await file_part(settings, file_ladder)
    if "live" in settings.parts:
        result["live"] = await live_part(settings, live_ladder)
    return result


async def _main(settings: Settings) -> dict[str, Any]:
    # SIGTERM cancels like Ctrl-C does, so every ProcessSet ends its children.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(settings)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        result = asyncio.run(_main(settings))
    except BenchmarkError as exc:
        print(f"ladder_vs_ffmpeg: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("ladder_vs_ffmpeg: interrupted; every started process has been stopped", file=sys.stderr)
        return 130
    print(to_json(result) if settings.as_json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
