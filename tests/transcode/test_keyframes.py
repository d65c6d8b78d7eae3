"""The keyframe grids and the frame-rate cap."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcode.errors import TranscodeConfigError
from transcode.keyframes import FixedKeyframeGrid, FrameRateCap, SourceKeyframeGrid

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


@given(
    fps=st.integers(1, 120),
    cap=st.integers(1, 60),
    boundaries=st.sets(st.integers(0, 299)),
)
def test_cap_never_exceeds_rate_and_never_drops_boundaries(fps: int, cap: int, boundaries: set[int]) -> None:
    tb = Fraction(1, 90000)
    limiter = FrameRateCap(Fraction(cap))
    kept = [i for i in range(300) if limiter.keep(i * 90000 // fps, tb, i in boundaries)]
    assert boundaries <= set(kept)
    seconds = Fraction(300, fps)
    assert len(kept) <= cap * seconds * Fraction(5, 4) + len(boundaries) + 1
