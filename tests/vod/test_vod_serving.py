"""VOD assets through the real engine (``--dev``): playlists, segments and
byte ranges from storage, the MP4 download, the poster, deletion, and
hostile asset ids."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.storage import InvalidKeyError, LocalStorage
from packager.assets.http import parse_range, rewrite_mpd, rewrite_playlist
from packager.assets.ids import check_asset_id
from packager.assets.library import AssetLibrary
from packager.errors import AssetIdError
from tests.conftest import start_engine
from tests.vod.conftest import recording_layout


def _ffprobe_json(ffprobe: str, path: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run([ffprobe, "-v", "error", "-of", "json", *args, str(path)], capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def _playlist_duration(text: str) -> Fraction:
    return sum((Fraction(line[8:].split(",")[0]) for line in text.splitlines() if line.startswith("#EXTINF:")),
               Fraction(0))


async def test_asset_plays_from_storage_with_ranges_download_and_poster(
    data_dir: Path, tmp_path: Path, ffprobe: str
) -> None:
    engine = await start_engine(data_dir)
    base = f"http://127.0.0.1:{engine.http_port}/vod/clip-one"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/index.m3u8") as r:
                assert r.status == 200, await r.text()
                index = await r.text()
            media_uri = next(line for line in index.splitlines() if line and not line.startswith("#"))
            async with http.get(f"{base}/{media_uri}") as r:
                assert r.status == 200
                media = await r.text()
            assert "#EXT-X-ENDLIST" in media
            variant = media_uri.split("/")[0]
            segment = next(line for line in media.splitlines() if line and not line.startswith("#"))
            stored = (data_dir / "storage" / "assets" / "clip-one" / variant / segment).read_bytes()
            async with http.get(f"{base}/{variant}/{segment}") as r:
                assert r.status == 200 and await r.read() == stored
                assert r.headers["Accept-Ranges"] == "bytes"
            async with http.get(f"{base}/{variant}/{segment}", headers={"Range": "bytes=100-299"}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes 100-299/{len(stored)}"
                assert await r.read() == stored[100:300]
            async with http.get(f"{base}/{variant}/{segment}", headers={"Range": "bytes=-10"}) as r:
                assert r.status == 206 and await r.read() == stored[-10:]
            async with http.get(f"{base}/{variant}/{segment}", headers={"Range": f"bytes={len(stored)}-"}) as r:
                assert r.status == 416
            async with http.get(f"{base}/manifest.mpd") as r:
                assert r.status == 200 and "<MPD" in await r.text()

            async with http.get(f"{base}/download.mp4") as r:
                assert r.status == 200
                download = await r.read()
            mp4 = tmp_path / "download.mp4"
            mp4.write_bytes(download)
            probed = _ffprobe_json(ffprobe, mp4, "-show_format", "-show_streams")
            assert {s["codec_type"] for s in probed["streams"]} == {"video", "audio"}
            target = max(Fraction(line.split(":")[1]) for line in media.splitlines()
                         if line.startswith("#EXT-X-TARGETDURATION:"))
            assert abs(Fraction(probed["format"]["duration"]) - _playlist_duration(media)) <= target
            async with http.get(f"{base}/download.mp4", headers={"Range": "bytes=1000-1999"}) as r:
                assert r.status == 206 and await r.read() == download[1000:2000]
            # Made once, then kept beside the asset.
            assert (data_dir / "storage" / "assets" / "clip-one" / "download.mp4").read_bytes() == download

            async with http.get(f"{base}/poster.jpg") as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
                poster = await r.read()
            assert poster[:3] == b"\xff\xd8\xff"
            jpg = tmp_path / "poster.jpg"
            jpg.write_bytes(poster)
            video = _ffprobe_json(ffprobe, jpg, "-show_streams")["streams"][0]
            first = next(s for s in _ffprobe_json(ffprobe, mp4, "-show_streams")["streams"]
                         if s["codec_type"] == "video")
            assert (video["width"], video["height"]) == (first["width"], first["height"])

            # Deleted: 404 at once, for the playlist and every file.
            assert engine.assets.delete("clip-one") > 0
            for path in ("index.m3u8", media_uri, f"{variant}/{segment}", "download.mp4", "poster.jpg"):
                async with http.get(f"{base}/{path}") as r:
                    assert r.status == 404, path
    finally:
        await engine.stop()


async def test_a_recording_in_the_recorder_layout_is_an_asset(data_dir: Path) -> None:
    storage = LocalStorage(data_dir / "storage")
    source = data_dir / "storage" / "assets" / "clip-one"
    recording_layout(source, storage, "0123456789abcdef0123456789abcdef")
    engine = await start_engine(data_dir)
    base = f"http://127.0.0.1:{engine.http_port}/vod/0123456789abcdef0123456789abcdef"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/index.m3u8") as r:
                assert r.status == 200
            async with http.get(f"{base}/manifest.mpd") as r:
                assert r.status == 404
            async with http.get(f"{base}/download.mp4") as r:
                assert r.status == 200 and len(await r.read()) > 10_000
    finally:
        await engine.stop()


HOSTILE = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["..", "../etc", "clip-one/..", "%2e%2e", "CLIP-ONE", "a", "clip one", "clip-one\x00", "-ab"]),
)


@given(asset=HOSTILE, variant=st.text(max_size=40), name=st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_hostile_ids_and_names_never_leave_the_asset(asset: str, variant: str, name: str) -> None:
    try:
        check_asset_id(asset)
    except AssetIdError:
        return
    prefix = f"assets/{asset}/"
    try:
        key = AssetLibrary.file_key(prefix, variant, name)
    except AssetIdError:
        return
    assert key.startswith(prefix) and ".." not in key.split("/")
    from cluster.storage import check_key

    try:
        check_key(key)
    except InvalidKeyError:  # pragma: no cover - would be a hole in the rule
        pytest.fail(f"{key!r} passed the asset rules but is not a storage key")


async def test_hostile_paths_over_http_are_404(data_dir: Path) -> None:
    engine = await start_engine(data_dir)
    base = f"http://127.0.0.1:{engine.http_port}/vod"
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("..%2F..%2Fmaster.key/index.m3u8", "clip-one/..%2F..%2Fhls/index.m3u8",
                         "clip-one/source/..%2Findex.m3u8", "CLIP-ONE/index.m3u8", "clip-one/.hidden/x.m4s",
                         "clip-one/source/seg.m4s%00.ts", "clip-one/source/../../../etc/passwd"):
                async with http.get(f"{base}/{path}") as r:
                    assert r.status == 404, path
    finally:
        await engine.stop()


def test_range_parser_and_uri_rewriting() -> None:
    assert parse_range("bytes=0-0", 10) == (0, 1)
    assert parse_range("bytes=5-", 10) == (5, 10)
    assert parse_range("bytes=-3", 10) == (7, 10)
    assert parse_range("bytes=2-100", 10) == (2, 10)
    assert parse_range("items=1-2", 10) is None
    assert parse_range("bytes=0-1,4-5", 10) is None
    for bad in ("bytes=10-", "bytes=5-4", "bytes=-0"):
        with pytest.raises(ValueError):
            parse_range(bad, 10)
    add = lambda uri: uri + "?token=t"  # noqa: E731
    text = '#EXTM3U\n#EXT-X-MAP:URI="init_a_1.mp4"\n#EXTINF:2.0,\nseg_a_0.m4s\n#EXT-X-ENDLIST\n'
    assert rewrite_playlist(text, add) == text.replace(".mp4", ".mp4?token=t").replace(".m4s", ".m4s?token=t")
    mpd = '<SegmentTemplate initialization="v/init.mp4" media="v/seg_$Number$.m4s">'
    assert rewrite_mpd(mpd, lambda u: u + "?a=1&b=2") == (
        '<SegmentTemplate initialization="v/init.mp4?a=1&amp;b=2" media="v/seg_$Number$.m4s?a=1&amp;b=2">'
    )


async def test_an_encrypted_asset_has_no_download_or_poster(data_dir: Path) -> None:
    media = next((data_dir / "storage" / "assets" / "clip-one").glob("*/media.m3u8"))
    text = media.read_text().replace("#EXT-X-MAP:", '#EXT-X-KEY:METHOD=AES-128,URI="/keys/k/1"\n#EXT-X-MAP:', 1)
    media.write_text(text)
    engine = await start_engine(data_dir)
    base = f"http://127.0.0.1:{engine.http_port}/vod/clip-one"
    try:
        async with aiohttp.ClientSession() as http:
            for name in ("download.mp4", "poster.jpg"):
                async with http.get(f"{base}/{name}") as r:
                    assert r.status == 404 and "encrypted" in await r.text()
            async with http.get(f"{base}/index.m3u8") as r:
                assert r.status == 200
    finally:
        await engine.stop()
