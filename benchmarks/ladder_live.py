"""Part 2 of :mod:`benchmarks.ladder_vs_ffmpeg`: live capacity.

How many concurrent live 720p30 streams with a 3-rung ladder the machine
keeps in real time, for the engine (``fanz-media serve --dev`` under N RTMP
publishers, judged on publisher speed, dropped frames, segment freshness and
transcode queue lag) and for ffmpeg (N real-time ladder processes, judged on
their speed). The module docstring of :mod:`benchmarks.ladder_vs_ffmpeg`
says what each verdict means; run it through that module's command line.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import (
    ParseError,
    ProcessSet,
    Progress,
    children_cpu_s,
    free_port,
    make_source_clip,
    parse_playlist,
    publisher_command,
    read_progress,
    sample_peak_rss,
    start_server,
    tree_usage,
)
from benchmarks.ladder_vs_ffmpeg import (
    AAC_FRAME,
    AGE_LIMIT_TARGETS,
    HOST,
    POLL_S,
    SERVER_START_S,
    STARTUP_LIMIT_S,
    Settings,
    TranscodeCounters,
    engine_config_toml,
    engine_executable,
    ffmpeg_ladder_command,
    parse_segments,
    parse_transcode_metrics,
    probe_source,
)
from transcode.ladder import LadderConfig, SourceInfo, plan_ladder


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
    loop = asyncio.get_running_loop()
    outcome = ProgressOutcome()
    try:
        outcome.returncode, outcome.stderr_tail = await read_progress(
            proc, lambda block: outcome.observe(block, loop.time(), warmup_s))
    finally:
        if ended is not None:
            ended.set()
    return outcome




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
            srv = await start_server(procs, "engine", cmd, log, HOST, (rtmp, http_port), SERVER_START_S)
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
