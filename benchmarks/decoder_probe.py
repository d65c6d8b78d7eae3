"""Which video decoder the engine's probe chooses here, and what decoding
costs in CPU with each.

Generates a 1080p30 H.264 clip with PyAV alone (testsrc2 through lavfi,
libx264; no ffmpeg CLI needed, which GPU machines often lack), runs
:func:`transcode.decoders.probe_decoders`, then decodes the clip in software
(FFmpeg's threads, as the engine does) and on every hardware device that the
probe found working, with frames downloaded to system memory as the engine
takes them. Prints, per decoder, frames per second and the process's CPU
milliseconds per frame (user + system, all threads).

Usage: ``python -m benchmarks.decoder_probe [--seconds 4] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.codec.hwaccel import HWAccel

from transcode.config import SOFTWARE_DECODER
from transcode.decoders import probe_decoders


@dataclass(frozen=True)
class DecodeFigures:
    decoder: str
    frames: int
    wall_s: float
    cpu_s: float
    pixel_format: str

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000 * self.cpu_s / self.frames if self.frames else 0.0


def make_clip(path: Path, seconds: int) -> Path:
    """1080p30 testsrc2 in H.264 (veryfast, 2 s GOP), written by PyAV."""
    src = av.open(f"testsrc2=size=1920x1080:rate=30:duration={seconds}", format="lavfi")
    with src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        stream.codec_context.gop_size = 60
        stream.codec_context.options = {"preset": "veryfast", "bf": "2"}
        for frame in src.decode(video=0):
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    return path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode(path: Path, decoder: str) -> DecodeFigures:
    hwaccel = None if decoder == SOFTWARE_DECODER else HWAccel(device_type=decoder, allow_software_fallback=False)
    with av.open(str(path), hwaccel=hwaccel) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames, fmt = 0, ""
        wall, cpu = time.perf_counter(), cpu_seconds()
        for frame in container.decode(stream):
            frames += 1
            fmt = frame.format.name
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return DecodeFigures(decoder, frames, wall, cpu, fmt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=4, help="length of the generated clip (default 4)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    probe = probe_decoders()
    chosen = probe.choose("auto")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.seconds)
        results = [decode(clip, SOFTWARE_DECODER)] + [decode(clip, d) for d in probe.available]
    if args.json:
        rows = [asdict(r) | {"fps": r.fps, "cpu_ms_per_frame": r.cpu_ms_per_frame} for r in results]
        print(json.dumps({"chosen": chosen, "failures": probe.failures, "results": rows}, indent=2))
        return 0
    print(f"decoder chosen by the probe (auto): {chosen}")
    for device, why in probe.failures.items():
        print(f"  {device}: {why}")
    print(f"{'decoder':<10} {'frames':>7} {'fps':>9} {'CPU ms/frame':>13} {'frames as':>10}")
    for r in results:
        print(f"{r.decoder:<10} {r.frames:>7} {r.fps:>9.1f} {r.cpu_ms_per_frame:>13.2f} {r.pixel_format:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
