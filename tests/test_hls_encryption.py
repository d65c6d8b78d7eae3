"""End to end: encrypted live and VOD HLS read by the real ffmpeg.

ffmpeg publishes over RTMP; the engine writes AES-128 MPEG-TS and fMP4 and
SAMPLE-AES MPEG-TS; ffmpeg's HLS reader (which fetches the EXT-X-KEY URIs
itself) decodes the playlists through a key server started here, on
loopback, that hands out the test provider's keys only with the viewer's
token. Every decoded video frame must equal the source's; with wrong keys
they must not. LL-HLS parts fetched over HTTP decrypt alone to their parent
segment's media.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from drm.model import Protection
from engine.app import transcode_command as cli
from engine.app.config import load_config
from engine.app.protection import ProtectionPolicy
from engine.app.serve import Engine
from engine.auth import PlaybackGrant, PlaybackRequest, PublishGrant, PublishRequest
from packager.hls.config import SegmentFormat
from packager.hls.playlist import KeyTag
from tests.conftest import make_clip, publish, wait_for
from tests.fixed_keys import FixedKeys
from tests.hls_rules import check_media, check_multivariant

pytestmark = pytest.mark.timeout(180)

TOKEN = "viewer-7"


@dataclass
class KeyServer:
    """``GET /keys/NAME/KIDHEX?token=...``: the key, for the right token; with
    ``wrong`` set, a wrong key. Also serves ``/files/...`` from ``root``."""

    provider: FixedKeys
    root: Path | None = None
    wrong: bool = False
    token: str | None = TOKEN
    requests: list[str] = field(default_factory=list)
    url: str = ""

    async def key(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        if self.token is not None and request.query.get("token") != self.token:
            raise web.HTTPForbidden(text="no token")
        found = self.provider.find_key(request.match_info["name"], bytes.fromhex(request.match_info["kid"]))
        if found is None:
            raise web.HTTPNotFound(text="no such key")
        key = bytes(b ^ 0x5A for b in found.key) if self.wrong else found.key
        # Browsers fetch keys across origins (the key service is not the
        # HLS origin).
        return web.Response(body=key, content_type="application/octet-stream",
                            headers={"Access-Control-Allow-Origin": "*"})

    async def file(self, request: web.Request) -> web.StreamResponse:
        assert self.root is not None
        path = (self.root / request.match_info["path"]).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Access-Control-Allow-Origin": "*"})


@pytest.fixture
async def key_server() -> AsyncIterator[KeyServer]:
    server = KeyServer(FixedKeys())
    app = web.Application()
    app.router.add_get("/keys/{name}/{kid}", server.key)
    app.router.add_get("/files/{path:.+}", server.file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


class GrantingChecks:
    """Publish checks that name a protection per stream key, as the control
    API's stream records do: ``paid-*`` AES-128, ``cmaf-*`` cbcs, others none."""

    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        protection = "aes-128" if request.key.startswith("paid") else "cbcs" if request.key.startswith("cmaf") else None
        return PublishGrant(request.key, protection=protection)

    async def publish_ended(self, grant: PublishGrant) -> None:
        return None

    async def authorize_playback(self, request: PlaybackRequest) -> PlaybackGrant:
        return PlaybackGrant(public=False)


