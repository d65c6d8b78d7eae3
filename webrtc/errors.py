"""Errors of the WebRTC package.

:class:`WebRtcPeerError` and its subclasses mean a remote party sent
something we cannot use (a malformed SDP offer, no usable codec, a broken
bitstream); the HTTP adapter answers 4xx and only that session ends.
:class:`WebRtcUsageError` means our own code misused an object and should
never happen in production. :class:`SessionLimitError` is a configured limit
being reached (503 for the client, not a fault of either side).
"""

from __future__ import annotations


class WebRtcError(Exception):
    """Base of every error raised by the webrtc package."""


class WebRtcPeerError(WebRtcError, ValueError):
    """The remote peer sent something we cannot accept."""


class OfferError(WebRtcPeerError):
    """The SDP offer is malformed or offers nothing we can use."""


class BitstreamError(WebRtcPeerError):
    """A publisher's media could not be parsed or transcoded."""


class SessionLimitError(WebRtcError):
    """A configured session limit is reached."""


class UnknownSessionError(WebRtcError, KeyError):
    """No session has that id (already ended or never existed)."""


class WebRtcUsageError(WebRtcError, RuntimeError):
    """The caller misused an object of this package."""
