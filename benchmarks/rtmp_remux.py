"""RTMP in, HLS out: how much CPU the engine spends per stream against
nginx with the RTMP module, and how many publishers each keeps up with.

N ffmpeg publishers loop a pre-encoded 1080p30 6 Mbit/s clip (``-re``,
``-c copy``) into the server over loopback RTMP while the benchmark polls each
stream's HLS playlist. A step is *sustained* when every publisher keeps
ffmpeg's ``speed`` at or above ``--min-speed`` (the server reads as fast as
real time) and every playlist keeps getting new segments (the newest is never
older than three target durations). CPU is utime+stime of the server's whole
process tree from /proc, sampled before and after the load.

    python -m benchmarks.rtmp_remux --publishers 2 --duration 15
    python -m benchmarks.rtmp_remux --ramp --max-publishers 16 --json
    python -m benchmarks.rtmp_remux --publishers 32 --processes 4

``--processes N`` also runs the engine with ``server.processes = N`` (N event
loops sharing the ports) in the same run, next to the single-process engine
and nginx. ``held`` counts the publishers that stayed in real time with
fresh playlists, out of N.

Everything listens on 127.0.0.1; every process started here is ended on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp

from benchmarks.common import (
    BenchmarkError,
    FreshnessTracker,
    ParseError,
    PlaylistInfo,
    ProcessSet,
    Progress,
    fanz_media_exe,
    format_table,
    free_port,
    make_source_clip,
    parse_playlist,
    publisher_command,
    read_progress,
    run_benchmark,
    sample_peak_rss,
    start_server,
    tree_usage,
)

HOST = "127.0.0.1"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
POLL_S = 0.5
STARTUP_LIMIT_S = 10.0
AGE_LIMIT_TARGETS = 3.0
SERVER_START_S = 30.0


@dataclass(frozen=True)
class Settings:
    """Command-line settings of one benchmark run."""

    servers: tuple[str, ...]
    """``engine``, ``engine-pN`` (the engine with N processes), ``nginx``."""
    counts: tuple[int, ...]
    ramp: bool
    duration_s: float
    min_speed: float
    warmup_s: float
    ffmpeg: str
    cache_dir: Path
    as_json: bool


@dataclass(frozen=True)
class ServerUnderTest:
    """How to start one server and where its streams go in and come out."""

    name: str
    command: list[str]
    rtmp_port: int
    http_port: int

    def publish_url(self, key: str) -> str:
        return f"rtmp://{HOST}:{self.rtmp_port}/live/{key}"

    def playlist_url(self, key: str) -> str:
        return f"http://{HOST}:{self.http_port}/hls/{key}/index.m3u8"


def engine_kind(processes: int) -> str:
    return "engine" if processes == 1 else f"engine-p{processes}"


def kind_processes(kind: str) -> int:
    return int(kind.removeprefix("engine-p")) if kind.startswith("engine-p") else 1


def engine_server(workdir: Path, processes: int = 1) -> ServerUnderTest:
    """``fanz-media serve --dev`` on loopback, writing under ``workdir``,
    with ``processes`` event loops."""
    exe = fanz_media_exe()
    rtmp, http = free_port(HOST), free_port(HOST)
    # The same job as nginx-rtmp's: remux to HLS, no ladder, no control API.
    config = workdir / "engine.toml"
    config.write_text("[transcode]\nenabled = false\n\n[http]\napi = false\n\n[server]\nlog_level = \"warning\"\n")
    command = [exe, "serve", "--dev", "--config", str(config), "--host", HOST, "--rtmp-port", str(rtmp),
               "--http-port", str(http), "--data-dir", str(workdir / "data"), "--processes", str(processes)]
    return ServerUnderTest(engine_kind(processes), command, rtmp, http)


def nginx_config(workdir: Path, rtmp_port: int, http_port: int) -> str:
    """An nginx config of its own, in the foreground, with every path under
    ``workdir``: RTMP ingest remuxed to 2 s HLS fragments, served over HTTP at
    the same /hls/KEY/index.m3u8 layout as the engine."""
    tmp = workdir / "tmp"
    return f"""daemon off;
