"""Key rotation: which key period each segment of a stream belongs to.

Sans-I/O: :class:`KeyRotation` holds a count and nothing else. The packager
calls :meth:`KeyRotation.next_segment` once per segment, in order, and
encrypts the segment (and each of its LL-HLS parts: parts never change
period within a segment) with the key of the period it returns, fetched
from the :class:`drm.model.KeyProvider` off the event loop.

A new period starts every ``every_segments`` segments (0: never by count),
and at every publisher reconnect (the segment after a discontinuity), so
the keys of one connection never cover another's media. A viewer already
playing gets the new key through the playlist's next ``EXT-X-KEY`` or the
next segment's key ID, without reloading.
"""

from __future__ import annotations


class KeyRotation:
    """Counts segments into key periods.

    ``start_period`` is the first segment's period: 0 for a new content ID,
    one past :meth:`drm.store.ContentKeyStore.highest_period` when a new
    broadcast reuses a name, so no key covers two broadcasts.
    """

    def __init__(self, every_segments: int, start_period: int = 0) -> None:
        if every_segments < 0:
            raise ValueError("every_segments must not be negative")
        if start_period < 0:
            raise ValueError("start_period must not be negative")
        self.every_segments = every_segments
        self.start_period = start_period
        self._period = start_period
        self._in_period = 0
        self._started = False
        self.new_period = False
        """Whether the segment of the last :meth:`next_segment` call is the
        first of its period (the first segment of all included): the
        packager announces the new key with it."""

    @property
    def period(self) -> int:
        """The period of the last segment counted (the start period before any)."""
        return self._period

    def next_segment(self, *, discontinuity: bool = False) -> int:
        """The period of the next segment; ``discontinuity`` says that it
        follows a publisher reconnect (a discontinuity in the playlist)."""
        if not self._started:
            self._started = True
            self.new_period = True
        elif discontinuity or (self.every_segments and self._in_period >= self.every_segments):
            self._period += 1
            self._in_period = 0
            self.new_period = True
        else:
            self.new_period = False
        self._in_period += 1
        return self._period

    def period_of(self, segment_index: int) -> int:
        """The period of segment ``segment_index`` (from 0) of a stream
        without discontinuities, such as a VOD asset: what
        :meth:`next_segment` would return for it."""
        if segment_index < 0:
            raise ValueError("segment_index must not be negative")
        return self.start_period + (segment_index // self.every_segments if self.every_segments else 0)
