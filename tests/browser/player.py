"""Python side of the browser playback harness.

Tests call :func:`play_hls` (or :func:`play_hls_async` from inside an event
loop that also serves the stream) to play an HLS URL in Debian's headless
Chromium with hls.js, Shaka Player or the native player (or a DASH manifest
with Shaka Player or dash.js), and get a
:class:`PlaybackReport` back. A playback failure is a report with
``ok=False`` and the player's errors, so tests can assert on it; only a
harness that cannot run or answers nonsense raises :class:`HarnessError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

HARNESS_DIR = Path(__file__).resolve().parent
PLAY_SCRIPT = HARNESS_DIR / "play.mjs"
CHROMIUM_PATH = Path("/usr/bin/chromium")
NODE_PACKAGES = ("playwright-core", "hls.js", "shaka-player", "dashjs")
# Time the node process gets beyond the playback timeout: browser start and
# shutdown, which play.mjs counts inside its own timeout only partly.
_PROCESS_MARGIN_S = 30.0
_NPM_TIMEOUT_S = 300.0

Player = Literal["hlsjs", "shaka", "dashjs", "native"]


class HarnessError(Exception):
    """Base of the harness's errors: the harness itself could not do its job."""


class BrowserSetupError(HarnessError):
    """Chromium, node or the npm packages are missing and cannot be installed."""


class HarnessOutputError(HarnessError, ValueError):
    """play.mjs printed something that is not a playback report."""


class HarnessTimeoutError(HarnessError, TimeoutError):
    """play.mjs overran its own timeout and was killed."""


@dataclass(frozen=True)
class Level:
    """One variant the player saw in the playlist (None when not signalled)."""

    width: int | None
    height: int | None
    bitrate: int | None
    codecs: str


@dataclass(frozen=True)
class PlaybackReport:
    """What one playback did; ``ok`` is true when it played ``min_time``
    seconds of media without a fatal error (and switched level when asked)."""

    ok: bool
    url: str
    player: str
    player_version: str | None
    browser_version: str | None
    current_time: float
    played_time: float
    levels: tuple[Level, ...]
    current_level: int | None
    level_switched: bool
    video_width: int
    video_height: int
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    stalls: int
    stalls_after_switch: int
    dropped_frames: int | None
    decoded_frames: int | None
    latency: float | None
    pdt_latency: float | None
    elapsed: float
    raw: Mapping[str, Any] = field(repr=False, compare=False)


