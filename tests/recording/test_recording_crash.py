"""``kill -9`` of a recording engine: the real ``fanz-media serve`` (control
API on, SQLite) records a stream whose record flag was set through the API;
it is killed mid-recording and restarted on the same data directory. At
start the recording is closed (``EXT-X-ENDLIST``, every journalled segment
listed and stored), its record is in the store marked interrupted, the
``recording.ready`` webhook arrives with ``interrupted: true``, and ffprobe
reads the recording to its end."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from control_api.bootstrap import create_admin
from control_api.config import ApiConfig
from packager.recording.journal import parse_journal
from tests.conftest import free_port, make_clip, publish, wait_for
from tests.control_api.conftest import PASSWORD
from tests.recording.test_recording_live import ffprobe_duration, media_playlist
from tests.test_crash_restart import ROOT, Node, call, creator


async def fanz(node: Node, *args: str) -> str:
    """Run the ``fanz-media`` CLI with the node's settings; its stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from engine.app.cli import main; sys.exit(main())", *args,
        env=node.env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err.decode()}"
    return out.decode()


class Hooks:
    """A webhook receiver on loopback."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=free_port())

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(json.loads(await request.read()))
        return web.Response(status=204)

    def of(self, event: str) -> list[dict[str, object]]:
        return [b for b in self.bodies if b.get("event") == event]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_mid_recording_then_restart_closes_it(
    tmp_path: Path, ffmpeg: str, ffprobe: str, media_dir: Path
) -> None:
    clip = make_clip(ffmpeg, media_dir / "rec_crash_30s.flv", seconds=30, size="320x180", bframes=0,
                     gop_seconds=1)
    data = tmp_path / "data"
    hooks = Hooks()
    await hooks.server.start_server()
    rtmp_port, http_port = free_port(), free_port()
    node = Node(data, rtmp_port, http_port)
    node.env["FANZ_API_WEBHOOK_ALLOWED_HOSTS"] = f"127.0.0.1:{hooks.server.port}"
    node.env["FANZ_API_WEBHOOK_BACKOFF_BASE_S"] = "0.2"
    publisher: asyncio.subprocess.Process | None = None
    async with aiohttp.ClientSession() as session:
        try:
            await node.start(session)
            await create_admin(ApiConfig(data_dir=data, scrypt_n=1024), "boss", PASSWORD, time.time())
            status, admin = await call(session, node, "POST", "/auth/login",
                                       body={"username": "boss", "password": PASSWORD})
            assert status == 200, admin
            status, hook = await call(session, node, "POST", "/webhooks", admin["access_token"],
                                      {"url": f"http://127.0.0.1:{hooks.server.port}/hook"})
            assert status == 201, hook
            token, key, stream = await creator(session, node, "recorded")
            status, flagged = await call(session, node, "POST", f"/streaming/{stream['id']}/record", token,
                                         {"enabled": True})
            assert status == 200 and flagged["recording"] is True
            publisher = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{rtmp_port}/live/{key}")
            journal_dir = data / "recordings"

            def segments() -> int:
                found = list(journal_dir.glob("*.journal"))
                state = parse_journal(found[0].read_bytes()) if found else None
                return state.segments if state is not None else 0

            await wait_for(lambda: segments() >= 4, 60)
            await node.kill()
            publisher.kill()
            await publisher.wait()
            [path] = journal_dir.glob("*.journal")
            before = parse_journal(path.read_bytes())
            assert before is not None and not before.closed

            await node.start(session)
            await wait_for(lambda: bool(hooks.of("recording.ready")), 60)
            [ready] = hooks.of("recording.ready")
            payload = ready["data"]
            assert isinstance(payload, dict)
            assert payload["interrupted"] is True and payload["id"] == before.recording_id
            assert payload["asset_id"] == before.recording_id and payload["stream_id"] == stream["id"]
            assert payload["segments"] >= before.segments and payload["duration_s"] > 0
            after = parse_journal(path.read_bytes())
            assert after is not None and after.closed and after.interrupted and after.reported
            _, listed = await call(session, node, "GET", f"/streaming/{stream['id']}/recordings", token)
            assert [(r["id"], r["interrupted"]) for r in listed["items"]] == [(before.recording_id, True)]

            root = data / "storage" / "recordings" / before.recording_id
            playlist = root / "src" / "media.m3u8"
            await wait_for(lambda: playlist.exists() and "#EXT-X-ENDLIST" in playlist.read_text(), 60)
            durations, files, text = media_playlist(playlist)
            assert len(files) == after.segments >= before.segments
            await wait_for(lambda: all((root / "src" / f).is_file() for f in files), 60)
            assert "#EXT-X-PLAYLIST-TYPE:VOD" in text
            probed = ffprobe_duration(ffprobe, root / "index.m3u8")
            assert abs(probed - float(sum(durations))) < 1.0

            # Operators see it without the API, and delete it.
            listed_cli = json.loads(await fanz(node, "recordings", "list", "--json"))
            assert [(r["id"], r["stream"], r["state"], r["interrupted"]) for r in listed_cli] == [
                (before.recording_id, stream["playback_id"], "interrupted", True)]
            assert listed_cli[0]["duration_s"] == payload["duration_s"]
            await fanz(node, "recordings", "delete", before.recording_id)
            assert not root.exists() and not path.exists()
            assert json.loads(await fanz(node, "recordings", "list", "--json")) == []
            _, listed = await call(session, node, "GET", f"/streaming/{stream['id']}/recordings", token)
            assert listed["items"] == []
            with pytest.raises(AssertionError, match="exit 2"):
                await fanz(node, "recordings", "delete", "../etc")
        finally:
            if publisher is not None and publisher.returncode is None:
                publisher.kill()
                await publisher.wait()
            await node.stop()
            await hooks.server.close()
