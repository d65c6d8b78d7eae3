"""The RTMP chunk stream: messages cut into chunks and interleaved (spec 5.3).

:class:`ChunkReader` reassembles the peer's chunks into :class:`RtmpMessage`
values; :class:`ChunkWriter` cuts our messages into chunks. Both keep the
per-chunk-stream header state that the compressed chunk types (1, 2, 3) refer
back to.

Timestamp rules, as ffmpeg, librtmp and OBS write them:

* type 0 carries the absolute timestamp; a later type 3 chunk that starts a
  new message adds that same field again (the field is remembered as the
  chunk stream's "delta");
* types 1 and 2 carry a delta added to the previous message's timestamp;
* a field of 0xFFFFFF means a 4-byte extended timestamp follows the header,
  and type 3 chunks of such a chunk stream repeat it. Some writers leave the
  repeat out of continuation chunks, so there it is consumed only when it
  matches.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ingest.rtmp.errors import RtmpLimitError, RtmpProtocolError, RtmpUsageError
from ingest.rtmp.limits import RtmpLimits

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF
EXTENDED = 0xFFFFFF
MAX_CSID = 65599
_HEADER_SIZES = (11, 7, 3, 0)
_U24 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class RtmpMessage:
    """One reassembled message. ``timestamp`` is the 32-bit wire clock in
    milliseconds (wrapping); ``stream_id`` is the message stream id (0 for
    control and connection commands)."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes
    csid: int = 3


@dataclass(slots=True)
class _InState:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    ext_field: int = 0
    partial: bytearray | None = None


def _u24(data: bytes | bytearray, pos: int) -> int:
    return (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]


