"""DRM end to end, through the real serve wiring: the engine's protection
policy comes from ``[drm]`` and each stream's record, the packager encrypts,
and real players get their keys from the engine's own endpoints with the
viewer's playback token.

- Shaka Player (headless Chromium, its built-in ClearKey CDM) plays live
  ``cbcs`` and ``cenc`` HLS with licences from ``POST /drm/clearkey/NAME``,
  on through a publisher reconnect and its new key, without a reload; with
  the licence server of another stream it fails.
- hls.js plays live AES-128 with keys from ``GET /keys/NAME/KID``, on through
  a reconnect and its new key.
- Shaka plays a ``cbcs`` VOD asset made by ``fanz-media transcode``, whose
  keys the CLI took from the engine's own provider.
- FFmpeg 8 (PyAV, ``decryption_key``) decodes the engine's live ``cenc``
  fMP4, read from disk, to the frames of a clear run.
- After each run no content key lies in clear anywhere in the data dir.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from control_api.bootstrap import create_admin
from control_api.config import ApiConfig
from drm.model import ContentKey, Protection
from engine.app import cli
from engine.app.serve import Engine
from packager.hls.config import SegmentFormat
from tests.conftest import make_clip, publish, start_engine, wait_for
from tests.control_api.conftest import PASSWORD
from tests.drm.test_key_delivery import API_SETTINGS, Client
from tests.drm.test_keys import assert_no_clear_key

pytestmark = pytest.mark.timeout(240)


@dataclass
class PaidShow:
    """A subscribers-only stream with its protection set in its record, a
    subscriber's playback token for it, and another paid stream the same
    subscriber may watch (whose licences must not open this one)."""

    engine: Engine
    base: str
    stream_key: str
    name: str
    token: str
    other: str
    other_token: str

    @property
    def playback_url(self) -> str:
        return f"{self.base}/hls/{self.name}/index.m3u8?token={self.token}"

    def licence_url(self, name: str, token: str) -> str:
        return f"{self.base}/drm/clearkey/{name}?token={token}"

    def keys(self) -> list[ContentKey]:
        """Every key the stream was encrypted with."""
        provider = self.engine.key_provider
        highest = provider.highest_period(self.name)
        assert highest is not None
        return [provider.key_period(self.name, i).key for i in range(highest + 1)]


async def paid_show(data_dir: Path, protection: Protection, rotate_every: int) -> PaidShow:
    """An engine with its control API (no dev mode): ``drm.protection`` stays
    ``none``; the stream's record asks for ``protection``."""
    await create_admin(ApiConfig(data_dir=data_dir, **API_SETTINGS), "moderator", PASSWORD, time.time())
    engine = await start_engine(
        data_dir, server={"dev": False}, http={"api": True}, api=API_SETTINGS,
        drm={"rotate_every_segments": rotate_every, "key_requests_per_minute": 10_000},
        hls={"segment_format": SegmentFormat.FMP4}, streams={"reconnect_grace_s": 8.0},
    )
    assert isinstance(engine, Engine)
    base = f"http://127.0.0.1:{engine.http_port}"
    async with aiohttp.ClientSession() as session:
        c = Client(session, base)
        admin = (await c.api("POST", "/auth/login", body={"username": "moderator", "password": PASSWORD},
                             expect=200))["access_token"]
        users = {}
        for name, role in (("creator", "creator"), ("rival", "creator"), ("fan", "fan")):
            users[name] = await c.api("POST", "/auth/register", body={"username": name, "password": PASSWORD,
                                                                      "role": role}, expect=201)
        key = await c.api("GET", "/streaming/key", users["creator"]["access_token"], expect=200)
        streams = {}
        tokens = {}
        for creator in ("creator", "rival"):
            streams[creator] = await c.api("POST", "/streaming/start", users[creator]["access_token"],
                                           {"title": "show", "visibility": "subscribers",
                                            "protection": protection.value}, expect=201)
            await c.api("POST", "/subscriptions", admin, {"creator_id": users[creator]["user"]["id"],
                                                          "fan_id": users["fan"]["user"]["id"]}, expect=201)
            joined = await c.api("POST", f"/streaming/{streams[creator]['id']}/join", users["fan"]["access_token"],
                                 expect=200)
            tokens[creator] = str(joined["token"])
    return PaidShow(engine, base, key["stream_key"], streams["creator"]["playback_id"], tokens["creator"],
                    streams["rival"]["playback_id"], tokens["rival"])


def kids_in_order(media: str) -> list[str]:
    """The key IDs of the identity key tags of a media playlist, in order."""
    return re.findall(r"/keys/[^/]+/([0-9a-f]{32})", media)


