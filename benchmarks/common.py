"""Shared pieces of the benchmarks: CPU and memory accounting of a process
tree from /proc, ffmpeg publishers and their ``-progress`` output, HLS
playlist freshness, child-process cleanup and result tables.

The parsers (/proc/PID/stat, ``-progress`` blocks, playlists) are pure
functions or small state machines fed text, so they are tested without
running anything; the async helpers around them own the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# A playlist line or a /proc line longer than this is not what we expect.
MAX_LINE = 64 * 1024


class BenchmarkError(Exception):
    """Base of the benchmark helpers' errors."""


class ParseError(BenchmarkError, ValueError):
    """Text from /proc, ffmpeg or a server did not have the expected shape."""


class ServerStartError(BenchmarkError):
    """A server under test exited or did not open its ports in time."""


# --- /proc accounting -------------------------------------------------------

@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat the benchmarks use (times in clock ticks)."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    rss_pages: int

    @property
    def cpu_ticks(self) -> int:
        """Own CPU plus that of children it has reaped, which have left the
        tree but whose work still counts."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_proc_stat(text: str) -> ProcStat:
    """Parses one /proc/PID/stat line. The command name may hold spaces and
    parentheses, so it runs from the first ``(`` to the last ``)``."""
    if len(text) > MAX_LINE:
        raise ParseError("stat line too long")
    open_at = text.find("(")
    close_at = text.rfind(")")
    if open_at <= 0 or close_at < open_at:
        raise ParseError(f"no (comm) in stat line {text[:80]!r}")
    rest = text[close_at + 1:].split()
    # Fields after comm: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17) ... rss(24).
    if len(rest) < 22:
        raise ParseError(f"stat line has {len(rest)} fields after comm, wanted at least 22")
    try:
        pid = int(text[:open_at])
        numbers = [int(rest[i]) for i in (1, 11, 12, 13, 14, 21)]
    except ValueError as exc:
        raise ParseError(f"non-numeric field in stat line {text[:80]!r}") from exc
    ppid, utime, stime, cutime, cstime, rss = numbers
    return ProcStat(pid, text[open_at + 1:close_at], rest[0], ppid, utime, stime, cutime, cstime, rss)


def read_proc_stat(pid: int, proc: Path = Path("/proc")) -> ProcStat | None:
    """The stat of ``pid``, or None when it has exited."""
    try:
        return parse_proc_stat((proc / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def process_tree(root: int, proc: Path = Path("/proc")) -> list[ProcStat]:
    """``root`` and every live descendant of it."""
    stats: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = read_proc_stat(int(entry.name), proc)
            if stat is not None:
                stats[stat.pid] = stat
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(stats[pid])
        todo.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True)
class TreeUsage:
    """CPU seconds consumed so far and resident memory now, summed over a tree."""

    cpu_s: float
    rss_bytes: int
    processes: int


def tree_usage(root: int, proc: Path = Path("/proc")) -> TreeUsage:
    tree = process_tree(root, proc)
    return TreeUsage(
        cpu_s=sum(s.cpu_ticks for s in tree) / CLOCK_TICKS,
        rss_bytes=sum(s.rss_pages for s in tree) * PAGE_SIZE,
        processes=len(tree),
    )


# --- ffmpeg publishers --------------------------------------------------------

@dataclass(frozen=True)
class Progress:
    """One ``-progress`` block: written by ffmpeg about twice a second."""

    out_time_us: int | None
    speed: float | None
    total_size: int | None
    ended: bool


class ProgressParser:
    """Turns ffmpeg ``-progress`` output (``key=value`` lines, each block ending
    in ``progress=continue`` or ``progress=end``) into :class:`Progress`."""

    def __init__(self) -> None:
        self._block: dict[str, str] = {}

    def feed_line(self, line: str) -> Progress | None:
        """Takes one line; returns the block it completes, if any."""
        line = line.strip()
        if not line or len(line) > MAX_LINE:
            return None
        key, sep, value = line.partition("=")
        if not sep:
            return None
        self._block[key.strip()] = value.strip()
        if key.strip() != "progress":
            return None
        block, self._block = self._block, {}
        return Progress(
            out_time_us=_int_or_none(block.get("out_time_us")),
            speed=parse_speed(block.get("speed", "N/A")),
            total_size=_int_or_none(block.get("total_size")),
            ended=block["progress"] == "end",
        )


def parse_speed(text: str) -> float | None:
    """``"1.01x"`` -> 1.01; ``"N/A"`` or anything else unreadable -> None."""
    text = text.strip()
    if not text.endswith("x"):
        return None
    try:
        value = float(text[:-1])
    except ValueError:
        return None
    return value if value >= 0 and value == value and value != float("inf") else None


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def publisher_command(ffmpeg: str, source: Path, url: str, duration_s: float) -> list[str]:
    """An OBS-like publisher: the pre-encoded file looped in real time,
    copied (no re-encode) into FLV over RTMP for ``duration_s`` seconds."""
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1",
        "-re", "-stream_loop", "-1", "-i", str(source),
        "-t", f"{duration_s:g}", "-c", "copy", "-f", "flv", url,
    ]


def make_source_clip(ffmpeg: str, cache_dir: Path, *, seconds: int = 10, width: int = 1920, height: int = 1080,
                     fps: int = 30, video_kbps: int = 6000) -> Path:
    """Encodes (once; cached in ``cache_dir``) the clip every publisher loops:
    libx264 at a constant ``video_kbps`` (filler keeps the rate up even on a
    test pattern), a 2 s GOP without scene cuts, and 128 kbit/s AAC."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / f"source_{width}x{height}p{fps}_{video_kbps}k_{seconds}s.mp4"
    if out.exists():
        return out
    part = out.with_suffix(".part.mp4")
    rate = f"{video_kbps}k"
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-profile:v", "high",
        "-g", str(2 * fps), "-keyint_min", str(2 * fps), "-sc_threshold", "0",
        "-b:v", rate, "-minrate", rate, "-maxrate", rate, "-bufsize", rate, "-x264-params", "nal-hrd=cbr",
        "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
        "-movflags", "+faststart", str(part),
    ]
    subprocess.run(cmd, check=True, timeout=600)
    part.rename(out)
    return out


