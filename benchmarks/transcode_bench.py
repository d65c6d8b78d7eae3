"""Transcode figures that decide how the live transcoder runs.

1. Scaling one decoded frame to several rungs: a persistent
   VideoReformatter per rung, one filter graph (split + scale), or
   ``VideoFrame.reformat()`` per frame.
2. Where the work runs, for N streams of M rungs: one thread per stream,
   one process per stream, one process per rung (each decoding on its own),
   against running the streams one after another.

Usage: ``python -m benchmarks.transcode_bench [--streams 2] [--seconds 4]``.
Needs the ffmpeg CLI to make its test clip. Prints frames per second of
source video (higher is better); compare figures from the same machine only.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import Interpolation, VideoReformatter

from transcode.core import RenditionPacket
from transcode.file import transcode_file
from transcode.ladder import LadderConfig, RungConfig

TARGETS = ((854, 480), (640, 360), (426, 240))


def make_clip(path: Path, seconds: int) -> Path:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def bench_scaling(clip: Path, repeats: int) -> dict[str, float]:
    with av.open(str(clip)) as c:
        frames = list(c.decode(video=0))
    results: dict[str, float] = {}

    def timed(name: str, fn: object) -> None:
        best = 0.0
        for _ in range(repeats):
            t = time.perf_counter()
            fn()  # type: ignore[operator]
            best = max(best, len(frames) / (time.perf_counter() - t))
        results[name] = best

    scalers = [VideoReformatter() for _ in TARGETS]

    def persistent() -> None:
        for f in frames:
            for s, (w, h) in zip(scalers, TARGETS, strict=True):
                s.reformat(f, w, h, "yuv420p", interpolation=Interpolation.BILINEAR)

    def per_frame() -> None:
        for f in frames:
            for w, h in TARGETS:
                f.reformat(w, h, "yuv420p", interpolation=Interpolation.BILINEAR)

    def graph() -> None:
        g = av.filter.Graph()
        src = g.add_buffer(width=1280, height=720, format="yuv420p", time_base=Fraction(1, 30))
        split = g.add("split", str(len(TARGETS)))
        src.link_to(split)
        sinks = []
        for i, (w, h) in enumerate(TARGETS):
            scale = g.add("scale", f"{w}:{h}:flags=bilinear")
            split.link_to(scale, i, 0)
            sink = g.add("buffersink")
            scale.link_to(sink)
            sinks.append(sink)
        g.configure()
        for f in frames:
            src.push(f)
            for sink in sinks:
                sink.pull()

    timed("VideoReformatter per rung", persistent)
    timed("filter graph split+scale", graph)
    timed("VideoFrame.reformat per frame", per_frame)
    return results


def ladder_for(rungs: tuple[str, ...]) -> LadderConfig:
    table = {"480p": RungConfig("480p", 480, 1_400_000), "360p": RungConfig("360p", 360, 800_000)}
    return LadderConfig("bench", tuple(table[r] for r in rungs), passthrough=False)


def transcode_job(clip: str, rungs: tuple[str, ...]) -> int:
    frames = 0
    for event in transcode_file(clip, ladder_for(rungs), "libx264"):
        if isinstance(event, RenditionPacket) and event.packet.track == 0:
            frames += 1
    return frames


def bench_layout(clip: Path, streams: int, source_frames: int) -> dict[str, float]:
    rungs = ("480p", "360p")
    results: dict[str, float] = {}
    total = streams * source_frames

    t = time.perf_counter()
    for _ in range(streams):
        transcode_job(str(clip), rungs)
    results["sequential"] = total / (time.perf_counter() - t)

    t = time.perf_counter()
    threads = [threading.Thread(target=transcode_job, args=(str(clip), rungs)) for _ in range(streams)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    results["thread per stream"] = total / (time.perf_counter() - t)

    with ProcessPoolExecutor(streams) as pool:
        pool.submit(int).result()  # start the workers outside the timing
        t = time.perf_counter()
        list(pool.map(transcode_job, [str(clip)] * streams, [rungs] * streams))
        results["process per stream"] = total / (time.perf_counter() - t)

    with ProcessPoolExecutor(streams * len(rungs)) as pool:
        pool.submit(int).result()
        t = time.perf_counter()
        jobs = [(str(clip), (r,)) for _ in range(streams) for r in rungs]
        list(pool.map(transcode_job, *zip(*jobs, strict=True)))
        results["process per rung"] = total / (time.perf_counter() - t)
    return results


@dataclasses.dataclass
class Args:
    streams: int
    seconds: int
    repeats: int


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = Args(**vars(parser.parse_args()))
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "bench720.mp4", args.seconds)
        print("scaling 720p to 480p+360p+240p (source frames/s):")
        for name, fps in bench_scaling(clip, args.repeats).items():
            print(f"  {name:32s} {fps:8.1f}")
        print(f"{args.streams} streams of 720p30 -> 480p+360p, libx264 veryfast (source frames/s, all streams):")
        for name, fps in bench_layout(clip, args.streams, args.seconds * 30).items():
            print(f"  {name:32s} {fps:8.1f}")


if __name__ == "__main__":
    main()
