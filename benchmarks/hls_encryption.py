"""CPU cost of HLS encryption: packaging one live 1080p stream with each
scheme against the same stream clear, in the same run.

The 1080p30 clip (6 Mbit/s H.264, AAC; see :func:`benchmarks.common.make_source_clip`)
is demuxed once into the engine's packets; then the segmenter and muxers the
live packager uses cut it into 2 s segments with 0.5 s LL-HLS parts, for each
container and scheme in turn, round after round (schemes interleaved, so that
the machine's drift hits each alike). The figure is CPU seconds per second
of media, the median of the rounds, and each scheme's extra over ``none`` in
the same container. Files are not written: disk work is the same for every
scheme.

    .venv/bin/python -m benchmarks.hls_encryption [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from drm.model import ContentKey, KeyPeriod, Protection
from engine.media import Codec, Packet, StreamEnded, StreamStarted, Track
from packager.hls.config import SegmentFormat
from packager.hls.keys import SegmentProtection, key_uri_under
from packager.hls.muxers import muxer_factory
from packager.hls.segmenter import Segmenter

from .common import make_source_clip

_CODECS = {"h264": Codec.H264, "aac": Codec.AAC}
CASES = (
    (SegmentFormat.MPEGTS, Protection.NONE),
    (SegmentFormat.MPEGTS, Protection.AES_128),
    (SegmentFormat.MPEGTS, Protection.SAMPLE_AES),
    (SegmentFormat.FMP4, Protection.NONE),
    (SegmentFormat.FMP4, Protection.AES_128),
    (SegmentFormat.FMP4, Protection.CBCS),
    (SegmentFormat.FMP4, Protection.CENC),
)


def demux(path: Path) -> tuple[tuple[Track, ...], list[Packet], float]:
    tracks = []
    packets = []
    with av.open(str(path)) as container:
        for s in container.streams:
            assert s.time_base is not None
            ctx = s.codec_context
            track = Track(s.index, _CODECS[ctx.name], Fraction(s.time_base), bytes(ctx.extradata or b""))
            if isinstance(s, AudioStream):
                track = replace(track, sample_rate=s.codec_context.sample_rate)
            elif isinstance(s, VideoStream):
                track = replace(track, width=s.codec_context.width, height=s.codec_context.height)
            tracks.append(track)
        for p in container.demux():
            if p.size == 0 or p.pts is None or p.dts is None:
                continue
            packets.append(Packet(p.stream.index, p.pts, p.dts, Fraction(p.time_base), bytes(p), p.is_keyframe))
        duration = float(container.duration or 0) / av.time_base
    packets.sort(key=lambda p: (p.dts * p.time_base, p.track))
    return tuple(tracks), packets, duration


def package(tracks: tuple[Track, ...], packets: list[Packet], fmt: SegmentFormat, scheme: Protection) -> float:
    """CPU seconds to segment, mux and encrypt every packet."""
    key = ContentKey(bytes(16), bytes(range(16)), bytes(range(16, 32)))
    plan = None
    if scheme.encrypted:
        plan = SegmentProtection(scheme, lambda i: KeyPeriod("bench", i, key), key_uri_under("/keys", "bench"))
    segmenter = Segmenter(muxer_factory(fmt, scheme), Fraction(2), Fraction(12), part_target=Fraction(1, 2),
                          protection=plan)
    start = time.process_time()
    segmenter.feed(StreamStarted(tracks), 0.0)
    for packet in packets:
        segmenter.feed(packet, 0.0)
        segmenter.events()
    segmenter.feed(StreamEnded("done"), 0.0)
    segmenter.events()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10, help="length of the 1080p clip")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "fanz-benchmark")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg is not installed")
    clip = make_source_clip(ffmpeg, args.cache_dir, seconds=args.seconds)
    tracks, packets, duration = demux(clip)
    times: dict[tuple[SegmentFormat, Protection], list[float]] = {case: [] for case in CASES}
    for _ in range(args.rounds):
        for case in CASES:
            times[case].append(package(tracks, packets, *case) / duration)
    rows = []
    for (fmt, scheme), values in times.items():
        median = statistics.median(values)
        clear = statistics.median(times[(fmt, Protection.NONE)])
        rows.append({"container": fmt.value, "scheme": scheme.value, "cpu_s_per_media_s": round(median, 5),
                     "extra_percent": round(100 * (median - clear) / clear, 1)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{duration:.1f} s of 1080p30 6 Mbit/s H.264 + AAC, {args.rounds} rounds, medians")
    print(f"{'container':<10}{'scheme':<12}{'CPU s / media s':>17}{'extra vs none':>15}")
    for row in rows:
        print(f"{row['container']:<10}{row['scheme']:<12}{row['cpu_s_per_media_s']:>17.5f}{row['extra_percent']:>14.1f}%")


if __name__ == "__main__":
    main()
