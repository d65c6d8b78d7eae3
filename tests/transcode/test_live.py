"""The live transcoder over the stream registry, and its drop policy."""

from __future__ import annotations

import asyncio
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest

from engine.codecs import join_avcc
from engine.media import Codec, Packet, StreamEnded, StreamStarted
from engine.registry import LiveStream, StreamRegistry, Subscription
from tests.conftest import make_clip
from transcode.core import RenditionPacket, StreamTranscoder
from transcode.encoders import EncoderProbe
from transcode.fanout import usable_cpus
from transcode.keyframes import SourceKeyframeGrid
from transcode.live import LiveTranscoder
from transcode.worker import DropPolicy

from .conftest import model_packets, small_ladder

pytestmark = pytest.mark.timeout(120)
TB = Fraction(1, 1000)


def watch_renditions(registry: StreamRegistry, source: str) -> dict[str, Subscription]:
    subs: dict[str, Subscription] = {}

    def created(stream: LiveStream) -> None:
        if stream.rendition is not None and stream.rendition.source == source:
            subs[stream.rendition.rung] = stream.subscribe("test", maxsize=100_000)

    registry.on_stream_created(created)
    return subs


async def run_live(
    clip: Path, probe: EncoderProbe, **kwargs: object
) -> tuple[LiveTranscoder, dict[str, list[object]], list[Packet]]:
    tracks, packets = model_packets(clip)
    registry = StreamRegistry(grace_s=0)
    subs = watch_renditions(registry, "cam")
    pub = registry.claim("cam")
    pub.start(tracks)
    live = LiveTranscoder(registry, "cam", small_ladder(), probe, encoder="libx264", **kwargs)  # type: ignore[arg-type]
    task = asyncio.create_task(live.run())
    await asyncio.sleep(0)
    pace = "frame_filter" not in kwargs
    for i, packet in enumerate(packets):
        pub.write(packet)
        if pace and i % 8 == 0:
            await asyncio.sleep(0.005)
    pub.close("done")
    await asyncio.wait_for(task, 60)
    items = {rung: list(sub.drain()) for rung, sub in subs.items()}
    return live, items, packets


async def test_live_transcoder_publishes_each_rung(clip: Path, probe: EncoderProbe) -> None:
    live, items, packets = await run_live(clip, probe, queue_size=100_000)  # never drops
    assert sorted(items) == ["240p", "288p", "source"]
    source_keys = sorted(p.pts for p in packets if p.track == 0 and p.keyframe)
    assert source_keys == [0, 1000, 2000]
    for name, got in items.items():
        assert isinstance(got[0], StreamStarted)
        video, audio = got[0].tracks
        assert video.codec is Codec.H264 and audio.codec is Codec.AAC and video.index == 0 and audio.index == 1
        assert isinstance(got[-1], StreamEnded)
        vpk = [x for x in got if isinstance(x, Packet) and x.track == 0]
        keys = sorted(p.pts for p in vpk if p.keyframe)
        assert [rescaled * TB for rescaled in keys] == [k * TB for k in source_keys], name
        assert vpk[0].keyframe
        assert any(isinstance(x, Packet) and x.track == 1 for x in got)
    assert items["240p"][0].tracks[0].height == 240  # type: ignore[union-attr]
    assert live.status.renditions == {"cam/source": "copy", "cam/288p": "libx264", "cam/240p": "libx264"}
    source_video = [x for x in items["source"] if isinstance(x, Packet) and x.track == 0]
    assert [p.data for p in source_video] == [p.data for p in packets if p.track == 0]


async def test_overrun_drops_whole_gops_and_counts(clip: Path, probe: EncoderProbe) -> None:
    def slow_effect(frame: av.VideoFrame) -> av.VideoFrame:
        time.sleep(0.01)  # an effect slower than real time, on the worker thread
        return frame

    live, items, packets = await run_live(clip, probe, queue_size=4, frame_filter=slow_effect)
    drops = live.status.drops
    assert drops.gops_dropped >= 1 and drops.video_packets_dropped_gop > 0
    encoded = [x for x in items["288p"] if isinstance(x, Packet) and x.track == 0]
    total_video = sum(1 for p in packets if p.track == 0)
    assert 0 < len(encoded) < total_video
    assert encoded[0].keyframe
    # The passed-through source is copied on the event loop: nothing lost.
    source_video = [x for x in items["source"] if isinstance(x, Packet) and x.track == 0]
    assert len(source_video) == total_video


@pytest.fixture(scope="module")
def long_gop_clip(ffmpeg: str, media_dir: Path) -> Path:
    """4 s of 640x360 30 fps H.264 with a single keyframe (a 300-frame GOP)."""
    return make_clip(ffmpeg, media_dir / "tc_640x360_4s_gop300.mp4", seconds=4, gop_seconds=10)


