"""Recording through the real engine: ffmpeg publishes over RTMP, the HLS
output's segments are kept as a recording in the local storage backend, and
what is in storage is checked against the live playlist and read by ffprobe."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from cluster.storage.setup import storage_root
from packager.recording.journal import JournalState, parse_journal
from tests.conftest import make_clip, publish, start_engine, wait_for


def journals(engine: Any) -> list[JournalState]:
    found = []
    for path in sorted(engine.recordings.journal_dir.glob("*.journal")):
        state = parse_journal(path.read_bytes())
        assert state is not None
        found.append(state)
    return found


async def closed_recordings(engine: Any, count: int = 1, timeout: float = 60) -> list[JournalState]:
    await wait_for(lambda: len(journals(engine)) >= count and all(s.reported for s in journals(engine)), timeout)
    assert await asyncio.to_thread(engine.uploader.wait_empty, 30)
    return journals(engine)


def media_playlist(path: Path) -> tuple[list[Fraction], list[str], str]:
    text = path.read_text()
    durations = [Fraction(line.split(":")[1].rstrip(",")).limit_denominator(1000000)
                 for line in text.splitlines() if line.startswith("#EXTINF:")]
    files = [line for line in text.splitlines() if line and not line.startswith("#")]
    return durations, files, text


def ffprobe_duration(ffprobe: str, playlist: Path | str) -> float:
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(playlist)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return float(json.loads(out.stdout)["format"]["duration"])


async def test_recording_lists_every_live_segment_across_a_reconnect(
    tmp_path: Path, ffmpeg: str, ffprobe: str, media_dir: Path
) -> None:
    clip = make_clip(ffmpeg, media_dir / "rec_4s.flv", seconds=4, gop_seconds=1)
    engine = await start_engine(tmp_path / "data", recording={"default": True},
                                streams={"reconnect_grace_s": 3.0}, hls={"window_segments": 64})
    try:
        url = f"rtmp://127.0.0.1:{engine.rtmp.port}/live/alice"
        for _ in range(2):  # the second publish comes back within the grace window
            proc = await publish(ffmpeg, clip, url)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        [state] = await closed_recordings(engine)
        live = engine.hls.outputs["alice"].variants["src"].playlist
        live_durations = [s.duration for s in live.segments]
    finally:
        await engine.stop()
    assert state.closed and not state.interrupted and state.stop_reason is None
    root = storage_root(engine.config.storage, engine.data_dir) / "recordings" / state.recording_id
    durations, files, text = media_playlist(root / "src" / "media.m3u8")
    assert durations == [Fraction(float(d)).limit_denominator(1000000) for d in live_durations] or \
        [round(float(d), 6) for d in durations] == [round(float(d), 6) for d in live_durations]
    assert len(files) == state.segments == len(live_durations)
    assert all((root / "src" / f).is_file() for f in files)
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    assert text.count("#EXT-X-MAP:") == 2
    manifest = json.loads((root / "recording.json").read_text())
    assert manifest["state"] == "complete" and manifest["segments"] == state.segments
    probed = ffprobe_duration(ffprobe, root / "index.m3u8")
    assert abs(probed - float(sum(live_durations))) < 1.0


async def test_max_duration_stops_the_recording_not_the_stream(
    tmp_path: Path, ffmpeg: str, media_dir: Path
) -> None:
    clip = make_clip(ffmpeg, media_dir / "rec_7s.flv", seconds=7, gop_seconds=1)
    engine = await start_engine(tmp_path / "data", recording={"default": True, "max_duration_s": 3.0},
                                streams={"reconnect_grace_s": 0.3}, hls={"window_segments": 64})
    try:
        proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/bob")
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        [state] = await closed_recordings(engine)
        live = engine.hls.outputs["bob"].variants["src"].playlist
        assert state.stop_reason == "max_duration" and not state.interrupted
        assert 0 < float(state.duration) <= 3.0 and state.segments >= 1
        await wait_for(lambda: live.ended, 30)  # the live stream went on to its end
        assert float(sum(s.duration for s in live.segments)) >= 6.0
        assert engine.recordings.stops["max_duration"] == 1
        body = await asyncio.to_thread(engine.metrics.render_snapshot, engine.metrics.snapshot())
        assert b'fanz_recording_stops_total{reason="max_duration"} 1.0' in body
    finally:
        await engine.stop()


async def test_a_full_spool_stops_the_recording_not_the_stream(
    tmp_path: Path, ffmpeg: str, media_dir: Path
) -> None:
    clip = make_clip(ffmpeg, media_dir / "rec_4s.flv", seconds=4, gop_seconds=1)
    engine = await start_engine(tmp_path / "data", recording={"default": True},
                                storage={"spool_max_bytes": 20_000},
                                streams={"reconnect_grace_s": 0.3}, hls={"window_segments": 64})
    try:
        proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/carol")
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        [state] = await closed_recordings(engine)
        live = engine.hls.outputs["carol"].variants["src"].playlist
        assert state.stop_reason == "spool_full"
        await wait_for(lambda: live.ended, 30)
        assert len(live.segments) >= 2
        assert engine.recordings.stops["spool_full"] == 1
        assert engine.recordings.in_progress == 0
    finally:
        await engine.stop()


async def test_the_disk_quota_stops_the_recording_not_the_stream(
    tmp_path: Path, ffmpeg: str, media_dir: Path
) -> None:
    clip = make_clip(ffmpeg, media_dir / "rec_4s.flv", seconds=4, gop_seconds=1)
    engine = await start_engine(tmp_path / "data", recording={"default": True, "disk_quota_bytes": 400_000},
                                streams={"reconnect_grace_s": 0.3}, hls={"window_segments": 64})
    try:
        proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/erin")
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        [state] = await closed_recordings(engine)
        live = engine.hls.outputs["erin"].variants["src"].playlist
        assert state.stop_reason == "disk_quota" and state.bytes <= 400_000
        await wait_for(lambda: live.ended, 30)
        assert len(live.segments) > state.segments
        root = storage_root(engine.config.storage, engine.data_dir) / "recordings" / state.recording_id
        _, files, text = media_playlist(root / "src" / "media.m3u8")
        assert len(files) == state.segments and text.rstrip().endswith("#EXT-X-ENDLIST")
        assert json.loads((root / "recording.json").read_text())["state"] == "stopped"
    finally:
        await engine.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs the right to mount; skipped where it is missing)."""
    path = tmp_path / "small_disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                             capture_output=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=True)


