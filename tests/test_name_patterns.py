"""Names in URLs are checked against their whole pattern: a trailing
newline (``victim%0A``) never reaches the publish or playback checks as a
look-alike of a real name, over HLS, WHIP or WHEP."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.auth import PlaybackRequest, PublishGrant, PublishRequest
from engine.errors import PlaybackDenied, PublishDenied
from engine.registry import StreamRegistry
from packager.hls.config import HlsConfig
from packager.hls.http import HlsHttp
from packager.hls.live import HlsService
from webrtc.config import WebRtcConfig
from webrtc.http import WebRtcHttp

OFFER = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
         "c=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\na=mid:0\r\n")


class Recording:
    """Checks that refuse everything and remember what they were asked."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        self.seen.append(request.key)
        raise PublishDenied("refused")

    async def publish_ended(self, grant: PublishGrant) -> None:
        return None

    async def authorize_playback(self, request: PlaybackRequest) -> None:
        self.seen.append(request.playback_name)
        raise PlaybackDenied("refused")


async def test_trailing_newline_names_are_refused(tmp_path: Path) -> None:
    registry = StreamRegistry(grace_s=0)
    checks = Recording()
    webrtc = WebRtcHttp(registry, checks, checks, WebRtcConfig())
    app = web.Application()
    app.router.add_routes(HlsHttp(HlsService(HlsConfig(), tmp_path / "hls", registry), checks).routes())
    app.router.add_routes(webrtc.routes())
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        for path in ("/hls/victim%0A/index.m3u8", "/hls/victim/source%0A/seg_0a_1.m4s",
                     "/hls/victim/source/seg_0a_1.m4s%0A"):
            async with client.get(path) as resp:
                assert resp.status == 404, path
        for path in ("/whip/victim%0A", "/whep/victim%0A"):
            async with client.post(path, data=OFFER, headers={"Content-Type": "application/sdp"}) as resp:
                assert resp.status in (403, 404), (path, resp.status, await resp.text())
        async with client.get("/watch/victim%0A") as resp:
            assert resp.status == 404
        assert not any("\n" in name for name in checks.seen), checks.seen
        # The same names without the newline do reach the checks.
        async with client.get("/hls/victim/index.m3u8") as resp:
            assert resp.status == 403
        assert checks.seen == ["victim"]
    finally:
        await client.close()
        await webrtc.close()
        registry.close()