async def test_long_source_gop_rungs_place_their_own_keyframes(long_gop_clip: Path, probe: EncoderProbe) -> None:
    live, items, packets = await run_live(long_gop_clip, probe, queue_size=100_000, segment_target=Fraction(1))
    assert sorted(p.pts for p in packets if p.track == 0 and p.keyframe) == [0]
    # The passthrough rendition is never published: its one keyframe would
    # make one 4 s segment that lines up with nothing.
    assert sorted(items) == ["240p", "288p"]
    for name, got in items.items():
        keys = sorted(x.pts for x in got if isinstance(x, Packet) and x.track == 0 and x.keyframe)
        assert keys == [0, 1000, 2000, 3000], name
        assert any(isinstance(x, Packet) and x.track == 1 for x in got)
    status = live.status
    assert status.keyframes == "own"
    assert "more than 1 s" in status.passthrough_reason and "not passed through" in status.passthrough_reason
    assert status.renditions == {"cam/288p": "libx264", "cam/240p": "libx264"}
    assert status.decoder == "software" and status.encoder == "libx264"


async def test_short_source_gop_keeps_passthrough_with_its_audio(clip: Path, probe: EncoderProbe) -> None:
    live, items, packets = await run_live(clip, probe, queue_size=100_000, segment_target=Fraction(2))
    assert sorted(items) == ["240p", "288p", "source"]
    assert live.status.keyframes == "source"
    source_keys = sorted(p.pts for p in packets if p.track == 0 and p.keyframe)
    for name, got in items.items():
        keys = sorted(x.pts for x in got if isinstance(x, Packet) and x.track == 0 and x.keyframe)
        assert keys == source_keys, name
    # The source rendition was announced only after the first keyframe
    # interval was seen; what was held for it comes in timestamp order, so
    # its start has audio as well as video.
    source = [x for x in items["source"] if isinstance(x, Packet)]
    assert [p.data for p in source if p.track == 0] == [p.data for p in packets if p.track == 0]
    first_late_video = next(i for i, p in enumerate(source) if p.track == 0 and p.dts * p.time_base >= 1)
    assert any(p.track == 1 and p.dts * p.time_base < Fraction(1, 2) for p in source[:first_late_video])


async def test_restart_with_a_long_gop_ends_the_passthrough(
    clip: Path, long_gop_clip: Path, probe: EncoderProbe
) -> None:
    registry = StreamRegistry(grace_s=30)
    subs = watch_renditions(registry, "cam")
    live = LiveTranscoder(
        registry, "cam", small_ladder(), probe, encoder="libx264", queue_size=100_000, segment_target=Fraction(1)
    )
    pub = registry.claim("cam")
    task = None
    for path in (clip, long_gop_clip):
        tracks, packets = model_packets(path)
        pub.start(tracks)
        if task is None:
            task = asyncio.create_task(live.run())
        for i, packet in enumerate(packets):
            pub.write(packet)
            if i % 8 == 0:
                await asyncio.sleep(0.005)
        if path == clip:
            # The first publish, 1 s GOPs: passed through.
            await asyncio.sleep(0.5)
            assert "cam/source" in live.status.renditions
            pub.close("reconnecting")
            pub = registry.claim("cam")
    pub.kick("done")
    assert task is not None
    await asyncio.wait_for(task, 60)
    source = list(subs["source"].drain())
    assert isinstance(source[-1], StreamEnded) and "too far apart" in source[-1].reason
    assert "cam/source" not in live.status.renditions
    assert live.status.keyframes == "own"
    rung = [x for x in subs["288p"].drain() if isinstance(x, Packet) and x.track == 0 and x.keyframe]
    # The second publish's keyframes come from the rungs, every second.
    assert [p.pts for p in rung][-4:] == [0, 1000, 2000, 3000]


