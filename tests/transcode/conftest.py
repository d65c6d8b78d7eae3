"""Fixtures for the transcode tests: a tiny clip and a tiny ladder."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

from engine.media import Codec, Packet, Track
from tests.conftest import make_clip
from transcode.encoders import EncoderProbe, probe_encoders
from transcode.ladder import LadderConfig, RungConfig


@pytest.fixture(scope="session")
def clip(ffmpeg: str, media_dir: Path) -> Path:
    """3 s of 640x360 30 fps H.264 with a keyframe every second (B-frames)
    and stereo AAC, in MP4."""
    return make_clip(ffmpeg, media_dir / "tc_640x360_3s.mp4", seconds=3, gop_seconds=1)


@pytest.fixture(scope="session")
def probe() -> EncoderProbe:
    return probe_encoders()


def small_ladder(**changes: object) -> LadderConfig:
    """A 288p/240p ladder with the source passed through, fast to encode (a
    rung as tall as the 360p test clip would be left out beside its
    passthrough)."""
    base: dict[str, object] = {
        "name": "test",
        "rungs": (
            RungConfig("288p", 288, 600_000, profile="main"),
            RungConfig("240p", 240, 300_000, profile="main", max_frame_rate=Fraction(15)),
        ),
        "x264_preset": "ultrafast",
        "bframes": 2,
    }
    base.update(changes)
    return LadderConfig(**base)  # type: ignore[arg-type]


def model_packets(path: Path) -> tuple[tuple[Track, ...], list[Packet]]:
    """The file's first video and audio streams as model tracks and packets,
    as an ingest would write them (AVCC, 1/1000 time base like RTMP)."""
    tb = Fraction(1, 1000)
    with av.open(str(path)) as container:
        v = container.streams.video[0]
        a = container.streams.audio[0]
        tracks = (
            Track(
                0,
                Codec.H264,
                tb,
                bytes(v.codec_context.extradata or b""),
                width=v.width,
                height=v.height,
                frame_rate=Fraction(30),
            ),
            Track(1, Codec.AAC, tb, bytes(a.codec_context.extradata or b""), sample_rate=a.sample_rate, channels=2),
        )
        packets = []
        for p in container.demux(v, a):
            if p.size == 0 or p.pts is None or p.dts is None:
                continue
            index = 0 if p.stream.type == "video" else 1
            src_tb = p.time_base
            assert src_tb is not None
            pts = round(p.pts * src_tb / tb)
            dts = round(p.dts * src_tb / tb)
            packets.append(Packet(index, pts, dts, tb, bytes(p), bool(p.is_keyframe)))
    packets.sort(key=lambda x: (x.dts, x.track))
    return tracks, packets