def fill(path: Path) -> None:
    """Write ``path`` until its disk is full (ENOSPC)."""
    with open(path, "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
                os.fsync(filler.fileno())
        except OSError:
            pass


async def test_a_full_disk_stops_the_recording_not_the_stream(
    tmp_path: Path, ffmpeg: str, media_dir: Path, small_disk: Path
) -> None:
    """The spool's disk fills up (ENOSPC on a small tmpfs filled to the
    brim once the recording is under way); once room comes back, the
    stopped recording's final playlists are spooled and it is reported."""
    clip = make_clip(ffmpeg, media_dir / "rec_7s.flv", seconds=7, gop_seconds=1)
    engine = await start_engine(tmp_path / "data", recording={"default": True},
                                storage={"spool_dir": str(small_disk / "spool")},
                                streams={"reconnect_grace_s": 0.3}, hls={"window_segments": 64})
    try:
        proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/frank")
        await wait_for(lambda: bool(journals(engine)) and journals(engine)[0].segments >= 1, 30)
        await asyncio.to_thread(fill, small_disk / "filler")
        await wait_for(lambda: engine.recordings.stops["disk_full"] == 1, 30)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        live = engine.hls.outputs["frank"].variants["src"].playlist
        await wait_for(lambda: live.ended, 30)
        (small_disk / "filler").unlink()  # room again for the final playlists
        [state] = await closed_recordings(engine)
        assert state.stop_reason == "disk_full" and state.segments >= 1 and not state.interrupted
        assert len(live.segments) > state.segments
        root = storage_root(engine.config.storage, engine.data_dir) / "recordings" / state.recording_id
        _, files, text = media_playlist(root / "src" / "media.m3u8")
        assert len(files) == state.segments and text.rstrip().endswith("#EXT-X-ENDLIST")
    finally:
        await engine.stop()


async def test_the_record_flag_turned_on_and_off_while_live(
    tmp_path: Path, ffmpeg: str, media_dir: Path
) -> None:
    """The setting the control API hands the engine (``recording``) starts
    a recording at the next segment, with its init segment, and closes it
    when turned off; the stream is untouched."""
    clip = make_clip(ffmpeg, media_dir / "rec_7s.flv", seconds=7, gop_seconds=1)
    engine = await start_engine(tmp_path / "data", streams={"reconnect_grace_s": 0.3},
                                hls={"window_segments": 64})
    try:
        proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/gina")
        await wait_for(lambda: "gina" in engine.hls.outputs
                       and len(engine.hls.outputs["gina"].variants["src"].playlist.segments) >= 1, 30)
        assert journals(engine) == []
        engine.registry.configure("gina", "recording", True)
        await wait_for(lambda: bool(journals(engine)) and journals(engine)[0].segments >= 1, 30)
        engine.registry.configure("gina", "recording", False)
        [state] = await closed_recordings(engine)
        assert state.stop_reason == "turned_off" and state.segments >= 1
        assert state.variants["src"].inits and not state.variants["src"].segments[0].discontinuity
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        live = engine.hls.outputs["gina"].variants["src"].playlist
        await wait_for(lambda: live.ended, 30)
        assert len(live.segments) > state.segments + 1
        assert len(journals(engine)) == 1  # no second recording once off
    finally:
        await engine.stop()
