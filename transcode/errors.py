"""The transcode package's error tree.

Misuse of the API or an invalid ladder (:class:`TranscodeConfigError`) is kept
apart from trouble that comes from the media itself (:class:`SourceError`: a
stream that cannot be decoded) and from the machine (:class:`EncoderError`: an
encoder that will not open), so that a live caller can end one stream's
transcode on a bad source without treating it as a bug.
"""

from __future__ import annotations


class TranscodeError(Exception):
    """Base of every error raised by the transcode package."""


class TranscodeConfigError(TranscodeError, ValueError):
    """A ladder, rung or encoder name is invalid (local misuse)."""


class SourceError(TranscodeError):
    """The source's tracks or packets cannot be transcoded (remote input)."""


class EncoderError(TranscodeError):
    """An encoder failed to open or to encode on this machine."""
