"""Fixtures shared by the whole suite.

Media fixtures are made by the real ``ffmpeg`` at test time (cached per
session) rather than committed as binaries.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run the README's test command, which installs it")
    return path


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return _require("ffmpeg")


@pytest.fixture(scope="session")
def ffprobe() -> str:
    return _require("ffprobe")


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on loopback (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port_factory() -> Callable[[], int]:
    return free_port


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


def make_clip(
    ffmpeg: str,
    out: Path,
    seconds: int = 6,
    size: str = "640x360",
    rate: int = 30,
    gop_seconds: int = 2,
    bframes: int = 2,
    video_codec: str = "libx264",
    audio: bool = True,
    extra: list[str] | None = None,
) -> Path:
    """Encode a test pattern with a tone, like OBS does: libx264 and AAC with a
    fixed keyframe interval."""
    if out.exists():
        return out
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
    ]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    cmd += ["-c:v", video_codec, "-pix_fmt", "yuv420p", "-g", str(rate * gop_seconds), "-keyint_min", str(rate * gop_seconds),
            "-sc_threshold", "0"]
    if video_codec == "libx264":
        cmd += ["-preset", "veryfast", "-bf", str(bframes), "-b:v", "1500k"]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"]
    cmd += extra or []
    cmd.append(str(out))
    subprocess.run(cmd, check=True, timeout=120)
    return out


@pytest.fixture(scope="session")
def h264_aac_flv(ffmpeg: str, media_dir: Path) -> Path:
    """6 s of 640x360 30 fps H.264 (B-frames, 2 s GOP) with stereo AAC, in FLV."""
    return make_clip(ffmpeg, media_dir / "h264_aac.flv")


@pytest.fixture(scope="session")
def h264_aac_mp4(ffmpeg: str, media_dir: Path) -> Path:
    """The same as ``h264_aac_flv`` in MP4."""
    return make_clip(ffmpeg, media_dir / "h264_aac.mp4")
