"""Ladder planning: never upscale, passthrough only within limits."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.media import Codec
from transcode.errors import SourceError, TranscodeConfigError
from transcode.ladder import (
    ENCODE_USES,
    LadderConfig,
    PassthroughLimits,
    RungConfig,
    SourceInfo,
    builtin_ladders,
    passthrough_verdict,
    plan_ladder,
)

DEFAULT = builtin_ladders()["default"]


def test_720p_source_gets_no_1080p_rung_and_no_720p_beside_its_passthrough() -> None:
    plan = plan_ladder(DEFAULT, SourceInfo(Codec.H264, 1280, 720, Fraction(30), 3_000_000))
    assert [r.name for r in plan.rungs] == ["480p", "360p"]
    assert [(r.width, r.height) for r in plan.rungs] == [(854, 480), (640, 360)]
    assert plan.passthrough
    assert plan.rendition_names == ("source", "480p", "360p")
    assert dict(plan.skipped) == {
        "1080p": "taller than the source's 720",
        "720p": "the passthrough is already 720 high",
    }


def test_rungs_above_the_source_bitrate_are_left_out_beside_its_passthrough() -> None:
    plan = plan_ladder(DEFAULT, SourceInfo(Codec.H264, 1920, 1080, Fraction(30), 1_200_000))
    assert plan.passthrough
    assert [r.name for r in plan.rungs] == ["360p"]  # 720p (2.8 M) and 480p (1.4 M) carry more bits than the source
    assert "above the source's 1200000" in dict(plan.skipped)["480p"]
    unknown = plan_ladder(DEFAULT, SourceInfo(Codec.H264, 1920, 1080, Fraction(30), None))
    assert [r.name for r in unknown.rungs] == ["720p", "480p", "360p"]


def test_without_passthrough_a_rung_at_source_height_is_kept() -> None:
    ladder = builtin_ladders()["transcode-only"]
    plan = plan_ladder(ladder, SourceInfo(Codec.H264, 1280, 720, Fraction(30), 1_000_000))
    assert [r.name for r in plan.rungs] == ["720p", "480p", "360p"]


def test_passthrough_refused_outside_limits() -> None:
    too_big = plan_ladder(DEFAULT, SourceInfo(Codec.H264, 2560, 1440, Fraction(30)))
    assert not too_big.passthrough and "exceeds" in too_big.passthrough_reason
    assert [r.name for r in too_big.rungs] == ["1080p", "720p", "480p", "360p"]
    too_fast = plan_ladder(DEFAULT, SourceInfo(Codec.H264, 1280, 720, Fraction(120)))
    assert not too_fast.passthrough
    too_dense = plan_ladder(DEFAULT, SourceInfo(Codec.H264, 1280, 720, Fraction(30), 20_000_000))
    assert not too_dense.passthrough
    vp8 = plan_ladder(DEFAULT, SourceInfo(Codec.VP8, 1280, 720, Fraction(30)))
    assert not vp8.passthrough and "vp8" in vp8.passthrough_reason


def test_frame_rate_cap_only_when_source_is_faster() -> None:
    fast = plan_ladder(DEFAULT, SourceInfo(Codec.H264, 1280, 720, Fraction(60)))
    assert all(r.frame_rate_cap == 30 and r.frame_rate == 30 for r in fast.rungs)
    slow = plan_ladder(DEFAULT, SourceInfo(Codec.H264, 1280, 720, Fraction(25)))
    assert all(r.frame_rate_cap is None and r.frame_rate == 25 for r in slow.rungs)


def test_tiny_source_without_passthrough_keeps_one_rung_at_source_size() -> None:
    ladder = builtin_ladders()["transcode-only"]
    plan = plan_ladder(ladder, SourceInfo(Codec.VP8, 320, 180))
    assert [(r.name, r.width, r.height) for r in plan.rungs] == [("360p", 320, 180)]


def test_tiny_h264_source_is_passthrough_only() -> None:
    plan = plan_ladder(DEFAULT, SourceInfo(Codec.H264, 320, 180))
    assert plan.passthrough and plan.rungs == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "height": 360, "bitrate": 1},
        {"name": "a/b", "height": 360, "bitrate": 1},
        {"name": "x", "height": 361, "bitrate": 1},
        {"name": "x", "height": 360, "bitrate": 0},
        {"name": "x", "height": 360, "bitrate": 1, "profile": "extended"},
        {"name": "x", "height": 360, "bitrate": 1, "max_frame_rate": Fraction(0)},
        {"name": "x", "height": 360, "bitrate": 1, "level": "3.7"},
        {"name": "x", "height": 360, "bitrate": 1, "level": "high"},
    ],
)
def test_invalid_rungs_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(TranscodeConfigError):
        RungConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x264_preset": "fastest"}, "x264_preset 'fastest' is not one of 'ultrafast'"),
        ({"x264_tune": "nolatency"}, "x264_tune 'nolatency' is not one of 'auto', '', 'none', 'film'"),
        ({"x264_tune": "zerolatency,grainy"}, "x264_tune"),
        ({"nvenc_tune": "fast"}, "nvenc_tune 'fast' is not one of 'hq'"),
        ({"rate_control": "crf"}, "rate_control 'crf'"),
    ],
)
def test_enum_settings_name_the_key_and_the_allowed_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TranscodeConfigError, match=re.escape(message)):
        LadderConfig("l", (), **kwargs)  # type: ignore[arg-type]


def test_no_tune_can_be_said() -> None:
    live, file = ENCODE_USES["live"], ENCODE_USES["file"]
    for none in ("", "none"):
        ladder = LadderConfig("l", (), x264_tune=none)
        assert ladder.tune_for(live) is None and ladder.tune_for(file) is None
    auto = LadderConfig("l", ())
    assert auto.tune_for(live) == "zerolatency" and auto.tune_for(file) is None
    assert LadderConfig("l", (), x264_tune="film,fastdecode").tune_for(live) == "film,fastdecode"
    assert auto.bframes_for(file) == 3 and auto.bframes_for(live) == 0
    assert LadderConfig("l", (), bframes=1).bframes_for(live) == 1


def test_invalid_ladders_refused() -> None:
    rung = RungConfig("source", 360, 1000)
    with pytest.raises(TranscodeConfigError):
        LadderConfig("dup", (rung,))  # collides with the passthrough name
    with pytest.raises(TranscodeConfigError):
        LadderConfig("empty", (), passthrough=False)
    with pytest.raises(TranscodeConfigError):
        LadderConfig("p", (), nvenc_preset="p9")
    with pytest.raises(TranscodeConfigError):
        LadderConfig("r", (), rate_control="abr")


@given(
    width=st.integers(16, 8192),
    height=st.integers(16, 4320),
    codec=st.sampled_from(list(Codec)[:5]),
    rate=st.one_of(st.none(), st.fractions(Fraction(1), Fraction(240))),
    ladder=st.sampled_from(sorted(builtin_ladders())),
)
def test_never_upscale(width: int, height: int, codec: Codec, rate: Fraction | None, ladder: str) -> None:
    cfg = builtin_ladders()[ladder]
    source = SourceInfo(codec, width, height, rate)
    if not cfg.rungs and not passthrough_verdict(cfg, source)[0]:
        with pytest.raises(SourceError):
            plan_ladder(cfg, source)
        return
    plan = plan_ladder(cfg, source)
    assert plan.rungs or plan.passthrough
    for rung in plan.rungs:
        assert rung.height <= height and rung.width <= width
        assert rung.width % 2 == 0 and rung.height % 2 == 0
        if rate is not None:
            assert rung.frame_rate is not None and rung.frame_rate <= rate
    heights = [r.height for r in plan.rungs]
    assert heights == sorted(heights, reverse=True)
    if plan.passthrough:
        limits = PassthroughLimits()
        assert codec is Codec.H264 and width <= limits.max_width and height <= limits.max_height
        assert all(r.height < height for r in plan.rungs)  # nothing beside the passthrough at its size
