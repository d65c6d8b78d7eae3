"""LL-HLS from a live RTMP publish: every playlist reload follows the rules,
blocking reloads answer when the part exists, preload hints are held until
the part is written, delta updates skip old segments."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from packager.hls.config import SegmentFormat
from tests.conftest import make_clip, publish, start_engine, wait_for
from tests.hls_rules import ReloadChecker, check_multivariant, parse_media


@pytest.mark.parametrize("fmt", [SegmentFormat.FMP4, SegmentFormat.MPEGTS])
async def test_live_ll_hls_reloads_follow_the_rules(
    tmp_path: Path, ffmpeg: str, media_dir: Path, fmt: SegmentFormat
) -> None:
    clip = make_clip(ffmpeg, media_dir / "ll_clip.flv", seconds=16, size="320x180", bframes=0)
    engine = await start_engine(
        tmp_path / "data",
        hls={"segment_format": fmt, "window_segments": 8},
        streams={"reconnect_grace_s": 0.5},
    )
    proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/ll")  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{engine.http_port}/hls/ll"
    try:
        await wait_for(lambda: "ll" in engine.hls.outputs and engine.hls.outputs["ll"].multivariant, 30)
        checker = ReloadChecker(fmp4=fmt is SegmentFormat.FMP4)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/index.m3u8") as resp:
                variants = check_multivariant(await resp.text())
            media_url = f"{base}/{variants[0]['URI']}"
            async with http.get(media_url) as resp:
                pl = checker.check(await resp.text())
            assert pl.part_target == 0.334
            blocked_answers = 0
            parts_fetched = 0
            # Follow the live edge the way an LL-HLS client does, for ~10 s.
            for _ in range(20):
                if pl.ended:
                    break
                # The next part: of the segment after the last complete one.
                msn, part = pl.segments[-1].msn + 1, len(pl.open_parts)
                async with http.get(media_url, params={"_HLS_msn": str(msn), "_HLS_part": str(part)}) as resp:
                    assert resp.status == 200
                    pl = checker.check(await resp.text())
                    blocked_answers += 1
                if pl.ended:
                    break
                # The answer holds the part that was asked for.
                newest = pl.open_parts or pl.segments[-1].parts
                assert newest, "a blocking reload answered without the requested part"
                # The part the preload hint names is held until it exists.
                assert pl.preload_hint is not None
                async with http.get(f"{media_url.rsplit('/', 1)[0]}/{pl.preload_hint['URI']}") as resp:
                    assert resp.status == 200
                    assert len(await resp.read()) > 0
                    parts_fetched += 1
            assert blocked_answers >= 5 and parts_fetched >= 5
            # A request far beyond the live edge is refused (6.2.5.2).
            async with http.get(media_url, params={"_HLS_msn": str(pl.media_sequence + 50)}) as resp:
                assert resp.status == 400
            async with http.get(media_url, params={"_HLS_part": "1"}) as resp:
                assert resp.status == 400
        await asyncio.wait_for(proc.wait(), 60)
        output = engine.hls.outputs["ll"]
        await wait_for(lambda: output.ended, 10)
        async with aiohttp.ClientSession() as http:
            async with http.get(media_url) as resp:
                final = checker.check(await resp.text())
            assert final.ended and final.preload_hint is None
            # With eight 2 s segments, a delta update skips those older than 12 s.
            async with http.get(media_url, params={"_HLS_skip": "YES"}) as resp:
                delta = parse_media(await resp.text())
        full = len(final.segments)
        assert delta.skipped > 0 and delta.skipped + len(delta.segments) == full
        assert delta.version >= 9
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()
