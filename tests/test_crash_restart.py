"""An engine killed with SIGKILL leaves no ghosts: the real ``fanz-media
serve`` (control API on, SQLite in its data directory) runs as a separate
process with a stream live, a viewer joined and another stream just ended;
after ``kill -9`` and a restart on the same data directory, nothing is
listed as live, no viewer is left counted, and the HLS folders from before
the crash are gone."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port, make_clip, publish, wait_for
from tests.control_api.conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


class Node:
    """One ``fanz-media serve`` process and an HTTP client for it."""

    def __init__(self, data_dir: Path, rtmp_port: int, http_port: int) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FANZ_SERVER_DATA_DIR": str(data_dir),
            "FANZ_SERVER_HOST": "127.0.0.1",
            "FANZ_SERVER_USE_UVLOOP": "false",
            "FANZ_RTMP_PORT": str(rtmp_port),
            "FANZ_HTTP_PORT": str(http_port),
            "FANZ_HTTP_API": "true",
            "FANZ_TRANSCODE_ENABLED": "false",
            "FANZ_WEBRTC_ENABLED": "false",
            "FANZ_API_SCRYPT_N": "1024",
        }
        self.base = f"http://127.0.0.1:{http_port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from engine.app.cli import main; sys.exit(main())", "serve",
            env=self.env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while loop.time() < deadline:
            assert self.proc.returncode is None, "the engine exited while starting"
            try:
                async with session.get(self.base + "/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        pytest.fail("the engine did not become ready")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def call(session: aiohttp.ClientSession, node: Node, method: str, path: str, token: str | None = None,
               body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, f"{node.base}/api/v1{path}", json=body, headers=headers) as resp:
        assert "Server" not in resp.headers
        return resp.status, (await resp.json(content_type=None) if resp.status != 204 else None)


async def creator(session: aiohttp.ClientSession, node: Node, name: str) -> tuple[str, str, dict[str, Any]]:
    status, made = await call(session, node, "POST", "/auth/register", body={
        "username": name, "password": PASSWORD, "role": "creator"})
    assert status == 201, made
    token = made["access_token"]
    _, key = await call(session, node, "GET", "/streaming/key", token)
    status, stream = await call(session, node, "POST", "/streaming/start", token, {"title": f"{name} live"})
    assert status == 201, stream
    return token, key["stream_key"], stream


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_restart_after_sigkill_reconciles(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    clip = make_clip(ffmpeg, media_dir / "crash_h264_aac.flv", seconds=40, size="320x180", bframes=0)
    data = tmp_path / "data"
    rtmp_port, http_port = free_port(), free_port()
    node = Node(data, rtmp_port, http_port)
    publishers: list[asyncio.subprocess.Process] = []
    async with aiohttp.ClientSession() as session:
        try:
            await node.start(session)
            assert stat.S_IMODE(data.stat().st_mode) == 0o700
            # One stream goes live and gets a viewer; another goes live and ends.
            _, live_key, live = await creator(session, node, "still_live")
            ended_token, ended_key, ended = await creator(session, node, "ends_first")
            for key in (live_key, ended_key):
                publishers.append(await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{rtmp_port}/live/{key}"))
            hls = data / "hls"
            for stream in (live, ended):
                await wait_for(lambda s=stream: (hls / s["playback_id"] / "index.m3u8").exists(), 60)
            status, fan = await call(session, node, "POST", "/auth/register", body={
                "username": "watcher", "password": PASSWORD, "role": "fan"})
            assert status == 201
            status, _ = await call(session, node, "POST", f"/streaming/{live['id']}/join", fan["access_token"])
            assert status == 200
            status, _ = await call(session, node, "POST", "/streaming/stop", ended_token)
            assert status == 200
            _, active = await call(session, node, "GET", "/streaming/active")
            assert [(s["id"], s["viewers"]) for s in active["items"]] == [(live["id"], 1)]
            assert (hls / ended["playback_id"]).is_dir()  # kept for streams.ended_retention_s

            await node.kill()
            for proc in publishers:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
            # Before the fix the store still listed the dead stream as live, with its viewer.
            assert (hls / live["playback_id"]).is_dir() and (hls / ended["playback_id"]).is_dir()

            await node.start(session)
            _, active = await call(session, node, "GET", "/streaming/active")
            assert active["items"] == []
            _, admin_view = await call(session, node, "GET", f"/streaming/{live['id']}", fan["access_token"])
            assert admin_view["status"] == "ended" and admin_view["viewers"] == 0, admin_view
            assert admin_view["ended_reason"] == "engine restarted"
            assert sorted(p.name for p in hls.iterdir()) == []
            # The node works as before: the creator goes live again.
            publishers.append(await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{rtmp_port}/live/{live_key}"))
            await wait_for(lambda: any(hls.iterdir()), 60)
            async with asyncio.timeout(30):
                while True:
                    _, active = await call(session, node, "GET", "/streaming/active")
                    if active["items"]:
                        break
                    await asyncio.sleep(0.2)
        finally:
            for proc in publishers:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await node.stop()
