"""Errors of the RTMP ingest.

:class:`RtmpProtocolError` means the peer sent something we cannot accept (a
malformed chunk, a limit exceeded, an unsupported codec); the adapter closes
that one connection and logs ``reason``. :class:`RtmpUsageError` means our own
code called the session wrongly (for example ``accept_publish`` with no publish
pending) and should never happen in production.
"""

from __future__ import annotations

from ingest.errors import IngestPeerError, IngestUsageError


class RtmpProtocolError(IngestPeerError, ValueError):
    """The peer broke the RTMP protocol; ``reason`` says how, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RtmpUnsupportedCodecError(RtmpProtocolError):
    """The peer publishes a codec the engine does not carry (Sorenson, MP3...)."""


class RtmpLimitError(RtmpProtocolError):
    """The peer exceeded one of the configured :class:`RtmpLimits`."""


class RtmpUsageError(IngestUsageError, RuntimeError):
    """The caller misused a sans-I/O RTMP object."""
