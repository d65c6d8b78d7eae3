"""CPU of writing CMAF fragments with common encryption against clear ones.

A 1080p30 H.264 clip with AAC (libx264 at 6 Mbit/s, 2 s GOP, made once by
the ffmpeg CLI and cached) is demuxed into the engine's packets, then the
fMP4 writer turns it into fragments again and again: clear (``none``),
``cbcs`` and ``cenc``, the three interleaved round by round in one process
so that they see the same machine. The figure is this process's CPU time
(user + system) per round; the table gives the median, the CPU per second
of media (the share of one core a live stream costs), and the ratio
against ``none``.

    python -m benchmarks.cenc_bench                     # 10 s clip, 5 rounds, 0.5 s parts
    python -m benchmarks.cenc_bench --seconds 20 --rounds 9 --part 2 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import av.audio.stream

from drm.cenc import CencEncryption
from drm.model import ContentKey, KeyPeriod, Protection
from engine.media import Codec, Packet, Track
from packager.fmp4 import Fmp4Writer

MODES = ("none", "cbcs", "cenc")
_CODECS = {"h264": Codec.H264, "aac": Codec.AAC}


def make_clip(path: Path, seconds: int) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M", "-maxrate", "6M", "-bufsize", "12M",
        "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", str(path),
    ], check=True, timeout=600)
    return path


def demux(path: Path) -> tuple[list[Track], list[Packet], float]:
    tracks = []
    packets = []
    with av.open(str(path)) as container:
        for s in container.streams:
            ctx = s.codec_context
            rate = s.codec_context.sample_rate if isinstance(s, av.audio.stream.AudioStream) else None
            assert s.time_base is not None
            tracks.append(Track(s.index, _CODECS[ctx.name], Fraction(s.time_base), bytes(ctx.extradata or b""),
                                sample_rate=rate))
        for p in container.demux():
            if p.size == 0 or p.pts is None or p.dts is None:
                continue
            assert p.time_base is not None
            tb = Fraction(p.time_base)
            shift = int(1 / tb)
            packets.append(Packet(p.stream.index, p.pts + shift, p.dts + shift, tb, bytes(p), p.is_keyframe,
                                  p.duration or 0))
        duration = float(container.duration or 0) / av.time_base
    return tracks, packets, duration


def split_parts(packets: list[Packet], part: float) -> list[list[Packet]]:
    parts: list[list[Packet]] = []
    start = None
    for p in packets:
        t = float(p.dts * p.time_base)
        if start is None or t - start >= part:
            parts.append([])
            start = t
        parts[-1].append(p)
    return parts


def run(seconds: int, rounds: int, part: float, cache_dir: Path) -> dict[str, object]:
    clip = make_clip(cache_dir / f"cenc_bench_1080p_{seconds}s.mp4", seconds)
    tracks, packets, duration = demux(clip)
    parts = split_parts(packets, part)
    key = ContentKey(kid=bytes(range(16)), key=bytes(range(16, 32)), iv=bytes(range(32, 48)))
    period = KeyPeriod("bench", 0, key)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    sizes: dict[str, int] = {}
    for _ in range(rounds):
        for mode in MODES:
            encryption = None if mode == "none" else CencEncryption(Protection(mode), period)
            start = time.process_time()
            writer = Fmp4Writer(tracks, encryption)
            total = len(writer.init_segment())
            for i, group in enumerate(parts):
                total += len(writer.fragment(group, i + 1))
            times[mode].append(time.process_time() - start)
            sizes[mode] = total
    base = statistics.median(times["none"])
    results = {}
    for mode in MODES:
        cpu = statistics.median(times[mode])
        results[mode] = {
            "cpu_s": round(cpu, 4),
            "cpu_per_media_s": round(cpu / duration, 5),
            "ratio": round(cpu / base, 2),
            "extra_core_percent": round(100 * (cpu - base) / duration, 2),
            "bytes": sizes[mode],
        }
    return {"media_seconds": round(duration, 2), "parts": len(parts), "rounds": rounds, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="clip length (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    parser.add_argument("--part", type=float, default=0.5, help="seconds of media per fragment (default 0.5)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "fanz-benchmark")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args.seconds, args.rounds, args.part, args.cache_dir)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['media_seconds']} s of 1080p30 H.264 + AAC, {report['parts']} fragments, "
          f"median of {report['rounds']} rounds (CPU of this process)")
    print(f"{'mode':6} {'CPU s':>8} {'CPU/media s':>12} {'vs none':>8} {'extra % of a core':>18}")
    results = report["results"]
    assert isinstance(results, dict)
    for mode, r in results.items():
        print(f"{mode:6} {r['cpu_s']:8.3f} {r['cpu_per_media_s']:12.5f} {r['ratio']:7.2f}x "
              f"{r['extra_core_percent']:17.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
