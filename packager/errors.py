"""The packager package's error tree."""

from __future__ import annotations


class PackagerError(Exception):
    """Base of every error raised by the packager."""


class PlaylistError(PackagerError, ValueError):
    """A playlist would break the HLS rules (RFC 8216bis)."""


class ManifestError(PackagerError, ValueError):
    """A DASH manifest would break the MPD rules (ISO/IEC 23009-1)."""


class AssetIdError(PackagerError, ValueError):
    """An asset id or a file name in an asset breaks the naming rule
    (:mod:`packager.assets.ids`)."""


class AssetNotFoundError(PackagerError, LookupError):
    """No asset has this id (never made, or deleted)."""


class RemuxError(PackagerError):
    """An asset's stored media could not be made into a download or a poster."""


class AssetEncryptedError(RemuxError):
    """The asset's segments are encrypted: it has no MP4 download or poster
    (the engine never decrypts what it protected)."""