master_process on;
worker_processes 1;
load_module {NGINX_RTMP_MODULE};
error_log {workdir}/error.log warn;
pid {workdir}/nginx.pid;
events {{ worker_connections 1024; }}
rtmp {{
    server {{
        listen {HOST}:{rtmp_port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            hls on;
            hls_path {workdir}/hls;
            hls_nested on;
            hls_fragment 2s;
            hls_playlist_length 10s;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    server {{
        listen {HOST}:{http_port};
        location /hls/ {{
            alias {workdir}/hls/;
            add_header Cache-Control no-cache;
        }}
    }}
}}
"""


def nginx_server(workdir: Path) -> ServerUnderTest:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not NGINX_RTMP_MODULE.exists():
        raise BenchmarkError("nginx with the RTMP module is not installed (Debian: nginx libnginx-mod-rtmp)")
    rtmp, http = free_port(HOST), free_port(HOST)
    (workdir / "tmp").mkdir()
    (workdir / "hls").mkdir()
    # nginx started as root runs its worker as nobody, which must write HLS there.
    os.chmod(workdir, 0o755)
    os.chmod(workdir / "hls", 0o777)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, rtmp, http))
    command = [nginx, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    return ServerUnderTest("nginx", command, rtmp, http)


async def wait_for_processes(metrics_url: str, processes: int) -> None:
    """Until ``/metrics`` says that every process of the engine answers
    (``fanz_worker_up``); at once for a single process."""
    if processes == 1:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVER_START_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while loop.time() < deadline:
            try:
                async with http.get(metrics_url) as resp:
                    text = await resp.text()
                up = [line for line in text.splitlines() if line.startswith("fanz_worker_up{")]
                if len(up) == processes and all(line.endswith(" 1.0") for line in up):
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise BenchmarkError(f"the engine's {processes} processes did not all start within {SERVER_START_S:g} s")


@dataclass
class PublisherOutcome:
    returncode: int | None = None
    speeds: list[float] = field(default_factory=list)
    final_speed: float | None = None
    stderr_tail: str = ""

    @property
    def min_speed(self) -> float | None:
        if self.speeds:
            return min(self.speeds)
        return self.final_speed


async def follow_publisher(proc: asyncio.subprocess.Process, warmup_s: float) -> PublisherOutcome:
    """Reads one publisher's ``-progress`` output until it exits. Speeds from
    the first ``warmup_s`` of media are left out: connecting takes a moment."""
    outcome = PublisherOutcome()

    def observe(block: Progress) -> None:
        if block.speed is None:
            return
        outcome.final_speed = block.speed
        if block.out_time_us is not None and block.out_time_us >= warmup_s * 1e6 and not block.ended:
            outcome.speeds.append(block.speed)

    outcome.returncode, outcome.stderr_tail = await read_progress(proc, observe)
    return outcome


async def watch_playlist(http: aiohttp.ClientSession, url: str, tracker: FreshnessTracker,
                         done: asyncio.Event) -> None:
    """Polls one stream's playlist until its publisher is done, following the
    first variant when the server answers with a multivariant playlist."""
    loop = asyncio.get_running_loop()
    while not done.is_set():
        info: PlaylistInfo | None = None
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    info = parse_playlist(await response.text())
        except (aiohttp.ClientError, ParseError):
            info = None
        if info is not None and info.variants:
            url = urljoin(url, info.variants[0])
            continue
        tracker.observe(info, loop.time())
        try:
            await asyncio.wait_for(done.wait(), POLL_S)
        except TimeoutError:
            pass


@dataclass
class StepResult:
    """One server under N publishers for one duration."""

    server: str
    publishers: int
    duration_s: float
    cpu_s: float
    cpu_s_per_stream_min: float
    core_pct: float
    peak_rss_mb: float
    min_speed: float | None
    max_segment_age_s: float | None
    max_first_segment_s: float | None
    target_duration_s: float | None
    sustained: bool
    held: int
    """Publishers that stayed in real time with fresh playlists."""
    failures: list[str]


async def run_step(kind: str, count: int, settings: Settings, source: Path) -> StepResult:
    """Starts a fresh server, loads it with ``count`` publishers for the set
    duration, and stops it again."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix=f"fanz-bench-{kind}-") as tmp:
        workdir = Path(tmp)
        server = engine_server(workdir, kind_processes(kind)) if kind.startswith("engine") else nginx_server(workdir)
        async with ProcessSet() as procs:
            srv = await start_server(procs, kind, server.command, workdir / "server.log", HOST,
                                     (server.rtmp_port, server.http_port), SERVER_START_S)
            # Each process of a multi-process engine starts on its own: the
            # load (and the CPU count) begins once every one answers.
            await wait_for_processes(f"http://{HOST}:{server.http_port}/metrics", kind_processes(kind))
            await asyncio.sleep(1.0)
            before = await asyncio.to_thread(tree_usage, srv.pid)
            stop_sampling = asyncio.Event()
            sampler = asyncio.create_task(sample_peak_rss([srv.pid], stop_sampling, POLL_S))
            started = loop.time()
            keys = [f"bench{i}" for i in range(count)]
            commands = [publisher_command(settings.ffmpeg, source, server.publish_url(k), settings.duration_s)
                        for k in keys]
            publishers = [await procs.spawn(c, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                          for c in commands]
            trackers = [FreshnessTracker(started=started) for _ in keys]
            done = [asyncio.Event() for _ in keys]

            async def publish(i: int) -> PublisherOutcome:
                try:
                    return await follow_publisher(publishers[i], settings.warmup_s)
                finally:
                    done[i].set()

            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                watchers = [asyncio.create_task(watch_playlist(http, server.playlist_url(k), t, d))
                            for k, t, d in zip(keys, trackers, done, strict=True)]
                try:
                    async with asyncio.timeout(settings.duration_s + 60):
                        outcomes = await asyncio.gather(*(publish(i) for i in range(count)))
                finally:
                    for event in done:
                        event.set()
                    await asyncio.gather(*watchers)
            ended = loop.time()
            await asyncio.sleep(1.0)
            after = await asyncio.to_thread(tree_usage, srv.pid)
            stop_sampling.set()
            peak = max(before.rss_bytes, await sampler)
            server_rc = srv.returncode
        return summarize(kind, count, settings, outcomes, trackers, after.cpu_s - before.cpu_s,
                         ended - started, peak, server_rc)


def summarize(kind: str, count: int, settings: Settings, outcomes: Sequence[PublisherOutcome],
              trackers: Sequence[FreshnessTracker], cpu_s: float, wall_s: float, peak_rss: int,
              server_rc: int | None) -> StepResult:
    """Turns one step's raw observations into figures and a verdict."""
    failures: list[str] = []
    late: set[int] = set()
    if server_rc is not None:
        failures.append(f"server exited with {server_rc} during the load")
    for i, outcome in enumerate(outcomes):
        if outcome.returncode != 0:
            failures.append(f"publisher {i} exited with {outcome.returncode}: {outcome.stderr_tail.strip()[-300:]}")
            late.add(i)
        elif outcome.min_speed is None or outcome.min_speed < settings.min_speed:
            failures.append(f"publisher {i} fell to speed {outcome.min_speed}x")
            late.add(i)
    ages: list[float] = []
    firsts: list[float] = []
    targets = [t.target_duration for t in trackers if t.target_duration is not None]
    for i, tracker in enumerate(trackers):
        if tracker.first_segment_s is None:
            failures.append(f"stream {i}: no HLS segment appeared")
            late.add(i)
            continue
        firsts.append(tracker.first_segment_s)
        ages.append(tracker.max_age_s)
        if tracker.first_segment_s > STARTUP_LIMIT_S:
            failures.append(f"stream {i}: first segment after {tracker.first_segment_s:.1f} s")
            late.add(i)
        limit = AGE_LIMIT_TARGETS * (tracker.target_duration or 2.0)
        if tracker.max_age_s > limit:
            failures.append(f"stream {i}: newest segment got {tracker.max_age_s:.1f} s old (limit {limit:.1f} s)")
            late.add(i)
    speeds = [s for s in (o.min_speed for o in outcomes) if s is not None]
    stream_min = count * settings.duration_s / 60
    return StepResult(
        server=kind,
        publishers=count,
        duration_s=settings.duration_s,
        cpu_s=cpu_s,
        cpu_s_per_stream_min=cpu_s / stream_min,
        core_pct=100 * cpu_s / wall_s if wall_s > 0 else 0.0,
        peak_rss_mb=peak_rss / 2**20,
        min_speed=min(speeds) if speeds else None,
        max_segment_age_s=max(ages) if ages else None,
        max_first_segment_s=max(firsts) if firsts else None,
        target_duration_s=max(targets) if targets else None,
        sustained=not failures,
        held=count - len(late),
        failures=failures,
    )


def ramp_counts(max_publishers: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``max_publishers`` (which is always the last step)."""
    counts, n = [], 1
    while n < max_publishers:
        counts.append(n)
        n *= 2
    counts.append(max_publishers)
    return tuple(counts)


async def run(settings: Settings) -> dict[str, Any]:
    source = await asyncio.to_thread(make_source_clip, settings.ffmpeg, settings.cache_dir)
    steps: list[StepResult] = []
    best: dict[str, int] = {}
    for kind in settings.servers:
        best[kind] = 0
        for count in settings.counts:
            if not settings.as_json:
                print(f"{kind}: {count} publisher(s) for {settings.duration_s:g} s ...", file=sys.stderr, flush=True)
            step = await run_step(kind, count, settings, source)
            steps.append(step)
            for failure in step.failures:
                print(f"  {kind} x{count}: {failure}", file=sys.stderr, flush=True)
            if step.sustained:
                best[kind] = max(best[kind], count)
            elif settings.ramp:
                break
    ratios: dict[str, float] = {}
    by_key = {(s.server, s.publishers): s for s in steps}
    for count in settings.counts:
        nginx = by_key.get(("nginx", count))
        for kind in settings.servers:
            engine = by_key.get((kind, count))
            if kind.startswith("engine") and engine and nginx and nginx.cpu_s_per_stream_min > 0:
                key = str(count) if kind == "engine" else f"{count} ({kind})"
                ratios[key] = engine.cpu_s_per_stream_min / nginx.cpu_s_per_stream_min
    return {
        "source": str(source),
        "cpus": os.cpu_count(),
        "steps": [asdict(s) for s in steps],
        "cpu_ratio_engine_over_nginx": ratios,
        "max_sustained_publishers": best if settings.ramp else None,
    }


COLUMNS = (
    ("server", "server"), ("publishers", "N"), ("duration_s", "dur s"), ("cpu_s", "cpu s"),
    ("cpu_s_per_stream_min", "cpu s/stream-min"), ("core_pct", "% core"), ("peak_rss_mb", "peak RSS MB"),
    ("min_speed", "min speed"), ("max_segment_age_s", "max seg age s"), ("max_first_segment_s", "1st seg s"),
    ("held", "held"), ("sustained", "sustained"),
)


def render(result: dict[str, Any]) -> str:
    lines = [format_table(result["steps"], COLUMNS)]
    for count, ratio in result["cpu_ratio_engine_over_nginx"].items():
        lines.append(f"CPU per stream-minute, engine / nginx at N={count}: {ratio:.2f}")
    if result["max_sustained_publishers"] is not None:
        for server, best in result["max_sustained_publishers"].items():
            lines.append(f"most publishers sustained in real time by {server}: {best}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--publishers", type=int, default=1, help="publishers for a single measurement (default 1)")
    parser.add_argument("--ramp", action="store_true", help="ramp 1, 2, 4, ... publishers until a step fails")
    parser.add_argument("--max-publishers", type=int, default=16, help="last ramp step (default 16)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds each publisher streams (default 20)")
    parser.add_argument("--server", choices=("engine", "nginx", "both"), default="both")
    parser.add_argument("--processes", type=int, default=1,
                        help="also run the engine with server.processes = N (default 1: only one process)")
    parser.add_argument("--min-speed", type=float, default=0.97, help="lowest ffmpeg speed that counts as real time")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of media before speed is judged")
    parser.add_argument("--ffmpeg", default=shutil.which("ffmpeg") or "ffmpeg")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "fanz-benchmark",
                        help="where the 1080p source clip is kept between runs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.publishers < 1 or args.max_publishers < 1 or args.duration <= 0 or args.processes < 1:
        parser.error("--publishers, --max-publishers, --duration and --processes must be positive")
    engines = ("engine",) if args.processes == 1 else ("engine", engine_kind(args.processes))
    servers = {"engine": engines, "nginx": ("nginx",), "both": (*engines, "nginx")}[args.server]
    return Settings(
        servers=servers,
        counts=ramp_counts(args.max_publishers) if args.ramp else (args.publishers,),
        ramp=args.ramp,
        duration_s=args.duration,
        min_speed=args.min_speed,
        warmup_s=args.warmup,
        ffmpeg=args.ffmpeg,
        cache_dir=args.cache_dir,
        as_json=args.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    return run_benchmark("rtmp_remux", functools.partial(run, settings), render, as_json=settings.as_json)


if __name__ == "__main__":
    raise SystemExit(main())
