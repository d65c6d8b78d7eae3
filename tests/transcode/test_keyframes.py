"""The keyframe grids and the frame-rate cap."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transcode.errors import TranscodeConfigError
from transcode.keyframes import FixedKeyframeGrid, FrameRateCap, GridMode, SegmentKeyframeGrid, SourceKeyframeGrid

MS = Fraction(1, 1000)


def test_source_grid_follows_source_keyframes() -> None:
    grid = SourceKeyframeGrid()
    marks = [grid.is_boundary(i * 33, MS, key) for i, key in enumerate([True, False, False, True, False, True])]
    assert marks == [True, False, False, True, False, True]


def test_source_grid_min_interval() -> None:
    grid = SourceKeyframeGrid(Fraction(2))
    marks = [grid.is_boundary(t, MS, True) for t in (0, 1000, 2000, 2500, 4100)]
    assert marks == [True, False, True, False, True]


def test_fixed_grid_ignores_source_keyframes() -> None:
    grid = FixedKeyframeGrid(Fraction(1))
    frames = range(0, 3000, 100)
    marks = [t for t in frames if grid.is_boundary(t + 500, MS, t == 0)]
    assert marks == [0, 1000, 2000]


def test_frame_rate_cap_halves_60_fps_and_keeps_boundaries() -> None:
    cap = FrameRateCap(Fraction(30))
    pts = [round(i * 1000 / 60) for i in range(120)]
    kept = [t for i, t in enumerate(pts) if cap.keep(t, MS, boundary=(i == 61))]
    assert 59 <= len(kept) <= 62
    assert pts[61] in kept


def test_invalid_grids() -> None:
    with pytest.raises(TranscodeConfigError):
        FixedKeyframeGrid(Fraction(0))
    with pytest.raises(TranscodeConfigError):
        SourceKeyframeGrid(Fraction(-1))
    with pytest.raises(TranscodeConfigError):
        FrameRateCap(Fraction(0))
    with pytest.raises(TranscodeConfigError):
        SegmentKeyframeGrid(Fraction(0))


def frames_30fps(seconds: int, gop: int) -> list[tuple[int, bool]]:
    """(pts in ms, keyframe) of a 30 fps source with a keyframe every ``gop`` frames."""
    return [(round(i * 1000 / 30), i % gop == 0) for i in range(30 * seconds)]


def test_segment_grid_places_its_own_keyframes_for_a_250_frame_gop() -> None:
    grid = SegmentKeyframeGrid(Fraction(2))
    marks = [t for t, key in frames_30fps(20, 250) if grid.is_boundary(t, MS, key)]
    assert marks == list(range(0, 20_000, 2000))
    assert grid.mode is GridMode.OWN


def test_segment_grid_follows_a_short_gop() -> None:
    for gop in (30, 60):
        grid = SegmentKeyframeGrid(Fraction(2))
        frames = frames_30fps(10, gop)
        marks = [t for t, key in frames if grid.is_boundary(t, MS, key)]
        assert marks == [t for t, key in frames if key]
        assert grid.mode is GridMode.SOURCE


def test_segment_grid_decides_at_the_first_frame_past_the_target() -> None:
    grid = SegmentKeyframeGrid(Fraction(2))
    frames = frames_30fps(3, 250)
    for t, key in frames[:60]:
        grid.is_boundary(t, MS, key)
        assert grid.mode is GridMode.UNDECIDED
    assert grid.is_boundary(*frames[60][:1], MS, frames[60][1])
    assert grid.mode is GridMode.OWN


def test_pinned_grid_keeps_the_source_keyframes_after_a_long_gap() -> None:
    # 2 s GOPs, then the publisher switches to 8 s ones: with the source
    # passed through, the rungs keep its keyframes (and alignment).
    frames = [(t, t % 2000 == 0 if t < 6000 else t % 8000 == 0) for t in range(0, 20_000, 100)]
    pinned = SegmentKeyframeGrid(Fraction(2))
    free = SegmentKeyframeGrid(Fraction(2))
    marks_pinned, marks_free = [], []
    for t, key in frames:
        if pinned.is_boundary(t, MS, key):
            marks_pinned.append(t)
        if pinned.mode is GridMode.SOURCE:
            pinned.pin_to_source()
        if free.is_boundary(t, MS, key):
            marks_free.append(t)
    assert marks_pinned == [0, 2000, 4000, 8000, 16000]
    assert pinned.mode is GridMode.SOURCE
    assert marks_free == [0, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000, 18000]
    assert free.mode is GridMode.OWN


def test_an_early_scene_cut_does_not_pass_for_a_short_gop() -> None:
    # A 250-frame GOP with a scene-cut keyframe half a second in.
    grid = SegmentKeyframeGrid(Fraction(2))
    frames = [(t, key or t == 500) for t, key in frames_30fps(10, 250)]
    marks = [t for t, key in frames if grid.is_boundary(t, MS, key)]
    assert marks == [0, 500, 2500, 4500, 6500, 8500]
    assert grid.mode is GridMode.OWN


def test_segment_grid_decides_after_two_short_intervals() -> None:
    grid = SegmentKeyframeGrid(Fraction(2))
    for t, key in frames_30fps(10, 45):  # 1.5 s GOP
        grid.is_boundary(t, MS, key)
        assert grid.mode is (GridMode.SOURCE if t >= 3000 else GridMode.UNDECIDED), t


def test_segment_grid_restarts_when_time_goes_backwards() -> None:
    grid = SegmentKeyframeGrid(Fraction(2))
    assert grid.is_boundary(5000, MS, True)
    assert grid.is_boundary(100, MS, False)
    assert not grid.is_boundary(2000, MS, False)
    assert grid.is_boundary(2100, MS, False)


@settings(deadline=None)  # exact fractions over 900 frames: slow on a loaded machine, never wrong
@given(
    rate=st.integers(1, 120),
    gop=st.integers(1, 600),
    target_ms=st.integers(500, 6000),
    dropped=st.sets(st.integers(0, 899), max_size=200),
)
def test_segment_grid_boundaries_at_least_a_target_apart_and_never_much_more(
    rate: int, gop: int, target_ms: int, dropped: set[int]
) -> None:
    """Whatever the source sends, once the grid places its own keyframes two
    boundaries are at least the target apart (a packager cutting at the first
    keyframe past the target cuts at each) and at most the target plus the
    longest gap between two frames the grid saw."""
    target = Fraction(target_ms, 1000)
    tb = Fraction(1, 90000)
    grid = SegmentKeyframeGrid(target)
    seen = [(i * 90000 // rate, i % gop == 0) for i in range(900) if i not in dropped or i % gop == 0]
    marks: list[Fraction] = []
    own_from: int | None = None
    for t, key in seen:
        if grid.is_boundary(t, tb, key):
            marks.append(t * tb)
            if own_from is None and grid.mode is GridMode.OWN:
                own_from = len(marks) - 1
    assert marks[0] == 0
    if own_from is None:
        assert marks == [t * tb for t, key in seen if key]
        return
    assert own_from >= 1 and marks[own_from] - marks[own_from - 1] >= target
    longest_gap = max((b[0] - a[0]) * tb for a, b in itertools.pairwise(seen))
    own = marks[own_from:]
    for a, b in itertools.pairwise(own):
        assert target <= b - a < target + longest_gap