async def test_sealed_passthrough_is_encoded_from_the_next_keyframe(clip: Path, probe: EncoderProbe) -> None:
    """A video effect switched on while live: the source rendition stops
    being a copy at the next source keyframe and carries the filtered
    picture from there, and every rendition restarts on the same clock at
    that keyframe (one segment cut and discontinuity in all of them)."""
    tracks, packets = model_packets(clip)
    registry = StreamRegistry(grace_s=0)
    subs = watch_renditions(registry, "cam")
    pub = registry.claim("cam")
    pub.start(tracks)
    painting = False

    def paint(frame: av.VideoFrame) -> av.VideoFrame:
        if not painting:
            return frame
        out = av.VideoFrame(frame.width, frame.height, "yuv420p")
        for plane, value in zip(out.planes, (16, 128, 128), strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        out.pts, out.time_base = frame.pts, frame.time_base
        return out

    live = LiveTranscoder(
        registry, "cam", small_ladder(), probe, encoder="libx264", frame_filter=paint, queue_size=100_000
    )
    task = asyncio.create_task(live.run())
    await asyncio.sleep(0)
    for packet in packets:
        if packet.track == 0 and packet.pts == 1500:
            painting = True  # the effect is on from here (the worker may lag: only later frames are checked)
            live.seal_passthrough("test")
        pub.write(packet)
        await asyncio.sleep(0.002)
    pub.close("done")
    await asyncio.wait_for(task, 60)
    items = {rung: list(sub.drain()) for rung, sub in subs.items()}
    assert live.passthrough_sealed
    # The copy stops right before the next source keyframe (2000 ms)...
    source = items["source"]
    starts = [i for i, x in enumerate(source) if isinstance(x, StreamStarted)]
    assert len(starts) == 2
    restart = source[starts[1]]
    assert isinstance(restart, StreamStarted) and restart.discontinuity and restart.clock_continues
    copied = [x for x in source[: starts[1]] if isinstance(x, Packet) and x.track == 0]
    video = [p for p in packets if p.track == 0]
    keyframe = next(i for i, p in enumerate(video) if p.keyframe and p.pts == 2000)
    assert [p.data for p in copied] == [p.data for p in video[:keyframe]]
    # ...and the encoded picture starts on it, as a keyframe, at the source's size.
    encoded = [x for x in source[starts[1] :] if isinstance(x, Packet) and x.track == 0]
    assert encoded[0].keyframe and encoded[0].pts == 2000
    assert restart.tracks[0].width == 640 and restart.tracks[0].height == 360
    assert restart.tracks[0].extradata != source[0].tracks[0].extradata  # type: ignore[union-attr]
    assert live.status.renditions["cam/source"] == "libx264"
    # The filter reaches it: its pictures are the painted ones.
    dec = av.CodecContext.create("h264", "r")
    dec.extradata = restart.tracks[0].extradata
    frames = []
    for p in encoded:
        av_packet = av.Packet(p.data)
        av_packet.pts = p.pts
        frames += dec.decode(av_packet)
    luma = frames[-1].to_ndarray(format="gray")
    assert float(luma.mean()) < 8 and float(luma.std()) < 2  # painted black (the test pattern is colourful)
    # Every rung restarts at that same keyframe, on the same clock.
    for rung in ("288p", "240p"):
        got = items[rung]
        restarts = [i for i, x in enumerate(got) if isinstance(x, StreamStarted) and x.clock_continues]
        assert len(restarts) == 1, rung
        after = next(x for x in got[restarts[0] :] if isinstance(x, Packet) and x.track == 0)
        assert after.keyframe and after.pts == 2000, rung
        before = [x for x in got[: restarts[0]] if isinstance(x, Packet) and x.track == 0]
        assert max(p.pts for p in before) < 2000, rung


async def test_unknown_source_refused(probe: EncoderProbe) -> None:
    live = LiveTranscoder(StreamRegistry(), "nobody", small_ladder(), probe, encoder="libx264")
    with pytest.raises(ValueError):
        await live.run()


def vpacket(pts: int, key: bool = False, ref: bool = True) -> Packet:
    header = 0x65 if key else (0x41 if ref else 0x01)
    return Packet(0, pts, pts, TB, join_avcc([bytes([header]) + b"\x80" * 8]), keyframe=key)


def test_drop_policy_nonref_then_whole_gop() -> None:
    policy = DropPolicy(maxsize=8, nonref_watermark=0.5)
    assert policy.admit_video(vpacket(0, key=True), 0, Codec.H264)
    assert policy.admit_video(vpacket(1, ref=False), 3, Codec.H264)  # below the watermark
    assert not policy.admit_video(vpacket(2, ref=False), 4, Codec.H264)  # disposable, above it
    assert policy.admit_video(vpacket(3), 5, Codec.H264)  # referenced: kept
    assert not policy.admit_video(vpacket(4), 8, Codec.H264)  # full: the GOP is gone
    assert not policy.admit_video(vpacket(5), 0, Codec.H264)  # ...even once there is room
    assert policy.admit_video(vpacket(6, key=True), 0, Codec.H264)  # resumes on a keyframe
    assert policy.stats.video_packets_dropped_nonref == 1
    assert policy.stats.video_packets_dropped_gop == 2 and policy.stats.gops_dropped == 1
    assert policy.admit_audio(15) and not policy.admit_audio(16)
    assert policy.stats.audio_packets_dropped == 1 and policy.stats.total == 4


def test_drop_policy_survives_garbage_video() -> None:
    policy = DropPolicy(maxsize=4)
    junk = Packet(0, 0, 0, TB, b"\xff\xff\xff\xff\x01", keyframe=False)
    assert policy.admit_video(junk, 3, Codec.H264)  # not provably disposable: the decoder decides


def test_finished_rung_packets_go_out_without_waiting_for_more_input(clip: Path) -> None:
    # A live rung's packets are published when the rung has them, not when the
    # next source packet happens to arrive.
    if usable_cpus() < 2:
        pytest.skip("rung threads are used only with more than one CPU")
    tracks, packets = model_packets(clip)
    tx = StreamTranscoder(small_ladder(bframes=None), "libx264", SourceKeyframeGrid())  # live settings: no B-frames
    woke = threading.Event()
    tx.on_output = woke.set
    tx.start(tracks)
    got = []
    for packet in [p for p in packets if p.track == 0][:20]:
        got += tx.push(packet)
    decoded = tx.stats.frames_decoded
    assert decoded > 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        encoded = [e for e in got if isinstance(e, RenditionPacket) and e.name == "288p"]
        if len(encoded) == decoded:
            break
        woke.wait(1)
        woke.clear()
        got += tx.poll()
    tx.close()
    # zerolatency: one packet per frame, all of them out with no further input.
    assert len(encoded) == decoded
