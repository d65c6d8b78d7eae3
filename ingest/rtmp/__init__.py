"""RTMP(S) ingest: sans-I/O protocol layers (handshake, chunk, amf0, messages,
flv, tracks, session) under a thin asyncio adapter (server)."""

from ingest.rtmp.errors import RtmpLimitError, RtmpProtocolError, RtmpUnsupportedCodecError, RtmpUsageError
from ingest.rtmp.limits import RtmpLimits
from ingest.rtmp.session import RtmpServerSession

__all__ = [
    "RtmpLimitError",
    "RtmpLimits",
    "RtmpProtocolError",
    "RtmpServerSession",
    "RtmpUnsupportedCodecError",
    "RtmpUsageError",
]
