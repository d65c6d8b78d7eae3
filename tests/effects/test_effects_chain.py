"""The chain: settings round trip, live updates, stats and skipping."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest

from effects.chain import EffectChain
from effects.errors import EffectOptionError
from effects.models import ModelStore


def _frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_settings_round_trip(models: ModelStore) -> None:
    settings = {
        "effects": [
            {"effect": "watermark", "text": "FANZ", "position": "top-left"},
            {"effect": "voice", "pitch": 1.5},
        ],
        "budget_ms": 33,
    }
    chain = EffectChain.from_settings(settings, models=models)
    again = EffectChain.from_settings(chain.to_settings(), models=models)
    assert again.to_settings() == chain.to_settings()
    assert chain.to_settings()["effects"][0]["opacity"] == 0.85  # defaults filled in
    assert [spec.name for spec in chain.specs] == ["watermark", "voice"]


@pytest.mark.parametrize(
    "settings",
    [
        {"effects": [{"effect": "nope"}]},
        {"effects": [{"effect": "voice", "pitch": 9}]},
        {"effects": [{"effect": "voice", "pitch": "high"}]},
        {"effects": [{"effect": "watermark", "text": "x", "colour": "blurple"}]},
        {"effects": [{"effect": "watermark"}]},
        {"effects": [{"text": "x"}]},
        {"effects": "watermark"},
        {"effects": [], "budget_ms": -1},
        {"effects": [], "extra": 1},
    ],
)
def test_bad_settings_are_option_errors(settings: dict[str, object], models: ModelStore) -> None:
    with pytest.raises(EffectOptionError):
        EffectChain.from_settings(settings, models=models)


def test_bad_update_leaves_chain_running(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    chain = EffectChain(["watermark:text=A"], models=models)
    with pytest.raises(EffectOptionError):
        chain.update(["watermark:text=B", "voice:pitch=100"])
    assert chain.specs[0].options()["text"] == "A"
    chain.process_video(face_frames[0])


def test_update_while_live_keeps_unchanged_stages(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    chain = EffectChain(["face_privacy", "watermark:text=A"], models=models)
    for frame in face_frames[:3]:
        chain.process_video(frame)
    chain.update(["face_privacy", "watermark:text=B", "color:preset=mono"])
    stats = chain.stats()
    assert [s.name for s in stats] == ["face_privacy", "watermark", "color"]
    assert stats[0].frames == 3  # the same stage, kept with its state
    assert stats[1].frames == 0 and stats[2].frames == 0
    out = chain.process_video(face_frames[3]).to_ndarray(format="bgr24")
    assert np.abs(out[..., 0].astype(int) - out[..., 2]).max() <= 3  # mono now applies


def test_update_from_another_thread(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    chain = EffectChain(["watermark:text=A"], models=models)
    done = threading.Event()
    errors: list[BaseException] = []

    def updater() -> None:
        try:
            for i in range(20):
                chain.update([f"watermark:text=T{i}", "color:preset=warm" if i % 2 else "color:preset=cool"])
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=updater)
    thread.start()
    for frame in face_frames * 3:
        out = chain.process_video(frame)
        assert out.pts == frame.pts
    thread.join(timeout=60)
    assert done.is_set() and not errors
    assert chain.specs[0].options()["text"] == "T19"


def test_slow_chain_skips_non_critical_stages(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    # A budget no real stage can meet: non-critical stages are skipped on
    # some frames (counted), the critical face blur never is.
    chain = EffectChain(["face_privacy", "beauty:smooth=1", "watermark:text=A"], models=models, budget_ms=0.001)
    for frame in face_frames:
        assert chain.process_video(frame).pts == frame.pts
    stats = {s.name: s for s in chain.stats()}
    assert stats["face_privacy"].skipped == 0 and stats["face_privacy"].frames == len(face_frames)
    assert stats["beauty"].skipped > 0
    assert stats["beauty"].frames + stats["beauty"].skipped == len(face_frames)
    for s in stats.values():
        assert s.mean_ms > 0 and s.max_ms >= s.mean_ms


def test_no_skips_without_budget(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    chain = EffectChain(["beauty", "watermark:text=A"], models=models)
    for frame in face_frames:
        chain.process_video(frame)
    assert all(s.skipped == 0 and s.frames == len(face_frames) for s in chain.stats())


def test_empty_chain_passes_frames_through(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    chain = EffectChain([], models=models)
    assert chain.process_video(face_frames[0]) is face_frames[0]