def _field(data: Mapping[str, Any], key: str, kinds: tuple[type, ...], *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    # bool is an int subclass: never accept it where a number is wanted.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise HarnessOutputError(f"report field {key!r} is {value!r}, wanted {'/'.join(k.__name__ for k in kinds)}")
    return value


def _level(item: Any) -> Level:
    if not isinstance(item, Mapping):
        raise HarnessOutputError(f"level entry is {item!r}, wanted an object")
    return Level(
        width=_field(item, "width", (int,), optional=True),
        height=_field(item, "height", (int,), optional=True),
        bitrate=_field(item, "bitrate", (int,), optional=True),
        codecs=_field(item, "codecs", (str,)),
    )


def _strings(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    items = _field(data, key, (list,))
    if not all(isinstance(i, str) for i in items):
        raise HarnessOutputError(f"report field {key!r} holds non-strings")
    return tuple(items)


def parse_report(stdout: str) -> PlaybackReport:
    """Reads the last JSON line that play.mjs printed; raises
    :class:`HarnessOutputError` when there is none or it is malformed."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise HarnessOutputError("play.mjs printed no report")
    try:
        data = json.loads(lines[-1])
    except ValueError as exc:
        raise HarnessOutputError(f"play.mjs printed a line that is not JSON: {lines[-1][:200]!r}") from exc
    if not isinstance(data, dict):
        raise HarnessOutputError(f"report is {type(data).__name__}, wanted an object")
    number = (int, float)
    levels = _field(data, "levels", (list,))
    return PlaybackReport(
        ok=_field(data, "ok", (bool,)),
        url=_field(data, "url", (str,)),
        player=_field(data, "player", (str,)),
        player_version=_field(data, "playerVersion", (str,), optional=True),
        browser_version=_field(data, "browserVersion", (str,), optional=True),
        current_time=float(_field(data, "currentTime", number)),
        played_time=float(_field(data, "playedTime", number)),
        levels=tuple(_level(item) for item in levels),
        current_level=_field(data, "currentLevel", (int,), optional=True),
        level_switched=_field(data, "levelSwitched", (bool,)),
        video_width=_field(data, "videoWidth", (int,)),
        video_height=_field(data, "videoHeight", (int,)),
        errors=_strings(data, "errors"),
        warnings=_strings(data, "warnings"),
        stalls=_field(data, "stalls", (int,)),
        stalls_after_switch=_field(data, "stallsAfterSwitch", (int,)),
        dropped_frames=_field(data, "droppedFrames", (int,), optional=True),
        decoded_frames=_field(data, "decodedFrames", (int,), optional=True),
        latency=_optional_float(_field(data, "latency", number, optional=True)),
        pdt_latency=_optional_float(_field(data, "pdtLatency", number, optional=True)),
        elapsed=float(_field(data, "elapsed", number)),
        raw=data,
    )


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise BrowserSetupError("node is not installed (Debian: apt-get install nodejs npm)")
    return node


def ensure_browser_deps(harness_dir: Path = HARNESS_DIR) -> None:
    """Makes sure Chromium, node and the pinned npm packages are there,
    running ``npm ci`` once when node_modules is missing. Never downloads a
    browser: the harness uses Debian's /usr/bin/chromium."""
    if not CHROMIUM_PATH.exists():
        raise BrowserSetupError(f"{CHROMIUM_PATH} is missing: install Debian's chromium package")
    _node()
    if _packages_present(harness_dir):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BrowserSetupError("npm is not installed (Debian: apt-get install npm)")
    # Parallel test workers may all get here: one runs npm ci, the others wait.
    lock_path = Path(tempfile.gettempdir()) / "fanz-browser-harness-npm.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _packages_present(harness_dir):
            return
        env = {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
        try:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=harness_dir, env=env, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrowserSetupError(f"npm ci in {harness_dir} took longer than {_NPM_TIMEOUT_S} s") from exc
        if result.returncode != 0 or not _packages_present(harness_dir):
            raise BrowserSetupError(f"npm ci in {harness_dir} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def _packages_present(harness_dir: Path) -> bool:
    modules = harness_dir / "node_modules"
    return all((modules / name / "package.json").is_file() for name in NODE_PACKAGES)


class PlayOptions(TypedDict, total=False):
    """How :func:`play_hls` plays: ``player`` (default ``"hlsjs"``),
    ``min_time`` seconds of media to play (5), ``timeout`` seconds in all
    (60), ``low_latency`` and ``switch_level`` (off), ``clearkey``
    mapping 32-hex-digit key IDs to keys (Shaka only), ``licence_server``, the
    URL of a ClearKey licence server (Shaka only), and ``seek_back``:
    seconds to seek behind the live edge once playback runs, then play
    ``min_time`` seconds from there (the report's ``raw`` holds
    ``seekableAtSeek``, ``seekedTo`` and ``playedAfterSeek``)."""

    player: Player
    min_time: float
    timeout: float
    low_latency: bool
    switch_level: bool
    clearkey: Mapping[str, str] | None
    licence_server: str | None
    seek_back: float


_DEFAULT_MIN_TIME_S = 5.0
_DEFAULT_TIMEOUT_S = 60.0


def build_command(url: str, **options: Unpack[PlayOptions]) -> list[str]:
    """The play.mjs command line for these options (see :class:`PlayOptions`)."""
    cmd = [_node(), str(PLAY_SCRIPT), "--url", url, "--player", options.get("player", "hlsjs"),
           "--min-time", repr(float(options.get("min_time", _DEFAULT_MIN_TIME_S))),
           "--timeout", repr(float(options.get("timeout", _DEFAULT_TIMEOUT_S)))]
    if options.get("low_latency", False):
        cmd.append("--low-latency")
    if options.get("switch_level", False):
        cmd.append("--switch-level")
    seek_back = options.get("seek_back", 0.0)
    if seek_back:
        cmd += ["--seek-back", repr(float(seek_back))]
    clearkey = options.get("clearkey")
    if clearkey:
        cmd += ["--clearkey", ",".join(f"{kid}:{key}" for kid, key in clearkey.items())]
    licence_server = options.get("licence_server")
    if licence_server:
        cmd += ["--licence-server", licence_server]
    return cmd


def _process_limit(options: PlayOptions) -> float:
    """Seconds the node process may run before it is killed."""
    return options.get("timeout", _DEFAULT_TIMEOUT_S) + _PROCESS_MARGIN_S


def _check_exit(cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> PlaybackReport:
    if returncode not in (0, 1):
        raise HarnessError(f"{' '.join(cmd)} exited with {returncode}: {stderr[-2000:]}")
    try:
        report = parse_report(stdout)
    except HarnessOutputError as exc:
        raise HarnessOutputError(f"{exc}; stderr: {stderr[-2000:]}") from exc
    if report.ok != (returncode == 0):
        raise HarnessOutputError(f"exit status {returncode} disagrees with ok={report.ok}")
    return report


def play_hls(url: str, **options: Unpack[PlayOptions]) -> PlaybackReport:
    """Plays ``url`` in headless Chromium until ``min_time`` seconds of media
    have played or ``timeout`` seconds have passed (see :class:`PlayOptions`).
    Blocks: from async code whose loop serves the stream, use
    :func:`play_hls_async`."""
    ensure_browser_deps()
    cmd = build_command(url, **options)
    limit = _process_limit(options)
    # A session of its own, so a timeout can end node and its Chromium together.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc.pid)
            proc.communicate()
            raise HarnessTimeoutError(f"play.mjs ran past {limit} s") from exc
    return _check_exit(cmd, proc.returncode, stdout, stderr)


def _kill_group(pid: int) -> None:
    """Kills the process group that ``pid`` leads (node and the browser it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


async def play_hls_async(url: str, **options: Unpack[PlayOptions]) -> PlaybackReport:
    """:func:`play_hls` for async callers: the event loop keeps running (and
    serving the stream) while the browser plays."""
    await asyncio.to_thread(ensure_browser_deps)
    cmd = build_command(url, **options)
    limit = _process_limit(options)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError as exc:
        raise HarnessTimeoutError(f"play.mjs ran past {limit} s") from exc
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
            await proc.wait()
    assert proc.returncode is not None
    return _check_exit(cmd, proc.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
