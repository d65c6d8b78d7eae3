"""Short streams, started and ended in a loop, leave nothing behind: memory,
open files, files on disk, per-stream state and /metrics series stay flat.
/metrics is scraped in a tight loop all the while and never fails."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import sys
import tracemalloc
from pathlib import Path

import aiohttp

from engine.app.serve import Engine
from engine.media import Packet, RenditionId, Track
from engine.registry import StreamRegistry
from tests.conftest import make_clip, publish, start_engine, wait_for
from tests.packager.test_fmp4 import demux

SOAK_STREAMS = 200


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def hls_files(engine: Engine) -> list[str]:
    # os.walk skips folders removed while it walks (the writers run meanwhile).
    return [name for _, _, names in os.walk(engine.hls.root) for name in names]


async def settled(engine: Engine) -> None:
    """Every ended stream's output expired and its folder removed."""
    await wait_for(lambda: not engine.hls.outputs and not engine.hls.segmenters and not hls_files(engine), 30, 0.01)


def one_stream(engine: Engine, name: str, tracks: tuple[Track, ...], packets: list[Packet]) -> None:
    """A source and one rendition of it (as a transcoder publishes them),
    with its own settings, from start to end."""
    engine.registry.configure(name, "ladder", "default")
    source = engine.registry.claim(name)
    source.start(tracks)
    rendition = engine.registry.claim(RenditionId(name, "low"))
    rendition.start(tracks)
    for packet in packets:
        source.write(packet)
        rendition.write(packet)
    rendition.close()
    source.close()


async def scrape_forever(url: str, scrapes: list[int]) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as resp:
                body = await resp.text()
                assert resp.status == 200, body
            scrapes.append(series(body))


async def test_200_streams_leave_memory_files_and_metrics_flat(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    clip = make_clip(ffmpeg, media_dir / "soak.flv", seconds=2, size="320x180", gop_seconds=1)
    track_list, packets = demux(clip)
    tracks = tuple(track_list)
    engine = await start_engine(
        tmp_path / "data",
        rtmp={"enabled": False},
        streams={"reconnect_grace_s": 0, "ended_retention_s": 0},
        http={"metrics_stream_labels": True},
    )
    scrapes: list[int] = []
    scraper = asyncio.get_running_loop().create_task(
        scrape_forever(f"http://127.0.0.1:{engine.http_port}/metrics", scrapes)
    )
    tracemalloc.start()
    try:
        warm_up = 20
        for i in range(SOAK_STREAMS):
            one_stream(engine, f"soak{i}", tracks, packets)
            await asyncio.sleep(0)  # let the packager and the scraper run
            if i % 10 == 9:
                await settled(engine)
            if i == warm_up - 1:
                gc.collect()
                memory_before = tracemalloc.get_traced_memory()[0]
                files_before = open_files()
                series_before = series(engine.metrics.render().decode())
        await settled(engine)
        assert not scraper.done(), scraper.exception()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - memory_before
        # (a file or two may be open for a moment: an HTTP connection, a pipe)
        assert open_files() <= files_before + 2
        assert series(engine.metrics.render().decode()) == series_before
        assert all(engine.registry.settings(f"soak{i}") == {} for i in range(SOAK_STREAMS))
        # 180 more streams in: what any of them kept would show (each one
        # that leaked its segmenter kept tens of kB).
        assert grown < 1_000_000, f"memory grew by {grown} bytes over {SOAK_STREAMS - warm_up} streams"
        assert len(scrapes) > 10
    finally:
        tracemalloc.stop()
        scraper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scraper
        await engine.stop()


async def test_published_streams_leave_metrics_and_state_flat(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path
) -> None:
    engine = await start_engine(
        tmp_path / "data",
        streams={"reconnect_grace_s": 0, "ended_retention_s": 0},
        http={"metrics_stream_labels": True},
    )
    try:
        assert engine.rtmp is not None
        counts = []
        for i in range(6):
            name = f"pub{i}"
            engine.registry.configure(name, "ladder", "default")
            proc = await publish(
                ffmpeg, h264_aac_flv, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/{name}", realtime=False
            )
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            await settled(engine)
            assert engine.registry.settings(name) == {}
            await wait_for(lambda: engine.rtmp is not None and engine.rtmp.connection_count == 0, 10)
            text = engine.metrics.render().decode()
            assert not re.search(r'stream="pub', text), text
            counts.append((series(text), open_files()))
        assert len({n for n, _ in counts}) == 1, counts
        # One file more or less is a connection closing; one per stream would be a leak.
        assert counts[-1][1] <= counts[0][1] + 1, counts
    finally:
        await engine.stop()


async def test_settings_end_with_their_stream() -> None:
    registry = StreamRegistry(grace_s=0)
    registry.configure("s", "effects", {"effects": []})
    publisher = registry.claim("s")
    assert registry.settings("s") == {"effects": {"effects": []}}
    publisher.close()
    assert registry.settings("s") == {}


async def test_metrics_scraped_while_streams_churn(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    """Many streams live and others starting and ending all the while: every
    scrape answers 200 (the collectors never iterate a dict being changed)."""
    clip = make_clip(ffmpeg, media_dir / "soak.flv", seconds=2, size="320x180", gop_seconds=1)
    tracks = tuple(demux(clip)[0])
    engine = await start_engine(
        tmp_path / "data",
        rtmp={"enabled": False},
        streams={"reconnect_grace_s": 0, "ended_retention_s": 0},
        http={"metrics_stream_labels": True},
    )
    live = []
    for i in range(300):
        publisher = engine.registry.claim(f"live{i}")
        publisher.start(tracks)
        live.append(publisher)
    scrapes: list[int] = []
    scraper = asyncio.get_running_loop().create_task(
        scrape_forever(f"http://127.0.0.1:{engine.http_port}/metrics", scrapes)
    )
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        i = 0
        while len(scrapes) < 30 and not scraper.done():
            publisher = engine.registry.claim(f"churn{i}")
            publisher.start(tracks)
            publisher.close()
            i += 1
            await asyncio.sleep(0)
        assert not scraper.done(), scraper.exception()
    finally:
        sys.setswitchinterval(interval)
        scraper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scraper
        for publisher in live:
            publisher.close()
        await engine.stop()
