"""LL-HLS glass-to-glass latency in hls.js, with the ladder and without it.

One ffmpeg publisher sends a live 720p30 test pattern (x264 ``zerolatency``,
a 2 s GOP, AAC) over loopback RTMP to ``fanz-media serve --dev``; hls.js in
headless Chromium (tests/browser/play.mjs, low-latency mode) then plays the
multivariant playlist several times. The figure is the program date time of
the frame on screen against the clock (``pdtLatency``): the time from the
frame's arrival at the engine to its display, encode queue, part cut,
delivery and the player's hold-back included.

The peer is the same job without the ladder (``transcode.enabled = false``:
the source is packaged as it arrives), run in the same invocation, so the
difference is what the decode/encode adds. Each ``--part-target`` given is
run for both.

    python -m benchmarks.llhls_latency --plays 3
    python -m benchmarks.llhls_latency --part-target 0.5 --part-target 0.334 --json

Needs the browser tests' npm packages (``./scripts/test`` installs them) and
/usr/bin/chromium. Everything listens on 127.0.0.1 and every process started
here is ended on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import (
    BenchmarkError,
    ProcessSet,
    fanz_media_exe,
    format_table,
    free_port,
    run_benchmark,
    spawn_logged,
    start_server,
)
from packager.hls.config import HlsConfig

HOST = "127.0.0.1"
PLAY_SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "browser" / "play.mjs"
SERVER_START_S = 60.0
DEFAULT_PART_TARGET_S = HlsConfig().part_target_s


def engine_command(workdir: Path, *, ladder: bool, part_target: float) -> tuple[list[str], int, int]:
    exe = fanz_media_exe()
    rtmp, http = free_port(HOST), free_port(HOST)
    config = workdir / "engine.toml"
    config.write_text(
        f"[transcode]\nenabled = {'true' if ladder else 'false'}\n\n"
        f"[hls]\npart_target_s = {part_target}\n\n"
        "[http]\napi = false\n\n[server]\nlog_level = \"warning\"\n"
    )
    command = [exe, "serve", "--dev", "--config", str(config), "--host", HOST, "--rtmp-port", str(rtmp),
               "--http-port", str(http), "--data-dir", str(workdir / "data")]
    return command, rtmp, http


def live_publisher(ffmpeg: str, url: str, seconds: float) -> list[str]:
    """A live source as OBS would send it with a 2 s keyframe interval."""
    return [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60", "-keyint_min", "60",
        "-sc_threshold", "0", "-b:v", "3000k", "-maxrate", "3000k", "-bufsize", "3000k", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-f", "flv", url,
    ]


async def wait_for_playlist(url: str, limit_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200 and "#EXT-X-STREAM-INF" in await resp.text():
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise BenchmarkError(f"{url} did not appear within {limit_s} s")


async def play_once(url: str, min_time: float) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise BenchmarkError("node is not installed (./scripts/test installs it)")
    proc = await asyncio.create_subprocess_exec(
        node, str(PLAY_SCRIPT), "--url", url, "--player", "hlsjs", "--low-latency",
        "--min-time", str(min_time), "--timeout", str(min_time + 40),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), min_time + 60)
    lines = [line for line in stdout.decode(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        raise BenchmarkError(f"play.mjs printed no report: {stderr.decode(errors='replace')[-1000:]}")
    report: dict[str, Any] = json.loads(lines[-1])
    return report


async def measure(ffmpeg: str, *, ladder: bool, part_target: float, plays: int, min_time: float,
                  workdir: Path) -> dict[str, Any]:
    command, rtmp, http = engine_command(workdir, ladder=ladder, part_target=part_target)
    key = "lat"
    playlist = f"http://{HOST}:{http}/hls/{key}/index.m3u8"
    async with ProcessSet() as procs:
        await start_server(procs, "engine", command, workdir / "engine.log", HOST, (rtmp, http), SERVER_START_S)
        seconds = 20 + plays * (min_time + 15)
        await spawn_logged(procs, live_publisher(ffmpeg, f"rtmp://{HOST}:{rtmp}/live/{key}", seconds),
                           workdir / "publisher.log")
        await wait_for_playlist(playlist, 30)
        await asyncio.sleep(4)  # the ladder's rungs and a few segments exist
        latencies: list[float] = []
        played: list[float] = []
        for _ in range(plays):
            report = await play_once(playlist, min_time)
            if report.get("pdtLatency") is not None:
                latencies.append(float(report["pdtLatency"]))
            played.append(float(report.get("playedTime") or 0.0))
    if not latencies:
        raise BenchmarkError("hls.js reported no program-date-time latency")
    return {
        "setup": "ladder" if ladder else "remux",
        "part_target_s": part_target,
        "plays": len(latencies),
        "latencies_s": [round(v, 3) for v in latencies],
        "median_s": round(statistics.median(latencies), 3),
        "played_s": [round(v, 1) for v in played],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for part_target in args.part_target or [DEFAULT_PART_TARGET_S]:
        for ladder in (True, False):
            with tempfile.TemporaryDirectory(prefix="fanz-latency-") as tmp:
                rows.append(await measure(args.ffmpeg, ladder=ladder, part_target=part_target, plays=args.plays,
                                          min_time=args.min_time, workdir=Path(tmp)))
    ratios = {}
    for part_target in args.part_target or [DEFAULT_PART_TARGET_S]:
        pair = {r["setup"]: r for r in rows if r["part_target_s"] == part_target}
        ratios[str(part_target)] = round(pair["ladder"]["median_s"] / pair["remux"]["median_s"], 2)
    return {"rows": rows, "median_ratio_ladder_over_remux": ratios}


def report(result: dict[str, Any]) -> str:
    table = format_table(result["rows"], [("setup", "setup"), ("part_target_s", "part target s"),
                                          ("median_s", "median latency s"), ("latencies_s", "each play s")])
    lines = [table]
    for part, ratio in result["median_ratio_ladder_over_remux"].items():
        lines.append(f"part target {part} s: ladder / remux median latency {ratio:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plays", type=int, default=3, help="hls.js plays per setup (default 3)")
    parser.add_argument("--min-time", type=float, default=8.0, help="seconds of media each play lasts (default 8)")
    parser.add_argument("--part-target", type=float, action="append",
                        help=f"hls.part_target_s to measure (repeatable; default {DEFAULT_PART_TARGET_S}, "
                        "the engine's)")
    parser.add_argument("--ffmpeg", default=shutil.which("ffmpeg") or "ffmpeg")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    return run_benchmark("llhls_latency", lambda: run(args), report, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
