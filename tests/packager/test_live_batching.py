"""The live packager keeps packets on the event loop until one closes a
part or a segment, and the files it writes are still exactly what a
segmenter fed every item at once makes."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path

from engine.media import MediaKind, StreamEnded, StreamStarted
from engine.registry import StreamRegistry
from packager.hls.config import HlsConfig
from packager.hls.disk import LocalDisk
from packager.hls.live import HlsService
from packager.hls.muxers import muxer_factory
from packager.hls.segmenter import Segmenter, SegmentReady
from tests.conftest import make_clip, wait_for
from tests.packager.test_fmp4 import demux


class RecordingDisk(LocalDisk):
    """The local disk, remembering every media segment written."""

    def __init__(self) -> None:
        self.segments: list[bytes] = []

    def write(self, path: Path, data: bytes) -> None:
        if path.suffix == ".m4s":
            self.segments.append(data)
        super().write(path, data)


async def test_jobs_leave_the_loop_when_a_part_closes(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    clip = make_clip(ffmpeg, media_dir / "batching.flv", seconds=4, size="320x180", gop_seconds=1)
    tracks, packets = demux(clip)
    config = HlsConfig()
    assert config.low_latency
    registry = StreamRegistry(grace_s=0)
    disk = RecordingDisk()
    hls = HlsService(config, tmp_path / "hls", registry, disk=disk)
    try:
        publisher = registry.claim("batched")
        publisher.start(tuple(tracks))
        stream = registry.get("batched")
        assert stream is not None
        described = stream.tracks
        for packet in packets:
            publisher.write(packet)
            await asyncio.sleep(0)
        publisher.close()
        output = hls.outputs["batched"]
        await wait_for(lambda: output.ended, 30)

        reference = Segmenter(
            muxer_factory(config.segment_format),
            Fraction(config.target_duration_s),
            Fraction(config.max_segment_s),
            part_target=output.part_target,
        )
        reference.feed(StreamStarted(described), 0.0)
        for packet in packets:
            reference.feed(packet, 0.0)
        reference.feed(StreamEnded(""), 0.0)
        expected = [e.data for e in reference.events() if isinstance(e, SegmentReady)]
        assert len(expected) >= 2
        assert disk.segments == expected

        # Far fewer jobs than video packets: each woke a worker thread once.
        video = sum(1 for p in packets if described[p.track].kind is MediaKind.VIDEO)
        assert output.queue.submitted < video / 2
    finally:
        await hls.close()
