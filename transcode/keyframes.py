"""Where IDR frames go, decided once per source frame for every rung.

Alignment across renditions comes from taking the decision before the frame
fans out to the rung encoders: each rung forces an IDR on exactly the frames
marked as boundaries, never inserts one of its own (scene cuts are off), and
keeps every boundary frame through its frame-rate cap. Pure classes over
integer timestamps; no PyAV.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Protocol

from transcode.errors import TranscodeConfigError


class KeyframeGrid(Protocol):
    def is_boundary(self, pts: int, time_base: Fraction, source_keyframe: bool) -> bool:
        """Whether the frame at ``pts`` starts a new segment in every rung."""
        ...


class SourceKeyframeGrid:
    """Live: every source keyframe at least ``min_interval`` seconds after the
    previous boundary starts a segment, so the passed-through source and each
    rung have IDRs at the same presentation times.

    The default ``min_interval`` of 0 forces an IDR at every source keyframe:
    the keyframe sets of all renditions are then identical, and any packager
    cutting rule picks the same boundaries in each of them.
    """

    def __init__(self, min_interval: Fraction = Fraction(0)) -> None:
        if min_interval < 0:
            raise TranscodeConfigError("min_interval must not be negative")
        self.min_interval = min_interval
        self._last: Fraction | None = None

    def is_boundary(self, pts: int, time_base: Fraction, source_keyframe: bool) -> bool:
        if not source_keyframe:
            return False
        t = pts * time_base
        if self._last is not None and t - self._last < self.min_interval and t >= self._last:
            return False
        self._last = t
        return True


class FixedKeyframeGrid:
    """Files: a boundary at the first frame at or after each multiple of
    ``interval`` seconds from the first frame's time."""

    def __init__(self, interval: Fraction) -> None:
        if interval <= 0:
            raise TranscodeConfigError("interval must be positive")
        self.interval = interval
        self._origin: Fraction | None = None
        self._index = -1

    def is_boundary(self, pts: int, time_base: Fraction, source_keyframe: bool) -> bool:
        t = pts * time_base
        if self._origin is None:
            self._origin = t
        index = int((t - self._origin) // self.interval)
        if index > self._index:
            self._index = index
            return True
        return False


class FrameRateCap:
    """Decimates a rung to at most ``cap`` frames per second.

    Frames are kept on a grid of ``1/cap`` with a quarter-interval tolerance
    for millisecond-rounded timestamps; a boundary frame is always kept and
    restarts the grid, so keyframes stay aligned with the other rungs.
    """

    def __init__(self, cap: Fraction | None) -> None:
        if cap is not None and cap <= 0:
            raise TranscodeConfigError("frame-rate cap must be positive")
        self.interval = None if cap is None else 1 / cap
        self._due: Fraction | None = None

    def keep(self, pts: int, time_base: Fraction, boundary: bool) -> bool:
        if self.interval is None:
            return True
        t = pts * time_base
        due = self._due
        if boundary or due is None or t < due - 2 * self.interval:
            self._due = t + self.interval
            return True
        if t >= due - self.interval / 4:
            self._due = due + self.interval if t - due < self.interval else t + self.interval
            return True
        return False