@pytest.mark.browser
@pytest.mark.parametrize(
    ("protection", "player"),
    [(Protection.CBCS, "shaka"), (Protection.CENC, "shaka"), (Protection.AES_128, "hlsjs")],
    ids=["cbcs-shaka", "cenc-shaka", "aes128-hlsjs"],
)
async def test_players_play_live_drm_on_through_a_reconnect_with_the_engines_keys(
    tmp_path: Path, ffmpeg: str, media_dir: Path, protection: Protection, player: str
) -> None:
    from tests.browser.player import play_hls_async

    clip = make_clip(ffmpeg, media_dir / "drm_live_240p.flv", seconds=30, size="426x240", bframes=0)
    data_dir = tmp_path / "data"
    show = await paid_show(data_dir, protection, rotate_every=3)
    engine = show.engine
    second: asyncio.subprocess.Process | None = None
    try:
        assert engine.rtmp is not None
        url = f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{show.stream_key}"
        first = await publish(ffmpeg, clip, url, extra=["-t", "8"])
        await wait_for(lambda: show.name in engine.hls.outputs and engine.hls.outputs[show.name].multivariant, 30)
        options: dict[str, Any] = {"player": player, "min_time": 13.0, "timeout": 90.0}
        if player == "shaka":
            options["licence_server"] = show.licence_url(show.name, show.token)
        playing = asyncio.create_task(play_hls_async(show.playback_url, **options))
        await asyncio.wait_for(first.wait(), 60)
        await asyncio.sleep(1.0)
        second = await publish(ffmpeg, clip, url, extra=["-t", "30"])
        report = await playing
        assert report.ok, report
        assert report.current_time >= 13.0
        media = engine.hls.outputs[show.name].variants["src"].playlist.render()
        assert "#EXT-X-DISCONTINUITY" in media
        stats = engine.key_http.stats
        if player == "shaka":
            # A licence per key period the player met: the first, the ones
            # rotated in every three segments, the reconnect's.
            assert stats.licences_served >= 2 and stats.refused == 0, stats
        else:
            assert stats.keys_served >= 2 and stats.refused == 0, stats
        # A reconnect starts a new period after the broadcast's highest.
        kids = kids_in_order(media)
        assert len(set(kids)) >= 2

        if player == "shaka":
            # The subscriber's licence for another stream does not open this one.
            wrong = await play_hls_async(show.playback_url, player="shaka", min_time=3.0, timeout=20.0,
                                         licence_server=show.licence_url(show.other, show.other_token))
            assert not wrong.ok, wrong
            assert wrong.played_time < 1.0
    finally:
        if second is not None and second.returncode is None:
            second.kill()
            await second.wait()
        keys = await asyncio.to_thread(show.keys)
        await engine.stop()
    assert len(keys) >= 2
    assert_no_clear_key(data_dir, [k.key for k in keys])


async def vod_set_up(tmp_path: Path, ffmpeg: str, media_dir: Path) -> tuple[Path, Path, Engine, Path, str]:
    """For the VOD tests: a short 240p clip, an engine in dev mode (keys and
    licences answer without a token, like playback) and a config file that
    points ``fanz-media transcode`` at the engine's data dir, hence its key
    store. Returns the clip, the data dir, the engine, the config file and
    the engine's base URL."""
    clip = make_clip(ffmpeg, media_dir / "drm_vod_240p.mp4", seconds=8, size="426x240")
    data_dir = tmp_path / "data"
    engine = await start_engine(data_dir)
    assert isinstance(engine, Engine)
    config = tmp_path / "engine.toml"
    config.write_text(f'[server]\ndata_dir = "{data_dir}"\n[hls]\nsegment_format = "fmp4"\n')
    return clip, data_dir, engine, config, f"http://127.0.0.1:{engine.http_port}"


@pytest.mark.browser
async def test_shaka_plays_cbcs_vod_made_by_the_transcode_command_with_the_engines_keys(
    tmp_path: Path, ffmpeg: str, media_dir: Path
) -> None:
    from tests.browser.player import play_hls_async
    from tests.browser.static_server import serve_directory

    clip, data_dir, engine, config, base = await vod_set_up(tmp_path, ffmpeg, media_dir)
    try:
        # The CLI's own entry point: it opens the key provider of the config's data dir.
        args = ["transcode", str(clip), str(tmp_path / "vod" / "movie"), "--config", str(config),
                "--ladder", "mobile", "--encoder", "libx264", "--quiet", "--protection", "cbcs",
                "--key-uri", f"{base}/keys"]
        assert await asyncio.to_thread(cli.main, args) == 0
        media = (tmp_path / "vod" / "movie" / "source" / "media.m3u8").read_text()
        assert "METHOD=SAMPLE-AES" in media and f"{base}/keys/movie/" in media
        async with serve_directory(tmp_path / "vod") as files:
            report = await play_hls_async(f"{files}movie/index.m3u8", player="shaka", min_time=4.0, timeout=40.0)
        assert report.ok, report
        assert engine.key_http.stats.keys_served >= 1
        period = await asyncio.to_thread(engine.key_provider.key_period, "movie", 0)
    finally:
        await engine.stop()
    assert_no_clear_key(data_dir, [period.key.key])


