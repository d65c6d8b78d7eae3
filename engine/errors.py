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
