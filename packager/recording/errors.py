"""The recording package's error tree."""

from __future__ import annotations

from packager.errors import PackagerError


class RecordingError(PackagerError):
    """Base of every error raised by the recorder."""


class RecordingIdError(RecordingError, ValueError):
    """A string that is not a recording id (never used to name files)."""


class JournalError(RecordingError, ValueError):
    """A journal line that cannot be read (truncated or garbled by a crash)."""
