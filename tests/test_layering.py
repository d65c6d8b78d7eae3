"""The package layering: the media model stands alone, the config is light,
and the optional extras are optional.

Each import check runs in a fresh interpreter, so that nothing another test
imported can hide a heavy import.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port, publish

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("av", "numpy", "cv2", "aiortc", "aioice", "onnxruntime", "PIL")
PROJECT_PACKAGES = {
    "engine", "ingest", "transcode", "packager", "webrtc", "drm", "effects", "cluster", "control_api", "benchmarks",
}
MODEL_FILES = ("media.py", "registry.py", "auth.py", "errors.py", "settings.py", "metrics.py")


def _loaded_after(code: str) -> list[str]:
    """The heavy libraries in ``sys.modules`` after running ``code`` in a
    new interpreter with this checkout first on the path."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_media_model_loads_no_media_library() -> None:
    assert _loaded_after("import engine.media, engine.registry") == []


def test_loading_the_config_loads_no_media_library(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(
        '[effects]\ndefault = ["watermark:text=FANZ,position=bottom-right"]\n'
        'streams = { alice = ["face_privacy:mode=pixelate", "voice:pitch=1.5"] }\n'
    )
    code = (
        "from engine.app.config import load_config\n"
        f"cfg = load_config({str(config)!r}, env={{}})\n"
        "assert cfg.effects.specs_for('alice')[0].startswith('face_privacy')\n"
    )
    assert _loaded_after(code) == []


def test_the_control_api_loads_no_image_library() -> None:
    # Its effect settings schema comes from the effects' metadata alone.
    loaded = _loaded_after("import control_api.app, control_api.schemas")
    assert not {"cv2", "PIL", "aiortc", "onnxruntime"} & set(loaded)


def test_a_bad_effect_is_still_refused_when_the_config_loads(tmp_path: Path) -> None:
    from engine.app.config import load_config
    from engine.errors import ConfigError

    for spec in ("nosuch:x=1", "watermark:opacity=7", "face_privacy:mode=smudge"):
        config = tmp_path / "bad.toml"
        config.write_text(f'[effects]\ndefault = ["{spec}"]\n')
        with pytest.raises(ConfigError, match="effects"):
            load_config(config, env={})


def _project_imports(path: Path) -> set[str]:
    """Top-level project packages that ``path`` imports, at any depth of the
    module (imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.partition(".")[0]
            if top in PROJECT_PACKAGES:
                found.add(name if top != "engine" else ".".join(name.split(".")[:2]))
    return found


def test_the_media_model_imports_no_other_package_of_the_project() -> None:
    engine_dir = ROOT / "engine"
    files = [engine_dir / name for name in MODEL_FILES] + sorted((engine_dir / "codecs").rglob("*.py"))
    allowed = {"engine.media", "engine.registry", "engine.codecs", "engine.auth", "engine.errors", "engine.settings",
               "engine.metrics"}
    offenders = {}
    for path in files:
        assert path.exists(), path
        bad = {name for name in _project_imports(path) if name not in allowed}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_extras_hold_what_only_their_features_use() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {r.split(";")[0].split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for r in requirements}

    core = names(project["dependencies"])
    extras = {extra: names(reqs) for extra, reqs in project["optional-dependencies"].items()}
    assert not {"onnxruntime", "redis", "boto3", "aioquic", "aiortc", "opencv-python-headless", "pillow"} & core
    assert {"aiortc", "aioice"} <= extras["webrtc"]
    assert {"opencv-python-headless", "pillow"} <= extras["effects"]
    assert "onnxruntime" in extras["classification"]
    assert {"redis", "boto3"} <= extras["cluster"]
    assert "aioquic" in extras["http3"]


# -- serve without the optional extras ----------------------------------------------

_MISSING = ("cv2", "PIL", "aiortc", "aioice", "onnxruntime")


def _hide_extras(directory: Path) -> Path:
    """A directory of packages that shadow the extras' libraries and fail
    to import as a missing library does."""
    for name in _MISSING:
        package = directory / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n"
        )
    return directory


def test_the_hidden_extras_cannot_be_imported(tmp_path: Path) -> None:
    hidden = _hide_extras(tmp_path / "hidden")
    env = {**os.environ, "PYTHONPATH": f"{hidden}{os.pathsep}{ROOT}"}
    for name in _MISSING:
        result = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True, timeout=60)
        assert result.returncode != 0 and b"ModuleNotFoundError" in result.stderr


@pytest.mark.slow
async def test_serve_dev_without_extras_serves_hls_and_says_what_is_off(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path
) -> None:
    hidden = _hide_extras(tmp_path / "hidden")
    rtmp_port, http_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": f"{hidden}{os.pathsep}{ROOT}", "FANZ_HTTP_API": "false"}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:  # noqa: ASYNC230 (a local file, opened once)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine", "serve", "--dev", "--host", "127.0.0.1",
            "--data-dir", str(tmp_path / "data"), "--rtmp-port", str(rtmp_port), "--http-port", str(http_port),
            env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{http_port}"
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    assert proc.returncode is None, log_path.read_text()
                    try:
                        async with http.get(f"{base}/ready") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"serve did not get ready:\n{log_path.read_text()}")
                pub = await publish(ffmpeg, h264_aac_flv, f"rtmp://127.0.0.1:{rtmp_port}/live/nocv")
                playlist = ""
                for _ in range(300):
                    async with http.get(f"{base}/hls/nocv/index.m3u8") as resp:
                        if resp.status == 200:
                            playlist = await resp.text()
                            if "#EXT-X-STREAM-INF" in playlist:
                                break
                    await asyncio.sleep(0.1)
                assert "#EXT-X-STREAM-INF" in playlist, log_path.read_text()
                variant = next(line for line in playlist.splitlines() if line and not line.startswith("#"))
                media_url = f"{base}/hls/nocv/{variant}"
                segment = ""
                for _ in range(300):
                    async with http.get(media_url) as resp:
                        if resp.status == 200:
                            media = await resp.text()
                            segment = next((x for x in media.splitlines() if x and not x.startswith("#")), "")
                            if segment:
                                break
                    await asyncio.sleep(0.1)
                assert segment, log_path.read_text()
                async with http.get(media_url.rsplit("/", 1)[0] + "/" + segment) as resp:
                    assert resp.status == 200
                    assert len(await resp.read()) > 1000
                async with http.post(f"{base}/whep/nocv", data="v=0\r\n") as resp:
                    assert resp.status == 404  # no WebRTC routes on this node
                await pub.wait()
        finally:
            if proc.returncode is None:
                proc.terminate()
                await asyncio.wait_for(proc.wait(), 30)
    log = log_path.read_text()
    assert "effects: off (cv2 is not installed; install the [effects] extra" in log, log
    assert re.search(r"webrtc: off \((aiortc|aioice) is not installed; install the \[webrtc\] extra", log), log
    assert "Traceback" not in log, log


_VIDEO_CODECS = {"libx264", "h264", "hevc", "vp8", "vp9", "libdav1d", "av1", "h264_nvenc", "h264_qsv"}


def test_video_is_decoded_and_encoded_only_by_the_transcoder() -> None:
    """One decode/encode pipeline: outside ``transcode/`` no module opens a
    video codec context of its own (the effects CLI writes files; it is
    the one exception)."""
    offenders = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in PROJECT_PACKAGES - {"transcode", "benchmarks"} or rel == Path("effects/cli.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "create"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in _VIDEO_CODECS
            ):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


def test_one_gop_cache() -> None:
    """The registry's :class:`GopCache` is the only cache of a group of
    pictures: WebRTC keeps its ready-to-send packets in one too."""
    from engine.registry import GopCache

    source = (ROOT / "webrtc" / "hub.py").read_text()
    assert "GopCache" in source and "GOP_CACHE_LIMIT" not in source
    assert GopCache.__module__ == "engine.registry"


def test_an_effect_file_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    """Loading the config checks specs against the light catalog; the files
    an effect opens are checked when the feature starts, before any stream."""
    from engine.app.config import load_config
    from engine.app.serve import Engine
    from engine.errors import ConfigError

    config = load_config(None, env={}).with_overrides(
        server={"data_dir": tmp_path, "dev": True},
        http={"api": False},
        effects={"default": [f"color:lut={tmp_path / 'missing.cube'}"]},
    )
    with pytest.raises(ConfigError, match=r"missing\.cube"):
        Engine(config)


_CORE_OF_EXTRAS = {
    # Modules of the optional features that the core loads: their metadata and config sections.
    "effects": {"__init__.py", "catalog.py", "options.py", "errors.py", "config.py"},
    "webrtc": {"config.py"},
}
_EXTRA_ONLY = {
    # Modules of core packages that the core imports only when their extra is installed (engine/app/features.py).
    "cluster/storage/s3.py",
}


def test_what_the_core_imports_is_installed_without_extras() -> None:
    """``pip install .`` without extras must run ``serve``: every outside
    library that a core module imports is a core dependency."""
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {
        r.split(";")[0].split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower().replace("_", "-")
        for r in project["dependencies"]
    }
    dists = packages_distributions()
    missing: dict[str, set[str]] = {}
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT)
        top = rel.parts[0]
        if top not in PROJECT_PACKAGES - {"benchmarks"}:
            continue
        if top in _CORE_OF_EXTRAS and (len(rel.parts) != 2 or rel.parts[1] not in _CORE_OF_EXTRAS[top]):
            continue
        if rel.as_posix() in _EXTRA_ONLY:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:  # module-level imports: what importing the module needs
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                module = name.partition(".")[0]
                if module in PROJECT_PACKAGES or module in sys.stdlib_module_names:
                    continue
                owners = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
                if not owners & core:
                    missing.setdefault(str(rel), set()).add(module)
    assert missing == {}


def test_the_effects_command_without_its_extra_says_so(tmp_path: Path) -> None:
    hidden = _hide_extras(tmp_path / "hidden")
    env = {**os.environ, "PYTHONPATH": f"{hidden}{os.pathsep}{ROOT}"}
    result = subprocess.run(
        [sys.executable, "-m", "engine", "effects", "list"], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "effects: off (cv2 is not installed; install the [effects] extra" in result.stderr
    assert "Traceback" not in result.stderr
