"""Effects on a live stream: published over RTMP, found in the HLS output."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from effects.chain import StageStats
from tests.conftest import make_clip, publish, start_engine, wait_for


def red_square(path: Path) -> Path:
    Image.new("RGBA", (64, 64), (255, 0, 0, 255)).save(path)
    return path


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_effects_reach_every_rendition(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    from engine.settings import coerce
    from transcode.ladder import LadderConfig

    ladders = coerce(
        {"fx": {"rungs": [{"name": "360p", "height": 360, "bitrate": 800_000},
                          {"name": "180p", "height": 180, "bitrate": 300_000}], "x264_preset": "ultrafast"}},
        dict[str, LadderConfig],
        "test",
    )
    logo = red_square(tmp_path / "logo.png")
    clip = make_clip(ffmpeg, media_dir / "fx_src.flv", seconds=10, size="640x360", bframes=0)
    engine = await start_engine(
        tmp_path / "data",
        transcode={"enabled": True, "ladder": "fx", "ladders": ladders},
        effects={"default": ["color:preset=mono", f"watermark:image={logo},position=top-left,opacity=1,scale=0.2"]},
        streams={"reconnect_grace_s": 0.5},
    )
    proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/fx")
    try:
        await wait_for(lambda: "fx" in engine.hls.outputs and engine.hls.outputs["fx"].segments_written > 0, 60)
        # Per-stage timing is in /metrics while the stream is live.
        metrics = engine.metrics.render().decode()
        assert 'fanz_effect_frames_total{effect="color",position="0",stream="fx"}' in metrics
        assert 'fanz_effect_frame_milliseconds{effect="watermark",position="1",stream="fx"}' in metrics
        # While live, the creator drops the mono look (the control API does
        # this through the same stream settings); later frames are in colour.
        await wait_for(lambda: engine.hls.outputs["fx"].segments_written >= 4, 60)
        engine.registry.configure(
            "fx", "effects", {"effects": [{"effect": "watermark", "image": str(logo), "position": "top-left",
                                           "opacity": 1, "scale": 0.2}]}
        )
        await asyncio.wait_for(proc.wait(), 60)
        await wait_for(lambda: "fx" in engine.hls.outputs and engine.hls.outputs["fx"].ended, 60)
        output = engine.hls.outputs["fx"]
        # The source was not passed through: effects need decoded frames.
        assert set(output.variants) == {"360p", "180p"}
        for name, variant in output.variants.items():
            with av.open(str(variant.directory / "media.m3u8")) as container:
                frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
            rgb = frames[30]
            h, w, _ = rgb.shape
            # The logo: 20% of the width, at the top-left margin, pure red.
            logo_px = rgb[int(h * 0.03) + 4 : int(h * 0.03) + int(w * 0.2) - 4, int(h * 0.03) + 4 : int(w * 0.2) - 4]
            r, g, b = logo_px[..., 0].mean(), logo_px[..., 1].mean(), logo_px[..., 2].mean()
            assert r > 180 and g < 70 and b < 70, (name, r, g, b)
            # Everywhere else the colourful test pattern is grey: the mono preset.
            rest = rgb[h // 2 :, w // 2 :]
            spread = np.abs(rest[..., 0] - rest[..., 1]).mean() + np.abs(rest[..., 1] - rest[..., 2]).mean()
            assert spread < 8, (name, spread)
            last = frames[-5][h // 2 :, w // 2 :]
            colour = np.abs(last[..., 0] - last[..., 1]).mean() + np.abs(last[..., 1] - last[..., 2]).mean()
            assert colour > 30, (name, colour)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_voice_changer_on_live_audio(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    """A 440 Hz tone published over RTMP comes out of HLS at 880 Hz with the
    voice changer at pitch 2, and audio still lasts as long as video."""
    from engine.settings import coerce
    from transcode.ladder import LadderConfig

    ladders = coerce(
        {"vc": {"rungs": [{"name": "180p", "height": 180, "bitrate": 300_000}], "x264_preset": "ultrafast",
                "passthrough": False}},
        dict[str, LadderConfig],
        "test",
    )
    clip = make_clip(ffmpeg, media_dir / "vc_src.flv", seconds=8, size="320x180", bframes=0)
    engine = await start_engine(
        tmp_path / "data",
        transcode={"enabled": True, "ladder": "vc", "ladders": ladders},
        effects={"default": ["voice:pitch=2"]},
        streams={"reconnect_grace_s": 0.5},
    )
    proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/vc")
    try:
        await asyncio.wait_for(proc.wait(), 60)
        await wait_for(lambda: "vc" in engine.hls.outputs and engine.hls.outputs["vc"].ended, 60)
        variant = engine.hls.outputs["vc"].variants["180p"]
        with av.open(str(variant.directory / "media.m3u8")) as container:
            audio = container.streams.audio[0]
            chunks = [f.to_ndarray() for f in container.decode(audio)]
            rate = audio.sample_rate
        with av.open(str(variant.directory / "media.m3u8")) as container:
            video_frames = sum(1 for _ in container.decode(video=0))
        samples = np.concatenate(chunks, axis=1)[0]
        middle = samples[rate : rate * 5]
        spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
        peak = np.fft.rfftfreq(len(middle), 1 / rate)[int(np.argmax(spectrum))]
        assert abs(peak - 880) < 10, peak
        # No drift: the audio lasts as long as the video (within a frame or two).
        assert abs(len(samples) / rate - video_frames / 30) < 0.15, (len(samples) / rate, video_frames / 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()


ALL_SIX = [
    "background:mode=blur",
    "face_privacy:mode=pixelate",
    "beauty:smooth=0.6,brightness=0.2,warmth=0.3",
    "color:preset=warm",
    "face_filter:overlay=glasses",
    "watermark:text=FANZ,position=bottom-right",
]


def _metric(text: str, name: str, stream: str) -> dict[str, float]:
    """Values of metric ``name`` for ``stream``, by effect name."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'stream="{stream}"' in line:
            effect = line.split('effect="', 1)[1].split('"', 1)[0]
            values[effect] = float(line.rsplit(" ", 1)[1])
    return values


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_all_effects_with_a_budget_stay_real_time(tmp_path: Path, ffmpeg: str, media_dir: Path) -> None:
    """720p30 published in real time with all six video effects and a 30 ms
    budget: the transcoder's queue stays short and nothing is dropped,
    because the chain skips or lightens what it must; every stage accounts
    for every frame, and the critical ones never skip."""
    import aiohttp

    from engine.settings import coerce
    from transcode.ladder import LadderConfig

    ladders = coerce(
        {"fx6": {"rungs": [{"name": "360p", "height": 360, "bitrate": 800_000}], "x264_preset": "ultrafast",
                 "passthrough": False}},
        dict[str, LadderConfig],
        "test",
    )
    clip = make_clip(ffmpeg, media_dir / "fx6_720p.flv", seconds=12, size="1280x720", bframes=0)
    engine = await start_engine(
        tmp_path / "data",
        transcode={"enabled": True, "ladder": "fx6", "ladders": ladders},
        effects={"default": ALL_SIX, "budget_ms": 30},
        streams={"reconnect_grace_s": 0.5},
    )
    base = f"http://127.0.0.1:{engine.http_port}"
    proc = await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{engine.rtmp.port}/live/fx6")
    depths: list[int] = []
    dropped = 0
    metrics = ""
    stages: list[StageStats] = []
    try:
        await wait_for(lambda: "fx6" in engine.transcoders, 60)
        async with aiohttp.ClientSession() as http:
            # Sample the stream's status while the publisher runs.
            while proc.returncode is None:
                async with http.get(f"{base}/streams/fx6") as resp:
                    if resp.status == 200:
                        transcode = (await resp.json()).get("transcode") or {}
                        if "queue_depth" in transcode:
                            depths.append(int(transcode["queue_depth"]))
                            dropped = int(transcode["dropped_frames"])
                async with http.get(f"{base}/metrics") as resp:
                    metrics = await resp.text()
                chain = engine.effect_chains.get("fx6")
                stages = chain.stats() if chain is not None else stages
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 0.25)
                except TimeoutError:
                    pass
        assert proc.returncode == 0, await proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await engine.stop()
    assert len(depths) > 20, depths
    # Real time: the queue did not build up over the publish. Without the
    # budget a chain over the frame interval adds backlog on every frame
    # (hundreds of frames over 12 s) until the queue passes its watermark
    # (half of transcode.queue_frames, 256) and frames are dropped. Here the
    # depth (audio packets included, about 47 a second) stays below that
    # watermark on a machine shared with other work, and nothing is dropped.
    late = depths[len(depths) // 2:]
    assert max(late) < 128, depths
    assert dropped == 0, depths
    frames = _metric(metrics, "fanz_effect_frames_total", "fx6")
    skipped = _metric(metrics, "fanz_effect_skipped_frames_total", "fx6")
    assert set(frames) == set(skipped) == {spec.split(":")[0] for spec in ALL_SIX}
    seen = {name: frames[name] + skipped[name] for name in frames}
    # Every stage accounts for every frame through the chain, run or skipped.
    assert len(set(seen.values())) == 1 and next(iter(seen.values())) > 100, (frames, skipped)
    assert skipped["background"] == skipped["face_privacy"] == 0
    # Critical stages lighten instead (counted too): applied on every frame.
    assert all(0 <= s.reused <= s.frames for s in stages) and len(stages) == len(ALL_SIX)
    print(f"\nqueue depths: {depths}; "
          + "; ".join(f"{s.name} ran {s.frames - s.reused} reused {s.reused} skipped {s.skipped}" for s in stages))
