"""DRM in DASH end to end, through the real serve wiring: the live dynamic
MPD and the VOD static MPD of ``cenc`` and ``cbcs`` streams announce each key period as
ContentProtection, and Shaka Player (headless Chromium, its built-in ClearKey
CDM) plays them with licences from the engine's ``POST /drm/clearkey/NAME``.

- Live: a subscriber's token from the control API; Shaka takes the licence
  URL from the MPD's ``dashif:Laurl`` and plays on across key rotations and a
  publisher reconnect (each a new Period with its own key); with the licence
  server of another stream it fails.
- VOD: ``fanz-media transcode --protection cenc`` writes ``manifest.mpd``
  whose Period announces the asset's key; Shaka plays it with the engine's
  licences and fails with another asset's.
- Every ContentProtection's ``default_KID`` is the KID the media carries (the
  init segment's ``tenc`` or the fragment's ``seig``), its ``pssh`` parses as
  a W3C common PSSH naming that KID; no content key lies in clear in the
  data dir after the runs.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest

from drm.model import Protection
from engine.app import cli
from packager.dash.mpd import MPD_NS
from tests.conftest import make_clip, publish, wait_for
from tests.drm.test_drm_playback import paid_show, vod_set_up
from tests.drm.test_keys import assert_no_clear_key
from tests.test_dash_live import segment_urls, tenc_kid

NS = {"m": MPD_NS, "cenc": "urn:mpeg:cenc:2013", "dashif": "https://dashif.org/CPS"}
COMMON_SYSTEM_ID = bytes.fromhex("1077efecc0b24d02ace33c1e52e2fb4b")
pytestmark = pytest.mark.timeout(240)


def pssh_kids(box: bytes) -> tuple[bytes, list[bytes]]:
    """System ID and KIDs of a version 1 ``pssh`` box (ISO/IEC 23001-7 8.1)."""
    size, kind, version = struct.unpack_from(">I4sB", box)
    assert size == len(box) and kind == b"pssh" and version == 1
    system = box[12:28]
    (count,) = struct.unpack_from(">I", box, 28)
    kids = [box[32 + 16 * i : 48 + 16 * i] for i in range(count)]
    (data_size,) = struct.unpack_from(">I", box, 32 + 16 * count)
    assert 36 + 16 * count + data_size == size
    return system, kids


def period_kids(mpd: str) -> list[tuple[str, bytes]]:
    """(Period id, default KID) of every Period; each Period's every
    ContentProtection names one KID and its common pssh names it too."""
    out = []
    for period in ET.fromstring(mpd).findall("m:Period", NS):
        kids = set()
        for element in period.iter(f"{{{MPD_NS}}}ContentProtection"):
            default = element.get(f"{{{NS['cenc']}}}default_KID")
            if default is not None:
                kids.add(bytes.fromhex(default.replace("-", "")))
            pssh = element.find("cenc:pssh", NS)
            if pssh is not None and pssh.text:
                system, named = pssh_kids(base64.b64decode(pssh.text))
                if system == COMMON_SYSTEM_ID:
                    kids.update(named)
        assert len(kids) == 1, (period.get("id"), kids)
        out.append((period.get("id", ""), kids.pop()))
    return out


async def fetch(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        assert resp.status == 200, (url, resp.status)
        return await resp.read()


@pytest.mark.browser
@pytest.mark.parametrize("protection", [Protection.CENC, Protection.CBCS], ids=["cenc", "cbcs"])
async def test_shaka_plays_live_common_encryption_dash_across_rotation_and_reconnect_with_the_engines_licences(
    tmp_path: Path, ffmpeg: str, media_dir: Path, protection: Protection
) -> None:
    from tests.browser.player import play_hls_async

    clip = make_clip(ffmpeg, media_dir / "drm_live_240p.flv", seconds=30, size="426x240", bframes=0)
    data_dir = tmp_path / "data"
    show = await paid_show(data_dir, protection, rotate_every=3)
    engine = show.engine
    manifest = f"{show.base}/dash/{show.name}/manifest.mpd?token={show.token}"
    second: asyncio.subprocess.Process | None = None
    seen: dict[str, bytes] = {}
    try:
        assert engine.rtmp is not None
        url = f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{show.stream_key}"
        first = await publish(ffmpeg, clip, url, extra=["-t", "8"])
        output_ready = lambda: show.name in engine.hls.outputs and engine.hls.outputs[show.name].multivariant  # noqa: E731
        await wait_for(output_ready, 30)
        async with aiohttp.ClientSession() as session:
            text = (await fetch(session, manifest)).decode()
            scheme = ET.fromstring(text).find(".//m:ContentProtection", NS)
            assert scheme is not None and scheme.get("value") == protection.value
            laurl = ET.fromstring(text).find(".//m:ContentProtection/dashif:Laurl", NS)
            assert laurl is not None and laurl.text == show.licence_url(show.name, show.token)
            init = next(path for kind, path in segment_urls(text) if kind == "init")
            init_kid = tenc_kid(await fetch(session, f"{show.base}/dash/{show.name}/{init}"))
            assert period_kids(text)[0][1] == init_kid
            # No licence server configured: Shaka reads dashif:Laurl.
            playing = asyncio.create_task(play_hls_async(manifest, player="shaka", min_time=13.0, timeout=90.0))
            await asyncio.wait_for(first.wait(), 60)
            await asyncio.sleep(1.0)
            second = await publish(ffmpeg, clip, url, extra=["-t", "30"])
            while not playing.done():
                seen.update(period_kids((await fetch(session, manifest)).decode()))
                await asyncio.sleep(1.0)
            report = await playing
        assert report.ok, report
        assert report.current_time >= 13.0
        assert report.latency is not None  # played as live
        output = engine.hls.outputs[show.name]
        assert "#EXT-X-DISCONTINUITY" in output.variants["src"].playlist.render()
        # Rotated every three segments and at the reconnect: Periods with
        # distinct keys, a licence for each key the player met.
        assert len(set(seen.values())) >= 3, seen
        stats = engine.key_http.stats
        assert stats.licences_served >= 2 and stats.refused == 0, stats

        # The subscriber's licence for another stream does not open this one.
        wrong = await play_hls_async(manifest, player="shaka", min_time=3.0, timeout=20.0,
                                     licence_server=show.licence_url(show.other, show.other_token))
        assert not wrong.ok, wrong
        assert any("error 6007" in e for e in wrong.errors), wrong.errors  # LICENSE_REQUEST_FAILED
        assert wrong.played_time < 1.0
    finally:
        if second is not None and second.returncode is None:
            second.kill()
            await second.wait()
        keys = await asyncio.to_thread(show.keys)
        await engine.stop()
    assert {k.kid for k in keys} >= set(seen.values())
    assert_no_clear_key(data_dir, [k.key for k in keys])


@pytest.mark.browser
async def test_shaka_plays_cenc_dash_vod_made_by_the_transcode_command_with_the_engines_licences(
    tmp_path: Path, ffmpeg: str, media_dir: Path
) -> None:
    from tests.browser.player import play_hls_async
    from tests.browser.static_server import serve_directory

    clip, data_dir, engine, config, base = await vod_set_up(tmp_path, ffmpeg, media_dir)
    movie = tmp_path / "vod" / "movie"
    try:
        for name in ("movie", "other"):
            args = ["transcode", str(clip), str(tmp_path / "vod" / name), "--config", str(config),
                    "--ladder", "mobile", "--encoder", "libx264", "--quiet", "--protection", "cenc"]
            assert await asyncio.to_thread(cli.main, args) == 0
        period = await asyncio.to_thread(engine.key_provider.key_period, "movie", 0)
        text = (movie / "manifest.mpd").read_text()
        assert ET.fromstring(text).get("type") == "static"
        kids = period_kids(text)
        assert [kid for _, kid in kids] == [period.key.kid]
        assert ET.fromstring(text).find(".//m:ContentProtection", NS).get("value") == "cenc"  # type: ignore[union-attr]
        for kind, path in segment_urls(text):
            if kind == "init":
                assert tenc_kid((movie / path).read_bytes()) == period.key.kid
        async with serve_directory(tmp_path / "vod") as files:
            report = await play_hls_async(f"{files}movie/manifest.mpd", player="shaka", min_time=4.0, timeout=40.0,
                                          licence_server=f"{base}/drm/clearkey/movie")
            assert report.ok, (report.errors, report)
            assert engine.key_http.stats.licences_served >= 1
            wrong = await play_hls_async(f"{files}movie/manifest.mpd", player="shaka", min_time=3.0, timeout=20.0,
                                         licence_server=f"{base}/drm/clearkey/other")
            assert not wrong.ok, wrong
            assert any("error 6007" in e for e in wrong.errors), wrong.errors  # LICENSE_REQUEST_FAILED
            assert wrong.played_time < 1.0
    finally:
        await engine.stop()
    assert_no_clear_key(data_dir, [period.key.key])
    assert_no_clear_key(tmp_path / "vod", [period.key.key])


def test_vod_manifest_opens_a_period_per_rotated_key_and_announces_sample_aes_fmp4_as_cbcs(
    tmp_path: Path, ffmpeg: str, media_dir: Path
) -> None:
    """``--protection sample-aes --rotate-every 1`` in fMP4: every segment has
    its own key, so the static MPD has a Period per segment, each announcing
    ``cbcs`` (what the samples carry) and that segment's key: the init
    segment's for the first, the one its fragment names (``seig``) after."""
    clip = make_clip(ffmpeg, media_dir / "drm_vod_240p.mp4", seconds=8, size="426x240")
    data_dir = tmp_path / "data"
    config = tmp_path / "engine.toml"
    config.write_text(f'[server]\ndata_dir = "{data_dir}"\n[hls]\nsegment_format = "fmp4"\n')
    movie = tmp_path / "vod" / "movie"
    args = ["transcode", str(clip), str(movie), "--config", str(config), "--ladder", "mobile", "--encoder",
            "libx264", "--quiet", "--protection", "sample-aes", "--rotate-every", "1", "--key-uri", "/keys"]
    assert cli.main(args) == 0
    text = (movie / "manifest.mpd").read_text()
    root = ET.fromstring(text)
    assert {e.get("value") for e in root.iter(f"{{{MPD_NS}}}ContentProtection") if e.get("value")} == {"cbcs"}
    kids = [kid for _, kid in period_kids(text)]
    assert len(kids) >= 2 and len(set(kids)) == len(kids)
    urls = segment_urls(text)
    assert tenc_kid((movie / next(p for k, p in urls if k == "init")).read_bytes()) == kids[0]
    media = [p for k, p in urls if k == "media"]
    assert len(media) == len(kids)  # one segment per rendition and Period here
    for path, kid in zip(media[1:], kids[1:], strict=True):
        assert kid in (movie / path).read_bytes()  # the fragment's seig names its rotated key
