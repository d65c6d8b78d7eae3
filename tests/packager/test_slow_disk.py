"""A stuck disk under one stream holds back neither another stream's
playlists nor any RTMP publisher; playlists never name a segment that is not
on disk yet."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp

from engine.app.config import load_config
from engine.app.serve import Engine
from engine.registry import StreamRegistry
from packager.hls.config import HlsConfig
from packager.hls.disk import LocalDisk
from packager.hls.live import HlsService
from tests.conftest import make_clip, publish, wait_for
from tests.packager.test_fmp4 import demux

STUCK_LIMIT_S = 120.0


class StuckDisk(LocalDisk):
    """The local disk, except that writes under one stream's folder wait
    until :attr:`release` is set."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.release = threading.Event()
        self.waiting = threading.Event()

    def write(self, path: Path, data: bytes) -> None:
        if self.stream in path.parts:
            self.waiting.set()
            self.release.wait(STUCK_LIMIT_S)
        super().write(path, data)


async def start(data_dir: Path, disk: StuckDisk) -> Engine:
    config = load_config(None, env={}).with_overrides(
        server={"data_dir": data_dir, "dev": True, "host": "127.0.0.1"},
        rtmp={"port": 0},
        http={"port": 0, "api": False},
        streams={"reconnect_grace_s": 0.5},
        transcode={"enabled": False},
    )
    engine = Engine(config, hls_disk=disk)
    await engine.start()
    return engine


def on_disk(engine: Engine, name: str) -> set[str]:
    return {p.name for p in (engine.hls.root / name).rglob("*") if p.is_file()}


async def test_stuck_disk_of_one_stream_delays_no_other(tmp_path: Path, ffmpeg: str, h264_aac_flv: Path) -> None:
    disk = StuckDisk("slow")
    engine = await start(tmp_path / "data", disk)
    procs = []
    try:
        assert engine.rtmp is not None
        base = f"rtmp://127.0.0.1:{engine.rtmp.port}/live"
        procs = [await publish(ffmpeg, h264_aac_flv, f"{base}/{name}") for name in ("slow", "fast")]
        await wait_for(disk.waiting.is_set, 30)
        # The stuck stream's publisher is still read (and acknowledged, on
        # the same path) while its files wait.
        slow_stream = engine.registry.get("slow")
        assert slow_stream is not None
        seen = slow_stream.stats.packets_in
        await wait_for(lambda: slow_stream.stats.packets_in > seen + 60, 30)

        # The other stream's playlists come out while the disk is stuck.
        await wait_for(lambda: "fast" in engine.hls.outputs and engine.hls.outputs["fast"].multivariant, 30)
        url = f"http://127.0.0.1:{engine.http_port}/hls/fast/src/media.m3u8"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            assert "#EXTINF:" in await resp.text()

        # Both publishers are read, acknowledged and done: the stuck disk
        # never reached the ingest.
        for proc in procs:
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
        await wait_for(lambda: engine.hls.outputs["fast"].ended, 30)
        assert not disk.release.is_set()

        # Nothing of the stuck stream is published before it is on disk.
        slow = engine.hls.outputs["slow"]
        assert not slow.ended and slow.multivariant is None
        assert all(not v.playlist.segments and v.playlist.open is None for v in slow.variants.values())

        disk.release.set()
        await wait_for(lambda: slow.ended, 60)
        variant = slow.variants["src"]
        assert len(variant.playlist.segments) == 3
        files = on_disk(engine, "slow")
        assert {s.uri for s in variant.playlist.segments} <= files
        assert "media.m3u8" in files
    finally:
        disk.release.set()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await engine.stop()


async def test_playlist_never_names_a_segment_not_yet_written(
    tmp_path: Path, ffmpeg: str, h264_aac_flv: Path
) -> None:
    """Each time the in-memory playlist changes, every segment it lists is
    already a file (the disk is slowed, not stuck)."""

    class CheckedDisk(StuckDisk):
        def write(self, path: Path, data: bytes) -> None:
            threading.Event().wait(0.05)  # a slow disk
            super().write(path, data)

    disk = CheckedDisk("none")
    engine = await start(tmp_path / "data", disk)
    try:
        assert engine.rtmp is not None
        proc = await publish(ffmpeg, h264_aac_flv, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/checked")
        await wait_for(lambda: "checked" in engine.hls.outputs, 30)
        output = engine.hls.outputs["checked"]
        checks = 0
        while not output.ended:
            await output.wait_changed(1.0)
            for variant in output.variants.values():
                for segment in variant.playlist.segments:
                    assert (variant.directory / segment.uri).is_file(), segment.uri
                    checks += 1
        assert checks > 0
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        await engine.stop()


class BrokenDisk(LocalDisk):
    """The local disk, except that writes under one stream's folder fail
    (a full or failing volume)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream

    def write(self, path: Path, data: bytes) -> None:
        if self.stream in path.parts and path.suffix == ".m4s":
            raise OSError(28, "No space left on device")
        super().write(path, data)


async def test_a_failing_disk_ends_only_its_stream(tmp_path: Path, ffmpeg: str, media_dir: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    clip = make_clip(ffmpeg, media_dir / "soak.flv", seconds=2, size="320x180", gop_seconds=1)
    track_list, packets = demux(clip)
    registry = StreamRegistry(grace_s=0)
    hls = HlsService(HlsConfig(), tmp_path / "hls", registry, ended_retention_s=0.2, disk=BrokenDisk("broken"))
    try:
        publishers = {name: registry.claim(name) for name in ("broken", "fine")}
        for publisher in publishers.values():
            publisher.start(tuple(track_list))
        for packet in packets:
            for publisher in publishers.values():
                publisher.write(packet)
            await asyncio.sleep(0)
        for publisher in publishers.values():
            publisher.close()
        await wait_for(lambda: "fine" in hls.outputs and hls.outputs["fine"].ended, 30)
        assert hls.outputs["fine"].variants["src"].playlist.segments
        # The failing stream's playlist ended where it stood, named nothing
        # unwritten, and its output expired like any ended stream's.
        await wait_for(lambda: "broken" not in hls.outputs, 30)
        assert "HLS output broken: a disk job failed" in caplog.text
        assert "No space left on device" in caplog.text
    finally:
        await hls.close()
