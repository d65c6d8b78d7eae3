"""Errors raised by the fMP4 writer.

The writer only sees values the engine already validated, so its errors are
misuse (a packet for a track the writer does not hold, timestamps it cannot
express) or a track it cannot describe; both subclass :class:`Fmp4Error`.
"""

from __future__ import annotations

from packager.errors import PackagerError


class Fmp4Error(PackagerError):
    """Base of every error raised by :mod:`packager.fmp4`."""


class Fmp4UsageError(Fmp4Error, ValueError):
    """The caller passed packets or tracks the writer cannot write."""


class Fmp4TrackError(Fmp4Error, ValueError):
    """A track's codec or extradata cannot go in an MP4 sample entry (the
    publisher sent something unusable; ``__cause__`` has the codec error)."""


class Fmp4EncryptionError(Fmp4Error, ValueError):
    """A sample could not be encrypted: the publisher's packet is not the
    run of length-prefixed NAL units its track promises (``__cause__`` has
    the :class:`drm.errors.SampleEncryptionError`)."""