# --- HLS freshness ------------------------------------------------------------

@dataclass(frozen=True)
class PlaylistInfo:
    """What a freshness check needs from an HLS playlist."""

    target_duration: float | None
    media_sequence: int
    segments: int
    variants: tuple[str, ...]
    ended: bool

    @property
    def newest_segment(self) -> int | None:
        """Media sequence number of the last segment, None when there is none."""
        return self.media_sequence + self.segments - 1 if self.segments else None


def parse_playlist(text: str) -> PlaylistInfo:
    """Reads a media playlist (or the variant URIs of a multivariant one)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        raise ParseError("playlist does not start with #EXTM3U")
    target: float | None = None
    sequence = 0
    segments = 0
    variants: list[str] = []
    ended = False
    expect_variant = False
    for raw in lines[1:]:
        line = raw.strip()
        if len(line) > MAX_LINE:
            raise ParseError("playlist line too long")
        if not line:
            continue
        try:
            if line.startswith("#EXT-X-TARGETDURATION:"):  # RFC 8216 4.3.3.1
                target = float(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):  # 4.3.3.2
                sequence = int(line.split(":", 1)[1])
        except ValueError as exc:
            raise ParseError(f"bad number in {line[:80]!r}") from exc
        if line == "#EXT-X-ENDLIST":  # 4.3.3.4
            ended = True
        elif line.startswith("#EXT-X-STREAM-INF:"):  # 4.3.4.2: the next URI line is a variant
            expect_variant = True
        elif not line.startswith("#"):
            if expect_variant:
                variants.append(line)
                expect_variant = False
            else:
                segments += 1
    if target is not None and not (0 < target < 3600):
        raise ParseError(f"implausible target duration {target}")
    return PlaylistInfo(target, sequence, segments, tuple(variants), ended)


@dataclass
class FreshnessTracker:
    """Follows a live playlist and measures how stale its newest segment gets.

    ``first_segment_s`` is how long after ``started`` (when the publisher
    began) the first segment showed; ``max_age_s`` is the longest the newest
    segment stayed newest after that. The caller polls the playlist and
    passes each result with ``now``.
    """

    started: float
    newest: int | None = None
    newest_seen_at: float | None = None
    first_segment_s: float | None = None
    target_duration: float | None = None
    max_age_s: float = 0.0

    def observe(self, info: PlaylistInfo | None, now: float) -> None:
        """Records one poll (``None`` when the playlist was not there)."""
        if info is not None and info.target_duration is not None:
            self.target_duration = info.target_duration
        newest = info.newest_segment if info is not None else None
        if newest is not None and (self.newest is None or newest > self.newest):
            self.newest = newest
            self.newest_seen_at = now
            if self.first_segment_s is None:
                self.first_segment_s = now - self.started
        if self.newest_seen_at is not None:
            self.max_age_s = max(self.max_age_s, now - self.newest_seen_at)


# --- processes ------------------------------------------------------------------

@dataclass
class ProcessSet:
    """Every child process a benchmark starts, each in a session of its own
    (so Ctrl-C in the terminal reaches only the benchmark, which then ends
    them here in order: SIGTERM to the group, SIGKILL after ``grace_s``)."""

    grace_s: float = 5.0
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def spawn(self, cmd: Sequence[str], *, stdout: int | None = None, stderr: int | None = None,
                    cwd: Path | None = None) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=cwd, start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
        """Ends ``proc`` and whatever it started; returns its exit status."""
        if proc.returncode is None:
            _signal_group(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), self.grace_s)
            except TimeoutError:
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        else:
            # The leader is gone; anything it left in its group goes too.
            _signal_group(proc.pid, signal.SIGKILL)
        assert proc.returncode is not None
        return proc.returncode

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(p) for p in self.procs))
        self.procs.clear()

    async def __aenter__(self) -> ProcessSet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Shielded so that a cancelled benchmark (Ctrl-C) still waits for its
        # children to be gone before it returns.
        await asyncio.shield(self.stop_all())


async def spawn_logged(procs: ProcessSet, cmd: Sequence[str], log: Path, *,
                       log_stdout: bool = True) -> asyncio.subprocess.Process:
    """Starts ``cmd`` in ``procs`` with its stderr (and its stdout unless
    ``log_stdout`` is false, when stdout is discarded) written to a fresh
    ``log`` file."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        stdout = fd if log_stdout else asyncio.subprocess.DEVNULL
        return await procs.spawn(cmd, stdout=stdout, stderr=fd)
    finally:
        os.close(fd)


