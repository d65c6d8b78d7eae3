"""CPU cost of DRM end to end: one live 1080p stream packaged by the engine
with each scheme, and a VOD ladder with and without ``cbcs``, in the same run.

Live: the engine runs in this process (``--dev``, transcoding off, a fresh
data dir, one engine per container); ffmpeg publishes the 1080p30 clip
(6 Mbit/s H.264 + AAC, see :func:`benchmarks.common.make_source_clip`) over
RTMP as fast as the engine takes it (``-c copy``, no ``-re``), and the figure
is this process's CPU time (every thread: RTMP, segmenter, muxing,
encryption, disk writes) from the publish until the stream's last playlist
is on disk, per second of media. Each stream's scheme is set in its record
(the ``protection`` setting the control API sets), so every scheme runs on
the same engine; schemes are interleaved round after round so the machine's
drift hits each alike. Ratios are against ``none`` in the same container.

VOD: ``fanz-media transcode``'s pipeline (:func:`engine.app.transcode_command.run`:
decode once, the ladder's encoders, the VOD HLS writer, disk), clear and
``cbcs``, alternated, CPU of this process per second of media.

    .venv/bin/python -m benchmarks.drm_packaging [--rounds 3] [--seconds 10] [--vod-seconds 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from drm.model import Protection
from drm.setup import open_key_provider
from engine.app.config import load_config
from engine.app.protection import ProtectionPolicy
from engine.app.serve import Engine
from engine.app.transcode_command import run as transcode
from packager.hls.config import HlsConfig, SegmentFormat

from .common import make_source_clip

LIVE_CASES = (
    (SegmentFormat.FMP4, Protection.NONE),
    (SegmentFormat.FMP4, Protection.AES_128),
    (SegmentFormat.FMP4, Protection.SAMPLE_AES),  # cbcs in CMAF
    (SegmentFormat.FMP4, Protection.CBCS),
    (SegmentFormat.FMP4, Protection.CENC),
    (SegmentFormat.MPEGTS, Protection.NONE),
    (SegmentFormat.MPEGTS, Protection.AES_128),
    (SegmentFormat.MPEGTS, Protection.SAMPLE_AES),
)


async def start(data_dir: Path, fmt: SegmentFormat) -> Engine:
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": data_dir, "dev": True, "host": "127.0.0.1", "log_level": "warning"},
        rtmp={"port": 0}, http={"port": 0, "api": False}, transcode={"enabled": False},
        streams={"reconnect_grace_s": 0.0}, hls={"segment_format": fmt},
    )
    engine = Engine(config)
    await engine.start()
    return engine


async def package_live(engine: Engine, ffmpeg: str, clip: Path, name: str, scheme: Protection) -> float:
    """CPU seconds this process spends packaging ``clip`` as stream ``name``."""
    assert engine.rtmp is not None
    engine.registry.configure(name, "protection", scheme.value)
    playlist = engine.hls.root / name / "src" / "media.m3u8"
    begin = time.process_time()
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(clip), "-c", "copy", "-f", "flv",
        f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{name}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ffmpeg failed: {err.decode()[-500:]}")
    deadline = time.monotonic() + 60
    while not (playlist.exists() and "#EXT-X-ENDLIST" in playlist.read_text()):
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: the last playlist never reached the disk")
        await asyncio.sleep(0.02)
    spent = time.process_time() - begin
    if ("#EXT-X-KEY:METHOD=" in playlist.read_text()) is not scheme.encrypted:
        raise SystemExit(f"{name}: not packaged with {scheme.value}")
    return spent


async def live(ffmpeg: str, clip: Path, duration: float, rounds: int, work: Path) -> list[dict[str, object]]:
    engines = {fmt: await start(work / f"live-{fmt.value}", fmt) for fmt in {f for f, _ in LIVE_CASES}}
    times: dict[tuple[SegmentFormat, Protection], list[float]] = {case: [] for case in LIVE_CASES}
    try:
        for n in range(rounds):
            for fmt, scheme in LIVE_CASES:
                name = f"r{n}-{fmt.value}-{scheme.value}"
                times[(fmt, scheme)].append(await package_live(engines[fmt], ffmpeg, clip, name, scheme) / duration)
    finally:
        for engine in engines.values():
            await engine.stop()
    rows: list[dict[str, object]] = []
    for (fmt, scheme), values in times.items():
        median = statistics.median(values)
        clear = statistics.median(times[(fmt, Protection.NONE)])
        rows.append({"container": fmt.value, "scheme": scheme.value, "cpu_s_per_media_s": round(median, 4),
                     "ratio_vs_none": round(median / clear, 3)})
    return rows


def vod(clip: Path, duration: float, rounds: int, work: Path) -> list[dict[str, object]]:
    config = load_config(None, env={})
    ladder = config.transcode.all_ladders()["default"]
    provider = open_key_provider(config.drm, work / "vod-data")
    hls = HlsConfig(segment_format=SegmentFormat.FMP4)
    times: dict[Protection, list[float]] = {Protection.NONE: [], Protection.CBCS: []}
    for n in range(rounds):
        for scheme in times:
            plan = ProtectionPolicy(provider=provider).plan(f"asset-{n}-{scheme.value}", scheme)
            out = work / f"vod-{n}-{scheme.value}"
            begin = time.process_time()
            transcode(clip, out, ladder, "libx264", quiet=True, hls=hls, protection=plan)
            times[scheme].append((time.process_time() - begin) / duration)
            shutil.rmtree(out)
    clear = statistics.median(times[Protection.NONE])
    return [{"ladder": ladder.name, "scheme": s.value, "cpu_s_per_media_s": round(statistics.median(v), 3),
             "ratio_vs_none": round(statistics.median(v) / clear, 3)} for s, v in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of the live 1080p clip")
    parser.add_argument("--vod-seconds", type=int, default=4, help="length of the VOD 1080p clip")
    parser.add_argument("--vod-rounds", type=int, default=2)
    parser.add_argument("--skip-vod", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "fanz-benchmark")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg is not installed")
    clip = make_source_clip(ffmpeg, args.cache_dir, seconds=args.seconds)
    with tempfile.TemporaryDirectory(prefix="fanz-drm-bench-") as tmp:
        work = Path(tmp)
        live_rows = asyncio.run(live(ffmpeg, clip, float(args.seconds), args.rounds, work))
        vod_rows: list[dict[str, object]] = []
        if not args.skip_vod:
            vod_clip = make_source_clip(ffmpeg, args.cache_dir, seconds=args.vod_seconds)
            vod_rows = vod(vod_clip, float(args.vod_seconds), args.vod_rounds, work)
    if args.json:
        print(json.dumps({"live": live_rows, "vod": vod_rows}, indent=2))
        return
    print(f"live: {args.seconds} s of 1080p30 6 Mbit/s H.264 + AAC over RTMP, {args.rounds} rounds, medians")
    print(f"{'container':<10}{'scheme':<12}{'CPU s / media s':>17}{'x none':>9}")
    for row in live_rows:
        print(f"{row['container']!s:<10}{row['scheme']!s:<12}{row['cpu_s_per_media_s']!s:>17}"
              f"{row['ratio_vs_none']!s:>9}")
    for row in vod_rows:
        print(f"vod ladder {row['ladder']} {row['scheme']:<6} CPU s / media s {row['cpu_s_per_media_s']}"
              f"  x none {row['ratio_vs_none']}")


if __name__ == "__main__":
    main()
