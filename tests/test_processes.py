"""A node of two engine processes (``server.processes = 2``): the real
``fanz-media serve`` starts a supervisor and two engines sharing the RTMP and
HTTP ports; real ffmpeg publishers land on either, and every stream plays
through the shared HTTP port whichever process answers; a process killed
with SIGKILL comes back and its streams publish again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from cluster.local_directory import FileStreamDirectory
from tests.conftest import free_port, make_clip, publish, wait_for
from tests.test_crash_restart import call, creator

ROOT = Path(__file__).resolve().parent.parent
MAX_STREAMS = 12


class Node:
    """``fanz-media serve`` with two processes, and its ports."""

    def __init__(self, data_dir: Path, api: bool = False) -> None:
        self.data_dir = data_dir
        self.rtmp_port, self.http_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FANZ_SERVER_DATA_DIR": str(data_dir),
            "FANZ_SERVER_HOST": "127.0.0.1",
            "FANZ_SERVER_USE_UVLOOP": "false",
            "FANZ_SERVER_PROCESSES": "2",
            "FANZ_SERVER_DEV": "false" if api else "true",
            "FANZ_RTMP_PORT": str(self.rtmp_port),
            "FANZ_HTTP_PORT": str(self.http_port),
            "FANZ_HTTP_API": "true" if api else "false",
            "FANZ_API_SCRYPT_N": "1024",
            "FANZ_TRANSCODE_ENABLED": "false",
            "FANZ_WEBRTC_ENABLED": "false",
        }
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.directory = FileStreamDirectory(data_dir / "streams")
        self.proc: asyncio.subprocess.Process | None = None

    def url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{name}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from engine.app.cli import main; sys.exit(main())", "serve",
            env=self.env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        await wait_for(lambda: len(self.workers()) == 2, 60)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        ready = 0
        while ready < 6:  # several answers in a row: both processes are up
            assert self.proc.returncode is None, "the supervisor exited while starting"
            assert loop.time() < deadline, "the node did not become ready"
            try:
                async with session.get(self.base + "/ready") as resp:
                    ready = ready + 1 if resp.status == 200 else 0
            except aiohttp.ClientError:
                ready = 0
            await asyncio.sleep(0.1)

    def workers(self) -> list[int]:
        """The engine processes the supervisor runs now (not its helpers)."""
        assert self.proc is not None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except FileNotFoundError:
            return []
        found = []
        for pid in children:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in cmdline:
                found.append(int(pid))
        return found

    async def stop(self) -> bytes:
        """SIGTERM, as an operator would; returns what the node logged."""
        if self.proc is None:
            return b""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.wait_for(self.proc.communicate(), 60)
        except TimeoutError:
            self.proc.kill()
            _, err = await self.proc.communicate()
        return err


async def playable(ffprobe: str, url: str) -> bool:
    """ffprobe reads the HLS URL and finds video."""
    proc = await asyncio.create_subprocess_exec(
        ffprobe, "-v", "error", "-rw_timeout", "10000000", "-show_streams", "-of", "json", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode != 0:
        return False
    return any(s.get("codec_type") == "video" for s in json.loads(out)["streams"])


async def refused(ffmpeg: str, source: Path, url: str) -> bool:
    """A second publisher of a live name is turned away (ffmpeg fails)."""
    proc = await publish(ffmpeg, source, url, realtime=True)
    try:
        return await asyncio.wait_for(proc.wait(), 30) != 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False


async def metric_sum(session: aiohttp.ClientSession, base: str, name: str) -> float:
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_two_processes_share_ports_and_pass_requests_to_owners(
    tmp_path: Path, ffmpeg: str, ffprobe: str, media_dir: Path
) -> None:
    clip = make_clip(ffmpeg, media_dir / "procs_h264_aac.flv", seconds=90, size="320x180", bframes=0)
    node = Node(tmp_path / "data")
    publishers: dict[str, asyncio.subprocess.Process] = {}
    async with aiohttp.ClientSession() as session:
        try:
            await node.start(session)
            # Publish until both processes own a stream (the kernel chooses).
            for i in range(MAX_STREAMS):
                name = f"s{i}"
                publishers[name] = await publish(ffmpeg, clip, node.url(name))
                await wait_for(lambda n=name: n in node.directory.entries(), 30)
                if len(set(node.directory.entries().values())) == 2:
                    break
            owners = node.directory.entries()
            assert set(owners) == set(publishers)
            assert len(set(owners.values())) == 2, owners

            # Every stream plays through the shared port, whichever process answers.
            for name in publishers:
                assert await playable(ffprobe, f"{node.base}/hls/{name}/index.m3u8"), name
            assert await metric_sum(session, node.base, "fanz_worker_passed_requests") > 0
            # One scrape covers both processes, each series labelled.
            async with session.get(node.base + "/metrics") as resp:
                text = await resp.text()
            assert 'fanz_worker_up{worker="0"} 1.0' in text and 'fanz_worker_up{worker="1"} 1.0' in text
            async with session.get(node.base + "/streams") as resp:
                listed = {s["name"]: s["worker"] for s in (await resp.json())["streams"]}
            assert set(listed) == set(publishers) and set(listed.values()) == {0, 1}

            # A second publisher of a live name is refused whichever process it reaches.
            taken = next(iter(publishers))
            for _ in range(3):
                assert await refused(ffmpeg, clip, node.url(taken))
            assert node.directory.entries()[taken] == owners[taken]

            # SIGKILL one process: the supervisor releases its streams and starts it again.
            before = node.workers()
            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            await wait_for(lambda: len(set(node.directory.entries().values())) == 1, 30)
            lost = sorted(set(owners) - set(node.directory.entries()))
            assert lost
            await wait_for(lambda: len(node.workers()) == 2 and victim not in node.workers(), 60)
            for name in lost:
                proc = publishers.pop(name)
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
            # Its streams publish again (to either process) and play.
            await asyncio.sleep(1.0)  # the restarted process binds its ports
            for name in lost:
                publishers[name] = await publish(ffmpeg, clip, node.url(name))
                await wait_for(lambda n=name: n in node.directory.entries(), 30)
            for name in lost:
                assert await playable(ffprobe, f"{node.base}/hls/{name}/index.m3u8"), name
        finally:
            for proc in publishers.values():
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
            log = await node.stop()
    assert node.proc is not None and node.proc.returncode == 0, log.decode()[-3000:]
    assert b"exited with status -9" in log
    assert node.directory.entries() == {}  # every stream ended with the node


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_control_api_is_shared_and_reaches_every_process(
    tmp_path: Path, ffmpeg: str, media_dir: Path
) -> None:
    """One database for both processes, migrated once by the supervisor; a
    creator's stop request disconnects the encoder whichever process the
    request and the encoder reached."""
    clip = make_clip(ffmpeg, media_dir / "procs_h264_aac.flv", seconds=90, size="320x180", bframes=0)
    node = Node(tmp_path / "data", api=True)
    publishers: list[asyncio.subprocess.Process] = []
    async with aiohttp.ClientSession() as session:
        try:
            await node.start(session)
            made = [await creator(session, node, f"creator{i}") for i in range(4)]  # type: ignore[arg-type]
            for _, key, _ in made:
                publishers.append(await publish(ffmpeg, clip, node.url(key)))
            names = {stream["playback_id"] for _, _, stream in made}
            await wait_for(lambda: set(node.directory.entries()) == names, 60)
            _, active = await call(session, node, "GET", "/streaming/active")  # type: ignore[arg-type]
            assert {s["playback_id"] for s in active["items"]} == names
            for token, _, _ in made:
                status, _ = await call(session, node, "POST", "/streaming/stop", token)  # type: ignore[arg-type]
                assert status == 200
            # Every encoder was disconnected by the process that had it.
            for proc in publishers:
                await asyncio.wait_for(proc.wait(), 30)
            await wait_for(lambda: node.directory.entries() == {}, 30)
        finally:
            for proc in publishers:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
            log = await node.stop()
    assert node.proc is not None and node.proc.returncode == 0, log.decode()[-3000:]
    assert log.count(b"applied migrations") == 1, log.decode()[-3000:]


def test_processes_is_validated() -> None:
    from engine.app.config import load_config
    from engine.errors import ConfigError

    assert load_config(None, env={}).server.processes == 1
    assert load_config(None, env={"FANZ_SERVER_PROCESSES": "4"}).server.processes == 4
    for bad in ("0", "-1", "100000"):
        with pytest.raises(ConfigError, match="processes"):
            load_config(None, env={"FANZ_SERVER_PROCESSES": bad})


def test_several_processes_need_so_reuseport(tmp_path: Path) -> None:
    from engine.app.config import load_config
    from engine.app.workers import Supervisor, reuse_port_available
    from engine.errors import ConfigError

    assert reuse_port_available()  # Linux has it
    config = load_config(None, env={"FANZ_SERVER_PROCESSES": "2", "FANZ_SERVER_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="SO_REUSEPORT"):
        Supervisor(config, reuse_port=lambda: False).run()
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_processes_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    node = Node(tmp_path / "data")
    workers: list[int] = []
    async with aiohttp.ClientSession() as session:
        try:
            await node.start(session)
            workers = node.workers()
            assert node.proc is not None
            node.proc.kill()
            await node.proc.wait()
            await wait_for(lambda: not any(_running(pid) for pid in workers), 30)
        finally:
            await node.stop()
            for pid in workers:  # left running only if the test failed
                if _running(pid):
                    os.kill(pid, signal.SIGKILL)