class RecordingEngine(Engine):
    """The engine, with the paths of the HTTP requests it answered recorded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paths: list[str] = []

    def build_app(self) -> web.Application:
        app = super().build_app()

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.paths.append(request.path)
            return await handler(request)

        app.middlewares.append(record)
        return app


async def start_protected_engine(
    data_dir: Path,
    fmt: SegmentFormat,
    policy: ProtectionPolicy,
    checks: GrantingChecks | None = None,
    reconnect_grace_s: float = 0.5,
) -> RecordingEngine:
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": data_dir, "dev": True, "host": "127.0.0.1"},
        rtmp={"port": 0},
        http={"port": 0, "api": False},
        streams={"reconnect_grace_s": reconnect_grace_s},
        transcode={"enabled": False},
        hls={"segment_format": fmt},
    )
    engine = RecordingEngine(config, checks=(checks, checks) if checks is not None else None, protection=policy)
    await engine.start()
    return engine


async def video_md5s(ffmpeg: str, url: str, stream: str = "v") -> tuple[list[str], str]:
    """Every decoded video (or audio) frame's MD5, through ffmpeg's own HLS reader."""
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url, "-map", f"0:{stream}", "-f", "framemd5",
        "-",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    lines = [line for line in out.decode().splitlines() if line and not line.startswith("#")]
    return [line.rsplit(",", 1)[1].strip() for line in lines], f"rc={proc.returncode} {err.decode()[-2000:]}"


def source_md5s(ffmpeg: str, path: Path, stream: str = "v") -> list[str]:
    out = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", f"0:{stream}", "-f", "framemd5", "-"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read()


def decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()


@pytest.mark.parametrize(
    ("fmt", "scheme"),
    [
        (SegmentFormat.MPEGTS, Protection.AES_128),
        (SegmentFormat.FMP4, Protection.AES_128),
        (SegmentFormat.MPEGTS, Protection.SAMPLE_AES),
    ],
    ids=["ts-aes128", "fmp4-aes128", "ts-sample-aes"],
)
async def test_live_encrypted_hls_decodes_frame_for_frame_with_the_right_key_only(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path, key_server: KeyServer, fmt: SegmentFormat, scheme: Protection
) -> None:
    # AES-128 rotates every two segments. ffmpeg decrypts SAMPLE-AES packets
    # after demuxing them, with the key of the segment it is reading by then:
    # the last packet before a key change would get the next key, so that
    # stream keeps one.
    rotate = 2 if scheme is Protection.AES_128 else 0
    policy = ProtectionPolicy(scheme, key_server.provider, rotate, key_uri_base=f"{key_server.url}/keys")
    engine = await start_protected_engine(tmp_path / "data", fmt, policy)
    try:
        assert engine.rtmp is not None
        proc = await publish(ffmpeg, h264_aac_flv, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/paid")
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        await wait_for(lambda: "paid" in engine.hls.outputs and engine.hls.outputs["paid"].ended, 15)
        base = f"http://127.0.0.1:{engine.http_port}/hls/paid"

        status, body = await get(f"{base}/src/media.m3u8?token={TOKEN}")
        assert status == 200
        media = body.decode()
        check_media(media, fmp4=fmt is SegmentFormat.FMP4)
        tags = [KeyTag.parse(line) for line in media.splitlines() if line.startswith("#EXT-X-KEY:")]
        segments = [line for line in media.splitlines() if line.startswith("seg_")]
        assert {t.method for t in tags} == {scheme.value.upper()}
        assert all(t.uri.startswith(f"{key_server.url}/keys/paid/") and t.uri.endswith(f"?token={TOKEN}")
                   for t in tags)
        assert len(segments) == 3
        if scheme is Protection.AES_128:
            assert len(tags) == 3 and len({t.iv for t in tags}) == 3  # one IV per segment
            assert len({t.uri for t in tags}) == 2  # rotation every two segments
        else:
            assert len(tags) == 1  # one key, one IV: stated once
        assert "#EXT-X-VERSION:5" in media or fmt is SegmentFormat.FMP4
        status, body = await get(f"{base}/index.m3u8?token={TOKEN}")
        assert "#EXT-X-SESSION-KEY:METHOD=" in body.decode()
        check_multivariant(body.decode())

        # Nothing written is clear media.
        folder = engine.hls.root / "paid" / "src"
        written = sorted(folder.glob("seg_*"))
        assert written
        for path in written:
            data = path.read_bytes()
            if scheme is Protection.AES_128:
                assert data[0] != 0x47 and b"moof" not in data[:64] and len(data) % 16 == 0

        expected = source_md5s(ffmpeg, h264_aac_flv)
        got, why = await video_md5s(ffmpeg, f"{base}/index.m3u8?token={TOKEN}")
        assert len(got) == len(expected), why
        differ = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
        if scheme is Protection.SAMPLE_AES:
            # ffmpeg decrypts a SAMPLE-AES packet after its H.264 parser hands
            # it over, with the segment it is reading by then; the stream's
            # last access unit comes out of the parser after the last segment,
            # when there is none, and stays encrypted. Every other frame is
            # the source's.
            assert len(differ) <= 1 and set(differ) <= {len(got) - 2, len(got) - 1}, (differ, why)
        else:
            assert not differ, (differ, why)
        assert key_server.requests and all(f"token={TOKEN}" in r for r in key_server.requests)
        # Audio too: AAC frames decode to the source's samples (the first
        # frames after the start differ: the decoder's overlap has no past).
        audio, why = await video_md5s(ffmpeg, f"{base}/index.m3u8?token={TOKEN}", "a")
        source_audio = set(source_md5s(ffmpeg, h264_aac_flv, "a"))
        assert len(audio) > 200 and sum(md5 in source_audio for md5 in audio) >= len(audio) - 3, why

        if scheme is Protection.AES_128:
            await check_parts_decrypt_to_their_segments(media, base, tags, key_server.provider)

        key_server.wrong = True
        got, why = await video_md5s(ffmpeg, f"{base}/index.m3u8?token={TOKEN}")
        assert got != expected and len(set(got) & set(expected)) < len(expected) // 2, why
    finally:
        await engine.stop()


async def test_each_publish_grant_names_its_streams_protection(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path, key_server: KeyServer
) -> None:
    policy = ProtectionPolicy(Protection.NONE, key_server.provider, key_uri_base=f"{key_server.url}/keys")
    engine = await start_protected_engine(tmp_path / "data", SegmentFormat.FMP4, policy, GrantingChecks())
    try:
        assert engine.rtmp is not None
        procs = [
            await publish(ffmpeg, h264_aac_flv, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{key}", extra=["-t", "3"])
            for key in ("paid-1", "free-1", "cmaf-1")
        ]
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 60)
        await wait_for(lambda: all(n in engine.hls.outputs and engine.hls.outputs[n].ended
                                   for n in ("paid-1", "free-1")), 15)
        paid = engine.hls.outputs["paid-1"].variants["src"].playlist.render()
        free = engine.hls.outputs["free-1"].variants["src"].playlist.render()
        assert '#EXT-X-KEY:METHOD=AES-128,URI="' + key_server.url + "/keys/paid-1/" in paid
        assert "#EXT-X-KEY" not in free
        await wait_for(lambda: engine.hls.outputs["cmaf-1"].ended, 15)
        cmaf = engine.hls.outputs["cmaf-1"].variants["src"].playlist.render()
        # cbcs in CMAF; this provider gives no DRM system data: the identity key.
        assert '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="' + key_server.url + "/keys/cmaf-1/" in cmaf
        assert {c for c, _ in key_server.provider.asked} == {"paid-1", "cmaf-1"}
    finally:
        await engine.stop()


async def check_parts_decrypt_to_their_segments(
    media: str, base: str, tags: list[KeyTag], provider: FixedKeys
) -> None:
    """Every part still listed, fetched over HTTP and decrypted alone with its
    segment's key and IV, gives that segment's media in order."""
    lines = media.splitlines()
    tag: KeyTag | None = None
    parts: list[str] = []
    checked = 0
    for line in lines:
        if line.startswith("#EXT-X-KEY:"):
            tag = KeyTag.parse(line)
        elif line.startswith("#EXT-X-PART:"):
            parts.append(re.search(r'URI="([^"]+)"', line).group(1))  # type: ignore[union-attr]
        elif line.startswith("seg_"):
            if parts:
                assert tag is not None and tag.iv is not None
                kid = bytes.fromhex(tag.uri.split("?")[0].rsplit("/", 1)[1])
                found = provider.find_key("paid", kid)
                assert found is not None
                clear_parts = []
                for uri in parts:
                    status, body = await get(f"{base}/src/{uri}")
                    assert status == 200
                    clear_parts.append(decrypt(found.key, tag.iv, body))
                _, segment = await get(f"{base}/src/{line}")
                assert decrypt(found.key, tag.iv, segment) == b"".join(clear_parts)
                checked += 1
            parts = []
    assert checked >= 1


async def transcode_encrypted(tmp_path: Path, source: Path, key_server: KeyServer, fmt: str, scheme: str) -> Path:
    """``fanz-media transcode --protection`` into a folder the key server
    serves at ``/files/movie/``; returns the folder."""
    config = tmp_path / "engine.toml"
    config.write_text(f'[hls]\nsegment_format = "{fmt}"\n')
    root = tmp_path / "vod"
    root.mkdir()
    key_server.root = root
    key_server.token = None  # files on disk name no viewer; a serving origin adds tokens
    args = [
        str(source), str(root / "movie"), "--config", str(config), "--ladder", "mobile", "--encoder", "libx264",
        "--quiet", "--protection", scheme, "--content-id", "asset-9", "--key-uri", f"{key_server.url}/keys",
    ]
    code = await asyncio.get_running_loop().run_in_executor(None, lambda: cli.main(args, key_server.provider))
    assert code == 0
    return root / "movie"


@pytest.mark.parametrize(
    ("fmt", "scheme"),
    [("mpegts", "aes-128"), ("fmp4", "aes-128"), ("mpegts", "sample-aes")],
)
async def test_transcode_command_writes_encrypted_vod(
    tmp_path: Path, ffmpeg: str, h264_aac_mp4: Path, key_server: KeyServer, fmt: str, scheme: str
) -> None:
    root = (await transcode_encrypted(tmp_path, h264_aac_mp4, key_server, fmt, scheme)).parent
    index = (root / "movie" / "index.m3u8").read_text()
    assert "#EXT-X-SESSION-KEY:" in index
    variants = [line for line in index.splitlines() if line and not line.startswith("#")]
    for variant in variants:
        media = (root / "movie" / variant).read_text()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in media
        tags = [KeyTag.parse(line) for line in media.splitlines() if line.startswith("#EXT-X-KEY:")]
        assert len({t.uri for t in tags}) == 1  # no rotation for files unless asked
        assert tags[0].uri.startswith(f"{key_server.url}/keys/asset-9/")
    # The passed-through rendition is the source's bitstream: its frames are
    # the source's (SAMPLE-AES: but for ffmpeg's last access unit, see above).
    expected = source_md5s(ffmpeg, h264_aac_mp4)
    url = f"{key_server.url}/files/movie/source/media.m3u8"
    got, why = await video_md5s(ffmpeg, url)
    assert len(got) == len(expected), why
    differ = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    assert len(differ) <= (1 if scheme == "sample-aes" else 0), (differ, why)
    for rung in (v for v in variants if not v.startswith("source/")):
        got_rung, why = await video_md5s(ffmpeg, f"{key_server.url}/files/movie/{rung}")
        assert len(got_rung) == len(expected), why
    key_server.wrong = True
    wrong, why = await video_md5s(ffmpeg, url)
    assert len(set(wrong) & set(expected)) < len(expected) // 2, why


def test_transcode_protection_needs_a_key_provider(tmp_path: Path, h264_aac_mp4: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(h264_aac_mp4), str(tmp_path / "out"), "--quiet", "--protection", "aes-128"]
    assert cli.main(args) == 1
    assert "no key provider" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.browser
@pytest.mark.parametrize(
    ("fmt", "scheme", "wrong"),
    [
        (SegmentFormat.MPEGTS, Protection.AES_128, False),
        (SegmentFormat.FMP4, Protection.AES_128, False),
        (SegmentFormat.MPEGTS, Protection.AES_128, True),
        (SegmentFormat.MPEGTS, Protection.SAMPLE_AES, False),
    ],
    ids=["ts", "fmp4", "ts-wrong-key", "ts-sample-aes"],
)
async def test_hlsjs_plays_live_encrypted_hls_with_parts_only_with_the_right_key(
    tmp_path: Path, ffmpeg: str, media_dir: Path, key_server: KeyServer, fmt: SegmentFormat, scheme: Protection,
    wrong: bool,
) -> None:
    from tests.browser.player import play_hls_async

    clip = make_clip(ffmpeg, media_dir / "aes_live_240p.flv", seconds=14, size="426x240", bframes=0)
    key_server.wrong = wrong
    policy = ProtectionPolicy(scheme, key_server.provider, 2, key_uri_base=f"{key_server.url}/keys")
    engine = await start_protected_engine(tmp_path / "data", fmt, policy)
    try:
        assert engine.rtmp is not None
        proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/paid")
        await wait_for(lambda: "paid" in engine.hls.outputs and engine.hls.outputs["paid"].multivariant, 30)
        url = f"http://127.0.0.1:{engine.http_port}/hls/paid/index.m3u8?token={TOKEN}"
        # hls.js decrypts SAMPLE-AES whole segments, but in its low-latency
        # mode it fails to decode SAMPLE-AES parts, which are the very bytes
        # of the segments it plays: that stream is played from segments.
        low_latency = scheme is Protection.AES_128
        report = await play_hls_async(url, min_time=5.0, timeout=25.0 if wrong else 40.0, low_latency=low_latency)
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        assert key_server.requests and all(f"token={TOKEN}" in r for r in key_server.requests)
        if wrong:
            assert not report.ok, report
        else:
            assert report.ok, (report.errors, report)
            assert report.current_time >= 5.0
        if low_latency:
            assert any("/part_" in path for path in engine.paths)  # hls.js loaded parts
    finally:
        await engine.stop()


@pytest.mark.browser
@pytest.mark.parametrize(("fmt", "wrong"), [("mpegts", False), ("fmp4", False), ("fmp4", True)],
                         ids=["ts", "fmp4", "fmp4-wrong-key"])
async def test_hlsjs_plays_aes128_vod_only_with_the_right_key(
    tmp_path: Path, h264_aac_mp4: Path, key_server: KeyServer, fmt: str, wrong: bool
) -> None:
    from tests.browser.player import play_hls_async

    await transcode_encrypted(tmp_path, h264_aac_mp4, key_server, fmt, "aes-128")
    key_server.wrong = wrong
    report = await play_hls_async(f"{key_server.url}/files/movie/index.m3u8", min_time=3.0,
                                  timeout=20.0 if wrong else 40.0)
    assert key_server.requests
    assert report.ok is not wrong, report


@pytest.mark.browser
async def test_hlsjs_plays_on_through_a_reconnect_and_its_new_key(
    tmp_path: Path, ffmpeg: str, media_dir: Path, key_server: KeyServer
) -> None:
    """The publisher drops and comes back: a discontinuity, a new init
    segment and a new key period; hls.js keeps playing without a reload."""
    from tests.browser.player import play_hls_async

    clip = make_clip(ffmpeg, media_dir / "long_h264_aac.flv", seconds=20, size="426x240", bframes=0)
    policy = ProtectionPolicy(Protection.AES_128, key_server.provider, key_uri_base=f"{key_server.url}/keys")
    engine = await start_protected_engine(tmp_path / "data", SegmentFormat.FMP4, policy, reconnect_grace_s=8.0)
    try:
        assert engine.rtmp is not None
        url = f"rtmp://127.0.0.1:{engine.rtmp.port}/live/paid"
        first = await publish(ffmpeg, clip, url, extra=["-t", "8"])
        await wait_for(lambda: "paid" in engine.hls.outputs and engine.hls.outputs["paid"].multivariant, 30)
        player = asyncio.create_task(play_hls_async(
            f"http://127.0.0.1:{engine.http_port}/hls/paid/index.m3u8?token={TOKEN}", min_time=13.0, timeout=90.0
        ))
        await asyncio.wait_for(first.wait(), 60)
        await asyncio.sleep(1.0)
        second = await publish(ffmpeg, clip, url, extra=["-t", "14"])
        report = await player
        if second.returncode is None:
            second.kill()
        await second.wait()
        assert report.ok, report
        assert report.current_time >= 13.0
        media = engine.hls.outputs["paid"].variants["src"].playlist.render()
        assert "#EXT-X-DISCONTINUITY" in media
        kids = {re.search(r"/keys/paid/([0-9a-f]{32})", u).group(1)  # type: ignore[union-attr]
                for u in key_server.requests}
        assert len(kids) == 2  # the key of the first publish, then the reconnect's
    finally:
        await engine.stop()
