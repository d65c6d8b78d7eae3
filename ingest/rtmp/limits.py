"""Resource limits of the RTMP ingest.

Every variable-length thing a peer controls has a named bound here, so that a
hostile or broken publisher costs a bounded amount of memory and time and then
is disconnected with a reason that names the limit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RtmpLimits:
    """Bounds for one RTMP server and each of its connections.

    Sizes are in bytes, times in seconds. The defaults suit OBS and ffmpeg
    publishing up to 4K at broadcast bit rates.
    """

    max_chunk_size: int = 1 << 24
    """Largest Set Chunk Size the peer may announce."""
    max_message_size: int = 8 << 20
    """Largest single RTMP message (a keyframe) the peer may send."""
    max_pending_bytes: int = 16 << 20
    """Bytes of partly received messages held across all chunk streams."""
    pre_publish_max_message_size: int = 64 << 10
    """Largest message accepted before the publish is authorized: connect,
    createStream, publish, metadata and codec configurations are small, and
    ffmpeg, OBS and GStreamer send media only after ``Publish.Start``."""
    pre_publish_max_pending_bytes: int = 128 << 10
    """Bytes of unfinished messages a connection may hold before its publish
    is authorized. With ``max_connections`` this bounds what unauthenticated
    peers can make the server hold (1,000 x 128 KiB = 125 MiB by default)."""
    max_chunk_streams: int = 64
    """Distinct chunk stream ids one connection may use."""
    max_amf_depth: int = 16
    """Nesting depth of AMF0 objects and arrays."""
    max_amf_items: int = 4096
    """Values (including nested ones) in one AMF0 message."""
    max_buffered_packets: int = 512
    """Media messages held while the track set is still unknown; more is a
    limit error (the announced configurations never came)."""
    probe_messages: int = 96
    """Media messages after which the tracks whose configuration is known
    start even though an announced (or, without metadata, the other) track
    has not sent its configuration yet."""
    max_message_streams: int = 8
    """``createStream`` calls one connection may make."""
    handshake_timeout_s: float = 10.0
    """Time from accept to a completed handshake and publish request."""
    idle_timeout_s: float = 30.0
    """Longest silence from a connected peer."""
    publish_check_timeout_s: float = 10.0
    """Longest wait for the publish check to answer."""
    max_connections: int = 1000
    """Simultaneous connections per server; more are closed at once."""
    out_chunk_size: int = 4096
    """Chunk size we announce and use for our own replies."""
    window_ack_size: int = 2_500_000
    """Acknowledgement window we ask the peer to use for our bytes."""
    peer_bandwidth: int = 2_500_000
    """Value of the Set Peer Bandwidth message sent after connect."""

    def __post_init__(self) -> None:
        for name in (
            "max_chunk_size",
            "max_message_size",
            "max_pending_bytes",
            "pre_publish_max_message_size",
            "pre_publish_max_pending_bytes",
            "max_chunk_streams",
            "max_amf_depth",
            "max_amf_items",
            "max_buffered_packets",
            "probe_messages",
            "max_message_streams",
            "max_connections",
            "out_chunk_size",
            "window_ack_size",
            "peer_bandwidth",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"RtmpLimits.{name} must be positive")
        if not 128 <= self.out_chunk_size <= 0x7FFFFFFF:
            raise ValueError("RtmpLimits.out_chunk_size must be between 128 and 2**31-1")
