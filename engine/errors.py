"""The engine package's error tree.

Every package defines its own errors under a common base so that callers can
catch one package's failures without swallowing another's.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error raised by the engine package."""


class ConfigError(EngineError, ValueError):
    """The configuration file or an environment variable is invalid."""


class StreamBusyError(EngineError):
    """A publisher asked for a stream that already has a live publisher."""


class StreamNameError(EngineError, ValueError):
    """A stream or rendition name is outside the allowed character set
    (see :data:`engine.media.STREAM_NAME_RULE`)."""


class PublishDenied(EngineError):
    """The publish check refused a stream key."""


class PlaybackDenied(EngineError):
    """The playback check refused a viewer."""


class GeoBlocked(PlaybackDenied):
    """The playback check refused a viewer for the country its address maps
    to (the stream's geographic rule). HTTP layers answer 451; a caller that
    only knows :class:`PlaybackDenied` still refuses.

    ``country`` is the ISO 3166-1 alpha-2 code the address mapped to, or
    ``None`` when it maps to none (a private or unlisted address)."""

    def __init__(self, country: str | None) -> None:
        where = f"your country ({country})" if country else "your location (its country is unknown)"
        super().__init__(f"this stream is not available in {where}")
        self.country = country
