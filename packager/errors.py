"""The packager package's error tree."""

from __future__ import annotations


class PackagerError(Exception):
    """Base of every error raised by the packager."""


class PlaylistError(PackagerError, ValueError):
    """A playlist would break the HLS rules (RFC 8216bis)."""


class ManifestError(PackagerError, ValueError):
    """A DASH manifest would break the MPD rules (ISO/IEC 23009-1)."""
