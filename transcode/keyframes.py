"""Where IDR frames go, decided once per source frame for every rung.

Alignment across renditions comes from taking the decision before the frame
fans out to the rung encoders: each rung forces an IDR on exactly the frames
marked as boundaries, never inserts one of its own (scene cuts are off), and
keeps every boundary frame through its frame-rate cap. Pure classes over
integer timestamps; no PyAV.
"""

from __future__ import annotations

import enum
from fractions import Fraction
from typing import Protocol

from transcode.errors import TranscodeConfigError


class KeyframeGrid(Protocol):
    def is_boundary(self, pts: int, time_base: Fraction, source_keyframe: bool) -> bool:
        """Whether the frame at ``pts`` starts a new segment in every rung."""
        ...


class GridMode(enum.Enum):
    """What a :class:`SegmentKeyframeGrid` has found out about the source."""

    UNDECIDED = "undecided"
    SOURCE = "source"
    """Boundaries are the source's keyframes: a passed-through copy of the
    source is aligned with the rungs."""
    OWN = "own"
    """The source's keyframes are too far apart: the rungs place their own
    keyframes every segment target, and a passed-through copy would not line
    up with them (nor have short segments)."""


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


SOURCE_INTERVALS_TO_DECIDE = 2
"""Source keyframe intervals no longer than the segment target that make a
:class:`SegmentKeyframeGrid` follow the source's keyframes."""


class SegmentKeyframeGrid:
    """Live: short segments whatever keyframe interval the publisher uses.

    While the source sends a keyframe at least every ``target`` seconds, its
    keyframes are the boundaries (as :class:`SourceKeyframeGrid`), so the
    passed-through source lines up with the rungs. The source's first
    keyframe intervals decide:

    - :data:`SOURCE_INTERVALS_TO_DECIDE` of them in a row are no longer than
      the target (each next keyframe is at or before the first frame at or
      past the target): mode :attr:`GridMode.SOURCE`. Two rather than one, so
      that a scene-cut keyframe early in a long-GOP stream (x264's default,
      and OBS's) does not pass for a short interval;
    - the first frame at or past ``target`` seconds after the previous
      boundary is not a source keyframe: the source's interval exceeds the
      target (OBS sends a keyframe every 250 frames by default, 8.3 s at
      30 fps), mode :attr:`GridMode.OWN`: from this frame on a boundary falls
      on the first frame at or past ``target`` seconds after the previous
      one, whatever the source does.

    Boundaries are measured from the previous boundary, not from a fixed
    origin, so two boundaries are never less than ``target`` apart and a
    packager that cuts on the first keyframe at or past the target cuts on
    every one of them.

    In mode SOURCE a later gap longer than the target switches to OWN too,
    unless :meth:`pin_to_source` was called (a passed-through copy of the
    source is being published: its keyframes cannot move, and every rendition
    must keep the same boundaries). Timestamps that go backwards restart the
    grid at that frame.
    """

    def __init__(self, target: Fraction) -> None:
        if target <= 0:
            raise TranscodeConfigError("the segment target must be positive")
        self.target = target
        self.mode = GridMode.UNDECIDED
        self.pinned = False
        self._last: Fraction | None = None
        self._short_intervals = 0

    def pin_to_source(self) -> None:
        """In mode SOURCE, keep following the source's keyframes from now on."""
        self.pinned = True

    def is_boundary(self, pts: int, time_base: Fraction, source_keyframe: bool) -> bool:
        t = pts * time_base
        last = self._last
        if last is None or t < last:
            self._last = t
            return True
        elapsed = t - last
        if self.mode is GridMode.OWN:
            boundary = elapsed >= self.target
        elif source_keyframe:
            if self.mode is GridMode.UNDECIDED:
                self._short_intervals += 1
                if self._short_intervals >= SOURCE_INTERVALS_TO_DECIDE:
                    self.mode = GridMode.SOURCE
            boundary = True
        elif elapsed >= self.target and not (self.pinned and self.mode is GridMode.SOURCE):
            self.mode = GridMode.OWN
            boundary = True
        else:
            boundary = False
        if boundary:
            self._last = t
        return boundary


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