async def start_server(procs: ProcessSet, name: str, cmd: Sequence[str], log: Path, host: str,
                       ports: Sequence[int], timeout_s: float) -> asyncio.subprocess.Process:
    """Starts the server under test with its output in ``log`` and waits
    until every one of ``ports`` accepts connections. One that does not come
    up is a :class:`BenchmarkError` that carries the end of its log."""
    srv = await spawn_logged(procs, cmd, log)
    try:
        for port in ports:
            await wait_for_port(host, port, srv, timeout_s)
    except BenchmarkError as exc:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        raise BenchmarkError(f"{name}: {exc}\n{text[-2000:]}") from exc
    return srv


async def read_progress(proc: asyncio.subprocess.Process, on_block: Callable[[Progress], None]) -> tuple[int, str]:
    """Hands every ``-progress`` block ``proc`` writes to its stdout to
    ``on_block`` until it exits; returns its exit status and the last 2000
    characters of its stderr (read alongside, so a chatty process never
    blocks on a full pipe)."""
    assert proc.stdout is not None and proc.stderr is not None
    parser = ProgressParser()
    stderr_tail = ""

    async def drain_stderr() -> None:
        nonlocal stderr_tail
        assert proc.stderr is not None
        async for line in proc.stderr:
            stderr_tail = (stderr_tail + line.decode(errors="replace"))[-2000:]

    stderr_task = asyncio.create_task(drain_stderr())
    try:
        async for raw in proc.stdout:
            block = parser.feed_line(raw.decode(errors="replace"))
            if block is not None:
                on_block(block)
        returncode = await proc.wait()
    finally:
        await stderr_task
    return returncode, stderr_tail


def children_cpu_s() -> float:
    """CPU seconds of every child this process has reaped so far (and of
    their reaped descendants): the difference around a run is its cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def sample_peak_rss(pids: Sequence[int], stop: asyncio.Event, interval_s: float = 0.25) -> int:
    """The largest summed resident memory of the trees under ``pids`` until ``stop``."""
    peak = 0
    while not stop.is_set():
        usages = await asyncio.to_thread(lambda: [tree_usage(pid) for pid in pids])
        peak = max(peak, sum(u.rss_bytes for u in usages))
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
    return peak


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def fanz_media_exe() -> str:
    """The ``fanz-media`` command of this environment (beside the running
    interpreter, else on the PATH)."""
    beside = Path(sys.executable).with_name("fanz-media")
    exe = str(beside) if beside.exists() else shutil.which("fanz-media")
    if exe is None:
        raise BenchmarkError("fanz-media is not installed in this environment")
    return exe


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on loopback, chosen by the OS."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_for_port(host: str, port: int, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Waits until ``port`` accepts connections; raises
    :class:`ServerStartError` if ``proc`` exits first or time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if proc.returncode is not None:
            raise ServerStartError(f"server exited with {proc.returncode} before opening {host}:{port}")
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise ServerStartError(f"{host}:{port} did not open within {timeout_s} s") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        return


# --- output ---------------------------------------------------------------------

def format_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table; ``columns`` are (key, heading) pairs, floats get 3
    significant decimals, missing values print as ``-``."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)

    body = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    headings = [heading for _, heading in columns]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headings)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headings, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


# --- command line ---------------------------------------------------------------

def run_benchmark(name: str, work: Callable[[], Awaitable[dict[str, Any]]],
                  render: Callable[[dict[str, Any]], str], *, as_json: bool) -> int:
    """Runs a benchmark's ``work`` to its result and prints it (as JSON when
    ``as_json``, else through ``render``); returns the exit status. SIGTERM
    cancels the run as Ctrl-C does, so every :class:`ProcessSet` ends its
    children before this returns."""

    async def cancellable() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await work()

    try:
        result = asyncio.run(cancellable())
    except BenchmarkError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"{name}: interrupted; every started process has been stopped", file=sys.stderr)
        return 130
    print(to_json(result) if as_json else render(result))
    return 0
