"""RTMP message types and the bodies of protocol control messages (spec 5.4,
6.2, 7.1): parsing what the peer sends and building what we reply.

Commands (AMF0 ``connect``, ``publish``...) are built with :func:`command`;
their meaning lives in the session.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ingest.rtmp import amf0
from ingest.rtmp.chunk import RtmpMessage
from ingest.rtmp.errors import RtmpProtocolError

SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

PROTOCOL_CONTROL = frozenset({SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH})

# User control event types (spec 7.1.7).
UC_STREAM_BEGIN = 0
UC_STREAM_EOF = 1
UC_STREAM_DRY = 2
UC_SET_BUFFER_LENGTH = 3
UC_STREAM_IS_RECORDED = 4
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7

# Chunk stream ids we send on, as Flash Media Server and nginx-rtmp do.
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_STREAM_COMMAND = 5

# Set Peer Bandwidth limit types.
BANDWIDTH_HARD = 0
BANDWIDTH_SOFT = 1
BANDWIDTH_DYNAMIC = 2

_U32 = struct.Struct(">I")


def parse_u32(payload: bytes, what: str) -> int:
    """The 4-byte big-endian body of Set Chunk Size, Abort, Ack and Window
    Ack Size. Extra bytes are tolerated (some encoders pad)."""
    if len(payload) < 4:
        raise RtmpProtocolError(f"{what} message of {len(payload)} bytes is too short")
    value: int = _U32.unpack_from(payload)[0]
    return value


@dataclass(frozen=True, slots=True)
class UserControl:
    """A User Control event: its type and the bytes after it (a stream id
    or a ping timestamp, for the types we handle)."""

    event: int
    data: bytes


def parse_user_control(payload: bytes) -> UserControl:
    if len(payload) < 2:
        raise RtmpProtocolError("user control message shorter than its event type")
    return UserControl(int.from_bytes(payload[:2], "big"), bytes(payload[2:]))


def control(type_id: int, value: int) -> RtmpMessage:
    """A 4-byte protocol control message (Set Chunk Size, Ack, Window Ack Size)."""
    return RtmpMessage(type_id, 0, 0, _U32.pack(value & 0xFFFFFFFF), CSID_CONTROL)


def set_peer_bandwidth(size: int, limit_type: int = BANDWIDTH_DYNAMIC) -> RtmpMessage:
    return RtmpMessage(SET_PEER_BANDWIDTH, 0, 0, _U32.pack(size) + bytes((limit_type,)), CSID_CONTROL)


def user_control(event: int, data: bytes) -> RtmpMessage:
    return RtmpMessage(USER_CONTROL, 0, 0, event.to_bytes(2, "big") + data, CSID_CONTROL)


def stream_begin(stream_id: int) -> RtmpMessage:
    return user_control(UC_STREAM_BEGIN, _U32.pack(stream_id))


def command(name: str, transaction_id: float, *args: amf0.AmfValue, stream_id: int = 0) -> RtmpMessage:
    """An AMF0 command message (``_result``, ``onStatus``...). Commands on a
    message stream go on their own chunk stream, as servers conventionally do."""
    csid = CSID_STREAM_COMMAND if stream_id else CSID_COMMAND
    return RtmpMessage(COMMAND_AMF0, stream_id, 0, amf0.encode(name, transaction_id, *args), csid)


def status_info(level: str, code: str, description: str) -> dict[str, amf0.AmfValue]:
    """The info object of an ``onStatus`` / ``_result``."""
    return {"level": level, "code": code, "description": description}


@dataclass(frozen=True, slots=True)
class AggregatePart:
    """One sub-message of an aggregate message (spec 7.1.6)."""

    type_id: int
    timestamp: int
    payload: bytes


def split_aggregate(payload: bytes) -> list[AggregatePart]:
    """Split an aggregate message body: FLV-style tags (11-byte header, body,
    4-byte back pointer). Timestamps are returned as written; the caller
    rebases them on the aggregate message's own timestamp."""
    parts: list[AggregatePart] = []
    pos = 0
    n = len(payload)
    while pos < n:
        if n - pos < 11:
            raise RtmpProtocolError("aggregate message ends inside a sub-message header")
        type_id = payload[pos]
        size = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(payload[pos + 4 : pos + 7], "big") | (payload[pos + 7] << 24)
        body_start = pos + 11
        body_end = body_start + size
        if body_end > n:
            raise RtmpProtocolError("aggregate sub-message runs past the end of the message")
        parts.append(AggregatePart(type_id, ts, bytes(payload[body_start:body_end])))
        pos = min(body_end + 4, n)  # the back pointer may be missing after the last part
    return parts
