"""Fixtures of the VOD tests: assets made by the real ``fanz-media
transcode`` and stored the way the engine keeps them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.storage import LocalStorage

ROOT = Path(__file__).resolve().parents[2]


def transcode_as_asset(source: Path, data_dir: Path, asset_id: str, work: Path) -> Path:
    """Run ``fanz-media transcode SOURCE OUT --asset ID`` with storage under
    ``data_dir``; the output folder."""
    config = work / "engine.toml"
    config.write_text(f'[server]\ndata_dir = "{data_dir}"\n')
    out = work / f"out-{asset_id}"
    done = subprocess.run(
        [sys.executable, "-m", "engine", "transcode", str(source), str(out), "--quiet", "--config", str(config),
         "--asset", asset_id],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"asset {asset_id}" in done.stdout.splitlines()
    return out


def recording_layout(transcoded: Path, storage: LocalStorage, recording_id: str) -> None:
    """Store a transcode output as the recorder writes a finished
    recording: ``recordings/ID/index.m3u8`` (multivariant), and per variant
    ``recordings/ID/VARIANT/media.m3u8`` (a VOD media playlist), its init
    segment and its segments. No DASH manifest: recordings have none."""
    for path in sorted(transcoded.rglob("*")):
        if path.is_file() and path.name != "manifest.mpd":
            storage.put_file(f"recordings/{recording_id}/{path.relative_to(transcoded).as_posix()}", path)


@pytest.fixture(scope="session")
def vod_clip(ffmpeg: str, media_dir: Path) -> Path:
    """8 s of 640x360 H.264 with AAC, a keyframe every 2 s."""
    from tests.conftest import make_clip

    return make_clip(ffmpeg, media_dir / "vod_clip.mp4", seconds=8)


@pytest.fixture(scope="session")
def transcoded(vod_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``fanz-media transcode`` output, stored as asset ``clip-one`` under
    its own data directory (copied per test by :func:`data_dir`)."""
    work = tmp_path_factory.mktemp("transcoded")
    transcode_as_asset(vod_clip, work / "data", "clip-one", work)
    return work / "data"


@pytest.fixture
def data_dir(transcoded: Path, tmp_path: Path) -> Path:
    """A data directory holding asset ``clip-one`` (this test's own copy)."""
    target = tmp_path / "data"
    shutil.copytree(transcoded, target)
    return target
