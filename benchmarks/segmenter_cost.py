"""What the HLS segmenter itself costs per packet, muxing left out.

A synthetic 1080p30 + AAC publish as an RTMP ingest hands it over
(millisecond timestamps, 33/34 ms frame steps, a keyframe every 2 s, audio
packets of 1024 samples at 48 kHz interleaved a little ahead of the video)
is fed through :class:`~packager.hls.segmenter.Segmenter` with a muxer that
does nothing; the figure is the best of several runs, in microseconds per
packet. ``--reference`` runs the Fraction-arithmetic reference segmenter of
the test tree on the same stream (the segmenter before media times became
integers), so both figures come from one machine and one run.

    python -m benchmarks.segmenter_cost --packets 10000 --repeat 5 --reference
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from fractions import Fraction

from drm.model import KeyPeriod
from engine.media import Codec, Packet, StreamEnded, StreamItem, StreamStarted, Track
from packager.hls.keys import SegmentKey
from packager.hls.segmenter import Segmenter
from tests.packager.reference_segmenter import ReferenceSegmenter

MS = Fraction(1, 1000)
VIDEO = Track(0, Codec.H264, MS, b"\x01\x64\x00\x28", width=1920, height=1080, frame_rate=Fraction(30))
AUDIO = Track(1, Codec.AAC, MS, b"\x11\x90", sample_rate=48000, channels=2)


class NullMuxer:
    """Muxes nothing: only the segmenter's own work is measured."""

    extension = ".m4s"

    def init_segment(self) -> bytes | None:
        return b""

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        return b""


def null_factory(tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> NullMuxer:
    return NullMuxer()


def publish(packets: int) -> list[StreamItem]:
    """About ``packets`` packets of 1080p30 video and 48 kHz AAC."""
    seconds = packets / (30 + 48000 / 1024)
    video = [
        (i * 1000 // 30, Packet(0, i * 1000 // 30 + 66, i * 1000 // 30, MS, b"v" * 20000, keyframe=i % 60 == 0))
        for i in range(int(seconds * 30))
    ]
    audio = [
        (j * 1024 * 1000 // 48000 - 40, Packet(1, j * 1024 * 1000 // 48000, j * 1024 * 1000 // 48000, MS, b"a" * 400))
        for j in range(int(seconds * 48000 / 1024))
    ]
    ordered = sorted(video + audio, key=lambda item: (item[0], item[1].track))
    return [StreamStarted((VIDEO, AUDIO)), *(p for _, p in ordered), StreamEnded("done")]


def cost(make: Callable[[], Segmenter | ReferenceSegmenter], items: list[StreamItem], repeat: int) -> float:
    """Best of ``repeat`` runs, microseconds per packet."""
    count = sum(1 for item in items if isinstance(item, Packet))
    best = float("inf")
    for _ in range(repeat):
        segmenter = make()
        started = time.perf_counter()
        for item in items:
            segmenter.feed(item, 0.0)
            segmenter.events()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference", action="store_true", help="also time the Fraction reference segmenter")
    args = parser.parse_args()
    items = publish(args.packets)
    count = sum(1 for item in items if isinstance(item, Packet))
    makers: dict[str, Callable[[Fraction | None], Callable[[], Segmenter | ReferenceSegmenter]]] = {
        "integer": lambda part: lambda: Segmenter(null_factory, Fraction(2), Fraction(6), part_target=part)
    }
    if args.reference:
        makers["fraction (reference)"] = lambda part: (
            lambda: ReferenceSegmenter(null_factory, Fraction(2), Fraction(6), part_target=part)
        )
    print(f"{count} packets, best of {args.repeat}")
    for part in (None, Fraction(1, 2)):
        for name, maker in makers.items():
            label = "no parts" if part is None else f"parts of {part} s"
            print(f"{name:>22}, {label:>14}: {cost(maker(part), items, args.repeat):6.2f} us/packet")


if __name__ == "__main__":
    main()
