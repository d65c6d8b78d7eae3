"""The recording story with ``storage.backend = s3`` against moto in server
mode: a publish with a reconnect is recorded into the bucket, its playlists
list every live segment, and ffprobe reads it as VOD over HTTP from a
tiny server that reads the bucket."""

from __future__ import annotations

import asyncio
import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from cluster.storage import ObjectNotFoundError
from tests.conftest import make_clip, publish, start_engine
from tests.recording.test_recording_live import closed_recordings, ffprobe_duration


async def test_recording_into_s3_across_a_reconnect(
    tmp_path: Path, ffmpeg: str, ffprobe: str, media_dir: Path, make_s3: Any
) -> None:
    bucket = make_s3(own_client=True)
    storage_settings = {f.name: getattr(bucket.config, f.name) for f in dataclasses.fields(bucket.config)}
    clip = make_clip(ffmpeg, media_dir / "rec_4s.flv", seconds=4, gop_seconds=1)
    engine = await start_engine(tmp_path / "data", recording={"default": True}, storage=storage_settings,
                                streams={"reconnect_grace_s": 3.0}, hls={"window_segments": 64})
    try:
        url = f"rtmp://127.0.0.1:{engine.rtmp.port}/live/dave"
        for _ in range(2):
            proc = await publish(ffmpeg, clip, url)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        [state] = await closed_recordings(engine)
        live = engine.hls.outputs["dave"].variants["src"].playlist
        live_durations = [round(float(s.duration), 6) for s in live.segments]
    finally:
        await engine.stop()
    prefix = f"recordings/{state.recording_id}/"
    text = (await asyncio.to_thread(bucket.read, prefix + "src/media.m3u8")).decode()
    durations = [round(float(Fraction(line[8:].rstrip(","))), 6) for line in text.splitlines()
                 if line.startswith("#EXTINF:")]
    files = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert durations == live_durations and len(files) == state.segments
    stored = {info.key for info in await asyncio.to_thread(lambda: list(bucket.list(prefix)))}
    assert {prefix + "src/" + f for f in files} <= stored
    assert {prefix + "index.m3u8", prefix + "recording.json"} <= stored
    assert text.count("#EXT-X-DISCONTINUITY") == 1 and text.rstrip().endswith("#EXT-X-ENDLIST")
    assert engine.recordings.used_bytes >= state.bytes  # S3: bytes recorded, tracked
    server = await serve_bucket(bucket)
    try:
        probed = await asyncio.to_thread(ffprobe_duration, ffprobe, str(server.make_url(f"/{prefix}index.m3u8")))
    finally:
        await server.close()
    assert abs(probed - sum(live_durations)) < 1.0


async def serve_bucket(bucket: Any) -> TestServer:
    """A tiny static server over the bucket, read through the storage
    interface (as a player would be served by the engine)."""

    async def get(request: web.Request) -> web.Response:
        try:
            data = await asyncio.to_thread(bucket.read, request.match_info["key"])
        except ObjectNotFoundError:
            raise web.HTTPNotFound() from None
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/{key:.+}", get)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server
