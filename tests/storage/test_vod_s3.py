"""VOD assets on the S3 backend (moto on loopback): a ``fanz-media
transcode --asset`` output uploaded to the bucket, served through the
engine with byte ranges or by redirect to a presigned URL, remuxed into the
MP4 download from the bucket, and gone at once when deleted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from cluster.storage import ServeMode
from engine.auth import PlaybackGrant, PlaybackRequest
from packager.assets.http import VodHttp
from packager.assets.library import AssetLibrary
from tests.conftest import make_clip
from tests.vod.conftest import transcode_as_asset


class OpenChecks:
    """Playback for anyone, as the static-key checks give it."""

    async def authorize_playback(self, request: PlaybackRequest) -> PlaybackGrant:
        return PlaybackGrant(public=True)


async def test_asset_in_s3_by_engine_and_by_presigned_redirect(
    make_s3: Callable[..., Any], ffmpeg: str, media_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(ffmpeg, media_dir / "vod_clip.mp4", seconds=8)
    out = transcode_as_asset(clip, tmp_path / "data", "s3-clip", tmp_path)
    s3 = make_s3(serve_mode=ServeMode.PRESIGNED)
    library = AssetLibrary(s3)
    assert library.upload("s3-clip", out) == sum(1 for p in out.rglob("*") if p.is_file())
    variant = next(p for p in out.iterdir() if p.is_dir())
    segment = sorted(variant.glob("seg_*.m4s"))[0]
    stored = segment.read_bytes()

    servers = []
    for presigned in (False, True):
        app = web.Application()
        app.router.add_routes(VodHttp(library, OpenChecks(), presigned=presigned).routes())
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
    try:
        engine_base = str(servers[0].make_url("/vod/s3-clip"))
        redirect_base = str(servers[1].make_url("/vod/s3-clip"))
        seg_path = f"{variant.name}/{segment.name}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{engine_base}/index.m3u8") as r:
                assert r.status == 200 and "#EXT-X-STREAM-INF" in await r.text()
            async with http.get(f"{engine_base}/{seg_path}", headers={"Range": "bytes=10-49"}) as r:
                assert r.status == 206 and await r.read() == stored[10:50]
            async with http.get(f"{redirect_base}/{seg_path}", allow_redirects=False) as r:
                assert r.status == 302
                location = r.headers["Location"]
            assert "X-Amz-Signature=" in location or "Signature=" in location
            async with http.get(location) as r:
                assert r.status == 200 and await r.read() == stored
            async with http.get(f"{redirect_base}/index.m3u8", allow_redirects=False) as r:
                assert r.status == 200  # playlists always come from the engine
            async with http.get(f"{engine_base}/download.mp4") as r:
                assert r.status == 200 and b"ftyp" in (await r.read())[:32]
            assert s3.stat("assets/s3-clip/download.mp4").size > 0

            assert library.delete("s3-clip") > 0
            for base in (engine_base, redirect_base):
                async with http.get(f"{base}/{seg_path}", allow_redirects=False) as r:
                    assert r.status == 404
                async with http.get(f"{base}/index.m3u8") as r:
                    assert r.status == 404
    finally:
        for server in servers:
            await server.close()