class ChunkReader:
    """Reassembles messages from the peer's chunk stream.

    Call :meth:`receive_data` with bytes, then :meth:`next_message` until it
    returns ``None``. The caller must apply Set Chunk Size (:meth:`set_chunk_size`)
    and Abort (:meth:`abort`) messages before asking for the next message,
    since they change how the following chunks are read.
    """

    def __init__(self, limits: RtmpLimits, authorized: bool = True) -> None:
        self._limits = limits
        self._max_message = limits.max_message_size
        self._max_pending = limits.max_pending_bytes
        self._budget_note = ""
        if not authorized:
            self._max_message = min(limits.pre_publish_max_message_size, limits.max_message_size)
            self._max_pending = min(limits.pre_publish_max_pending_bytes, limits.max_pending_bytes)
            self._budget_note = " before the publish is authorized"
        self._buf = bytearray()
        self._pos = 0
        self._states: dict[int, _InState] = {}
        self._pending = 0
        self.chunk_size = DEFAULT_CHUNK_SIZE

    def receive_data(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed (at most one chunk's worth
        plus what the peer sent ahead)."""
        return len(self._buf) - self._pos + self._pending

    def authorize(self) -> None:
        """Lift the small pre-publish budget to the full limits. The session
        calls it when the publish is accepted, so that an unauthenticated
        peer can never make the server hold more than the pre-publish
        budget (a large message announced earlier that is still arriving
        keeps being checked against the full limits from here on)."""
        self._max_message = self._limits.max_message_size
        self._max_pending = self._limits.max_pending_bytes
        self._budget_note = ""

    def set_chunk_size(self, size: int) -> None:
        """Apply the peer's Set Chunk Size. Raises :class:`RtmpProtocolError`
        for 0 or the reserved high bit, :class:`RtmpLimitError` past the limit."""
        if size < 1 or size > MAX_CHUNK_SIZE:
            raise RtmpProtocolError(f"invalid chunk size {size}")
        if size > self._limits.max_chunk_size:
            raise RtmpLimitError(f"peer chunk size {size} exceeds the limit of {self._limits.max_chunk_size}")
        self.chunk_size = size

    def abort(self, csid: int) -> None:
        """Drop the partly received message on ``csid`` (an Abort message)."""
        state = self._states.get(csid)
        if state is not None and state.partial is not None:
            self._pending -= len(state.partial)
            state.partial = None

    def next_message(self) -> RtmpMessage | None:
        """Parse chunks until one message completes; ``None`` means more
        bytes are needed."""
        while True:
            result = self._read_chunk()
            if result is None:
                return None
            if isinstance(result, RtmpMessage):
                return result

    def _read_chunk(self) -> RtmpMessage | bool | None:
        """Consume one whole chunk. Returns the message it completed, ``True``
        when it completed none, ``None`` when the chunk is not all here."""
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 1:
            return None
        b0 = buf[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        p = pos + 1
        if csid == 0:
            if avail < 2:
                return None
            csid = buf[p] + 64
            p += 1
        elif csid == 1:
            if avail < 3:
                return None
            csid = buf[p] + (buf[p + 1] << 8) + 64
            p += 2
        end = len(buf)
        header_size = _HEADER_SIZES[fmt]
        if end - p < header_size:
            return None
        state = self._states.get(csid)
        if state is None:
            if fmt != 0:
                raise RtmpProtocolError(f"chunk type {fmt} on chunk stream {csid} before any type 0 chunk")
            if len(self._states) >= self._limits.max_chunk_streams:
                raise RtmpLimitError(f"peer used more than {self._limits.max_chunk_streams} chunk streams")
            state = _InState()
        continuing = state.partial is not None
        if continuing and fmt != 3:
            raise RtmpProtocolError(f"chunk type {fmt} on chunk stream {csid} in the middle of a message")

        ts_field = 0
        length = state.length
        type_id = state.type_id
        stream_id = state.stream_id
        if fmt <= 2:
            ts_field = _u24(buf, p)
            if fmt <= 1:
                length = _u24(buf, p + 3)
                type_id = buf[p + 6]
                if fmt == 0:
                    stream_id = int.from_bytes(buf[p + 7 : p + 11], "little")
        p += header_size

        extended = state.extended
        if fmt <= 2:
            extended = ts_field == EXTENDED
            if extended:
                if end - p < 4:
                    return None
                ts_field = int.from_bytes(buf[p : p + 4], "big")
                p += 4
        elif extended:
            if continuing:
                # Consume a repeated extended timestamp only when it is one.
                if end - p < 4:
                    return None
                if int.from_bytes(buf[p : p + 4], "big") == state.ext_field:
                    p += 4
            else:
                if end - p < 4:
                    return None
                ts_field = int.from_bytes(buf[p : p + 4], "big")
                p += 4

        if not continuing:
            if length > self._max_message:
                raise RtmpLimitError(
                    f"message of {length} bytes exceeds the limit of {self._max_message}{self._budget_note}"
                )
            received = 0
        else:
            assert state.partial is not None
            received = len(state.partial)
        take = min(self.chunk_size, length - received)
        if end - p < take:
            return None

        # The whole chunk is here: commit the header state.
        if not continuing:
            if fmt == 0:
                timestamp = ts_field
                delta = ts_field
            elif fmt == 3:
                delta = ts_field if extended else state.delta
                timestamp = (state.timestamp + delta) & 0xFFFFFFFF
            else:
                delta = ts_field
                timestamp = (state.timestamp + delta) & 0xFFFFFFFF
            state.timestamp = timestamp
            state.delta = delta
            state.length = length
            state.type_id = type_id
            state.stream_id = stream_id
            state.extended = extended
            if fmt <= 2 or extended:
                state.ext_field = ts_field
            state.partial = bytearray()
            self._states[csid] = state
        partial = state.partial
        assert partial is not None
        if self._pending + take > self._max_pending:
            raise RtmpLimitError(f"more than {self._max_pending} bytes of unfinished messages{self._budget_note}")
        length = state.length
        if not partial and take == length:
            # The whole message in one chunk: one copy, straight from the buffer.
            with memoryview(buf) as view:
                payload = bytes(view[p : p + take])
            self._pos = p + take
            state.partial = None
            return RtmpMessage(state.type_id, state.stream_id, state.timestamp, payload, csid)
        with memoryview(buf) as view:
            partial += view[p : p + take]
            self._pending += take
            p += take
            if csid < 64 and not state.extended:
                # The message's next chunks usually follow at once, each a
                # one-byte type 3 header and a chunk of payload: take them
                # here rather than through the general header parse above.
                marker = 0xC0 | csid
                size = self.chunk_size
                while (left := length - len(partial)) > 0 and p < end and buf[p] == marker:
                    take = size if size < left else left
                    if end - p - 1 < take:
                        break
                    if self._pending + take > self._max_pending:
                        self._pos = p
                        raise RtmpLimitError(
                            f"more than {self._max_pending} bytes of unfinished messages{self._budget_note}"
                        )
                    partial += view[p + 1 : p + 1 + take]
                    self._pending += take
                    p += 1 + take
        self._pos = p
        if len(partial) < length:
            return True
        payload = bytes(partial)
        self._pending -= len(payload)
        state.partial = None
        return RtmpMessage(state.type_id, state.stream_id, state.timestamp, payload, csid)


def encode_basic_header(fmt: int, csid: int) -> bytes:
    """The 1-3 byte basic header of a chunk."""
    if not 0 <= fmt <= 3 or not 2 <= csid <= MAX_CSID:
        raise RtmpUsageError(f"invalid chunk format {fmt} or chunk stream id {csid}")
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    rest = csid - 64
    return bytes(((fmt << 6) | 1, rest & 0xFF, rest >> 8))


def encode_chunk_header(
    fmt: int, csid: int, ts_field: int = 0, length: int = 0, type_id: int = 0, stream_id: int = 0
) -> bytes:
    """A full chunk header: basic header, the message header of type ``fmt``
    and the extended timestamp when ``ts_field`` needs one. For type 3,
    ``ts_field`` is the repeated extended timestamp, written only when it is
    0xFFFFFF or more."""
    out = bytearray(encode_basic_header(fmt, csid))
    ts_field &= 0xFFFFFFFF
    extended = ts_field >= EXTENDED
    if fmt <= 2:
        out += _U24.pack(EXTENDED if extended else ts_field)[1:]
        if fmt <= 1:
            if not 0 <= length <= 0xFFFFFF or not 0 <= type_id <= 0xFF:
                raise RtmpUsageError("message length or type out of range")
            out += _U24.pack(length)[1:]
            out.append(type_id)
            if fmt == 0:
                out += (stream_id & 0xFFFFFFFF).to_bytes(4, "little")
    if extended:
        out += ts_field.to_bytes(4, "big")
    return bytes(out)


@dataclass(slots=True)
class _OutState:
    timestamp: int
    delta: int
    length: int
    type_id: int
    stream_id: int


class ChunkWriter:
    """Cuts our messages into chunks, compressing headers against the previous
    message on the same chunk stream (types 1, 2 and 3) when it can.

    To change the outgoing chunk size, send a Set Chunk Size message with the
    old size and then call :meth:`set_chunk_size`.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.set_chunk_size(chunk_size)
        self._states: dict[int, _OutState] = {}

    def set_chunk_size(self, size: int) -> None:
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise RtmpUsageError(f"invalid chunk size {size}")
        self.chunk_size = size

    def write(self, message: RtmpMessage) -> bytes:
        csid = message.csid
        length = len(message.payload)
        timestamp = message.timestamp & 0xFFFFFFFF
        prev = self._states.get(csid)
        if prev is None or prev.stream_id != message.stream_id or timestamp < prev.timestamp:
            fmt, field = 0, timestamp
        else:
            delta = timestamp - prev.timestamp
            if prev.length != length or prev.type_id != message.type_id:
                fmt, field = 1, delta
            elif prev.delta != delta:
                fmt, field = 2, delta
            else:
                fmt, field = 3, delta
        self._states[csid] = _OutState(timestamp, field, length, message.type_id, message.stream_id)
        out = bytearray(encode_chunk_header(fmt, csid, field, length, message.type_id, message.stream_id))
        payload = message.payload
        size = self.chunk_size
        out += payload[:size]
        continuation = encode_chunk_header(3, csid, field)
        for start in range(size, length, size):
            out += continuation
            out += payload[start : start + size]
        return bytes(out)
