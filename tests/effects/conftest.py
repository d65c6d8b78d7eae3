"""Fixtures for the effects tests: clips made by the real ffmpeg at test
time, and decoded frames from them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import cv2
import pytest

from effects.models import ModelStore


@pytest.fixture(scope="session")
def models() -> ModelStore:
    return ModelStore()


@pytest.fixture(scope="session")
def face_png(media_dir: Path) -> Path:
    """scikit-image's astronaut photo (a real face, shipped in its wheel)."""
    data = pytest.importorskip("skimage.data")
    path = media_dir / "astronaut.png"
    if not path.exists():
        cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="session")
def face_clip(ffmpeg: str, media_dir: Path, face_png: Path) -> Path:
    """1 s of 640x360 at 10 fps: the photo, scaled and padded to 16:9 and
    panning slowly, with a 220 Hz tone, in H.264 + AAC."""
    out = media_dir / "face.mp4"
    if not out.exists():
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
             "-loop", "1", "-framerate", "10", "-i", str(face_png),
             "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=48000:duration=1",
             "-filter_complex",
             "color=c=0x405060:s=640x360:r=10:d=1[bg];[0:v]scale=360:360[fg];"
             "[bg][fg]overlay=x='140+t*20':y=0:shortest=1,format=yuv420p[v]",
             "-map", "[v]", "-map", "1:a", "-t", "1", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
             "-c:a", "aac", "-ar", "48000", "-ac", "2", str(out)],
            check=True, timeout=120,
        )
    return out


@pytest.fixture(scope="session")
def tone_clip(ffmpeg: str, media_dir: Path) -> Path:
    """1 s of 320x180 test pattern with a 220 Hz tone (AAC, 48 kHz stereo)."""
    out = media_dir / "tone220.mp4"
    if not out.exists():
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=10:duration=1",
             "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=48000:duration=1",
             "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "192k", "-ar", "48000", "-ac", "2", str(out)],
            check=True, timeout=120,
        )
    return out


@pytest.fixture(scope="session")
def face_frames(face_clip: Path) -> list[av.VideoFrame]:
    with av.open(str(face_clip)) as container:
        return list(container.decode(video=0))
