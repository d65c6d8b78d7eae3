"""``fanz-media effects`` through ``effects.cli.main``, with real files."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import av
import numpy as np

from effects.cli import main
from effects.registry import default_registry


def test_list_names_every_effect_and_option() -> None:
    out = io.StringIO()
    assert main(["list"], stdout=out) == 0
    text = out.getvalue()
    for info in default_registry():
        assert f"{info.name} ({info.kind.value})" in text
        for option in info.options:
            assert f"    {option.name} (" in text


def test_apply_writes_h264_aac_with_effects(tmp_path: Path, face_clip: Path, ffprobe: str) -> None:
    target = tmp_path / "out.mp4"
    out, err = io.StringIO(), io.StringIO()
    status = main(["apply", str(face_clip), str(target),
                   "--effect", "watermark:text=FANZ,position=bottom-right,colour=#ff0000,opacity=1",
                   "--effect", "voice:pitch=1.5"], stdout=out, stderr=err)
    assert status == 0, err.getvalue()
    probe = json.loads(subprocess.run(
        [ffprobe, "-v", "error", "-show_streams", "-of", "json", str(target)],
        check=True, capture_output=True, timeout=60).stdout)
    codecs = sorted(s["codec_name"] for s in probe["streams"])
    assert codecs == ["aac", "h264"]
    video = next(s for s in probe["streams"] if s["codec_name"] == "h264")
    assert int(video["nb_frames"]) == 10 and video["width"] == 640
    with av.open(str(target)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24").astype(int)
    corner = frame[280:350, 450:630]
    assert ((corner[..., 2] - corner[..., 1]) > 100).sum() > 100  # red text in the corner
    assert "wrote" in out.getvalue()


def test_apply_with_settings_file(tmp_path: Path, face_clip: Path) -> None:
    settings = tmp_path / "fx.json"
    settings.write_text(json.dumps({"effects": [{"effect": "color", "preset": "mono"}]}))
    target = tmp_path / "mono.mp4"
    assert main(["apply", str(face_clip), str(target), "--settings", str(settings)],
                stdout=io.StringIO()) == 0
    with av.open(str(target)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24").astype(int)
    assert np.abs(frame[..., 0] - frame[..., 2]).mean() < 3


def test_bad_option_exit_2(tmp_path: Path, face_clip: Path) -> None:
    err = io.StringIO()
    assert main(["apply", str(face_clip), str(tmp_path / "x.mp4"), "--effect", "voice:pitch=99"],
                stderr=err) == 2
    assert "above the maximum" in err.getvalue()
    assert main(["apply", str(face_clip), str(tmp_path / "x.mp4")], stderr=io.StringIO()) == 2
    assert main(["nonsense"], stderr=io.StringIO()) == 2


def test_unreadable_input_exit_1(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not media at all" * 10)
    err = io.StringIO()
    assert main(["apply", str(junk), str(tmp_path / "y.mp4"), "--effect", "color:preset=warm"], stderr=err) == 1
    assert "junk.mp4" in err.getvalue()
