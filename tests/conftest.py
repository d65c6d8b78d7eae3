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

# Import the real packages before pytest collects tests/control_api: with
# --import-mode=importlib it would otherwise register that test folder under
# the name ``control_api`` and resolve ``control_api.*`` imports elsewhere.
import control_api  # noqa: F401


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
    gop = str(rate * gop_seconds)
    cmd += ["-c:v", video_codec, "-pix_fmt", "yuv420p", "-g", gop, "-keyint_min", gop, "-sc_threshold", "0"]
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


# -- a running engine -----------------------------------------------------
import asyncio  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402


async def start_engine(data_dir: Path, **sections: dict[str, object]):  # type: ignore[no-untyped-def]
    """Start an engine in this event loop on OS-chosen loopback ports."""
    from engine.app.config import load_config
    from engine.app.serve import Engine

    base: dict[str, dict[str, object]] = {
        "server": {"data_dir": data_dir, "dev": True, "host": "127.0.0.1"},
        "rtmp": {"port": 0},
        "http": {"port": 0, "api": False},
        "streams": {"reconnect_grace_s": 2.0},
        "transcode": {"enabled": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    config = load_config(None, env={}).with_overrides(**base)
    engine = Engine(config)
    await engine.start()
    return engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[object]:
    eng = await start_engine(tmp_path / "data")
    try:
        yield eng
    finally:
        await eng.stop()


async def publish(
    ffmpeg: str, source: Path, url: str, *, realtime: bool = True, extra: list[str] | None = None
) -> asyncio.subprocess.Process:
    """Publish ``source`` to ``url`` with the real ffmpeg CLI, copying codecs."""
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        cmd.append("-re")
    cmd += ["-i", str(source), "-c", "copy", *(extra or []), "-f", "flv", url]
    return await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


async def wait_for(predicate, timeout: float, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