def decoded_frames(init: bytes, segments: list[bytes], path: Path, key: bytes | None) -> list[str]:
    """The MD5 of every decoded video frame of ``init`` + ``segments``."""
    path.write_bytes(init + b"".join(segments))
    options = {"decryption_key": key.hex()} if key is not None else {}
    with av.open(str(path), options=options) as container:
        return [hashlib.md5(bytes(frame.to_ndarray())).hexdigest() for frame in container.decode(video=0)]


async def live_fmp4(data_dir: Path, ffmpeg: str, clip: Path, protection: Protection) -> tuple[bytes, list[bytes],
                                                                                                 ContentKey | None]:
    """Publish ``clip`` to a dev engine whose ``drm.protection`` is
    ``protection``; the init segment and the segments it wrote to disk."""
    engine = await start_engine(data_dir, drm={"protection": protection, "rotate_every_segments": 0},
                                hls={"segment_format": SegmentFormat.FMP4})
    assert isinstance(engine, Engine) and engine.rtmp is not None
    try:
        proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/show", realtime=False)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        await wait_for(lambda: "show" in engine.hls.outputs and engine.hls.outputs["show"].ended, 20)
        folder = engine.hls.root / "show" / "src"
        media = engine.hls.outputs["show"].variants["src"].playlist.render()
        await wait_for(lambda: "#EXT-X-ENDLIST" in (folder / "media.m3u8").read_text(), 10)
        init_name = re.search(r'#EXT-X-MAP:URI="([^"]+)"', media).group(1)  # type: ignore[union-attr]
        names = [line for line in media.splitlines() if line.startswith("seg_")]
        init = (folder / init_name).read_bytes()
        segments = [(folder / n).read_bytes() for n in names]
        key = None
        if protection.encrypted:
            key = (await asyncio.to_thread(engine.key_provider.key_period, "show", 0)).key
    finally:
        await engine.stop()
    return init, segments, key


async def test_ffmpeg_decrypts_the_engines_live_cenc_to_a_clear_runs_frames(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path
) -> None:
    init, segments, key = await live_fmp4(tmp_path / "enc", ffmpeg, h264_aac_flv, Protection.CENC)
    clear_init, clear_segments, _ = await live_fmp4(tmp_path / "clear", ffmpeg, h264_aac_flv, Protection.NONE)
    assert key is not None and len(segments) == len(clear_segments) >= 3
    assert b"encv" in init and b"tenc" in init and b"pssh" in init and b"encv" not in clear_init
    for enc, clear in zip(segments, clear_segments, strict=True):
        assert b"senc" in enc and enc != clear and len(enc) > len(clear)
    expected = decoded_frames(clear_init, clear_segments, tmp_path / "clear.mp4", None)
    got = decoded_frames(init, segments, tmp_path / "enc.mp4", key.key)
    assert len(expected) > 50 and got == expected
    # Without the key (a wrong one), the frames are not the clear ones.
    wrong = bytes(b ^ 0x5A for b in key.key)
    try:
        garbled = decoded_frames(init, segments, tmp_path / "wrong.mp4", wrong)
    except av.error.InvalidDataError:
        garbled = []
    assert garbled != expected
    assert_no_clear_key(tmp_path / "enc", [key.key])


async def test_a_name_published_again_starts_after_its_highest_stored_period(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path
) -> None:
    """Two broadcasts under one name, the first ended before the second
    starts: the second's keys are new periods, never the first's."""
    data_dir = tmp_path / "data"
    engine = await start_engine(data_dir, drm={"protection": Protection.CBCS, "rotate_every_segments": 2},
                                hls={"segment_format": SegmentFormat.FMP4}, streams={"reconnect_grace_s": 0.0})
    assert isinstance(engine, Engine) and engine.rtmp is not None
    kids: list[list[str]] = []
    try:
        for _ in range(2):
            previous = engine.hls.outputs.get("show")
            proc = await publish(ffmpeg, h264_aac_flv, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/show",
                                 realtime=False)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            await wait_for(lambda before=previous: engine.hls.outputs.get("show") not in (None, before)
                           and engine.hls.outputs["show"].ended, 20)
            kids.append(kids_in_order(engine.hls.outputs["show"].variants["src"].playlist.render()))
        provider = engine.key_provider
        highest = await asyncio.to_thread(provider.highest_period, "show")
    finally:
        await engine.stop()
    first, second = (list(dict.fromkeys(k)) for k in kids)
    assert len(first) >= 2 and len(second) >= 2  # rotated every two segments
    assert not set(first) & set(second)
    assert highest == len(first) + len(second) - 1
