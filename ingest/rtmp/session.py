"""The server side of one RTMP publishing connection, without I/O.

``RtmpServerSession`` stacks the layers: handshake, chunk stream, message
handling (protocol control, commands, data) and FLV media. The adapter feeds
it bytes and sends what it produces::

    session.receive_data(data)           # raises RtmpProtocolError
    transport.write(session.data_to_send())
    while (event := session.next_event()) is not None:
        ...                              # see ingest.rtmp.events

After :class:`PublishRequested` the adapter runs its (asynchronous) publish
check and calls :meth:`accept_publish` or :meth:`reject_publish`. Coded
frames that arrive in between are not forwarded (sequence headers are kept
for when the publish is accepted). When :attr:`close_reason` becomes set the
adapter sends what is left to send and closes the connection.

The reply order follows what ffmpeg and OBS wait for: on ``connect``, Window
Acknowledgement Size, Set Peer Bandwidth, Set Chunk Size, Stream Begin and
the ``_result``; ``onFCPublish`` for ``FCPublish``; the ``createStream``
``_result``; and ``onStatus`` NetStream.Publish.Start once accepted.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator

from engine.media import MediaKind
from ingest.rtmp import amf0
from ingest.rtmp import messages as m
from ingest.rtmp.amf0 import UNDEFINED, AmfLimits, AmfValue
from ingest.rtmp.chunk import ChunkReader, ChunkWriter, RtmpMessage
from ingest.rtmp.errors import RtmpLimitError, RtmpProtocolError, RtmpUsageError
from ingest.rtmp.events import (
    Connected,
    Event,
    HandshakeDone,
    Metadata,
    PublishRequested,
    PublishStopped,
)
from ingest.rtmp.flv import MediaTag, TagRole, parse_audio, parse_video
from ingest.rtmp.handshake import ServerHandshake
from ingest.rtmp.limits import RtmpLimits
from ingest.rtmp.tracks import TrackAssembler, hints_from_metadata


class SessionState(enum.Enum):
    HANDSHAKE = "handshake"
    AWAIT_CONNECT = "await_connect"
    CONNECTED = "connected"
    PUBLISH_PENDING = "publish_pending"
    PUBLISHING = "publishing"
    STOPPED = "stopped"  # the publish ended; the peer may still say goodbye
    CLOSED = "closed"  # rejected or failed; the adapter closes the connection


_PUBLISH_FAILURE_CODES = frozenset({
    "NetStream.Publish.BadName",
    "NetStream.Publish.Unauthorized",
    "NetStream.Publish.Denied",
    "NetStream.Publish.Rejected",
    "NetStream.Publish.Failed",
})


def _str(value: AmfValue) -> str:
    return value if isinstance(value, str) else ""


class RtmpServerSession:
    """One connection's protocol state. ``app_names``, when given, is the set
    of RTMP applications (``live``) that ``connect`` may name."""

    def __init__(
        self,
        limits: RtmpLimits,
        app_names: frozenset[str] | None = None,
        random_source: Callable[[int], bytes] | None = None,
    ) -> None:
        self._limits = limits
        self._app_names = app_names
        self._amf_limits = AmfLimits(limits.max_amf_depth, limits.max_amf_items)
        self._handshake = ServerHandshake(random_source)
        # Small limits until the publish check says yes: see RtmpLimits.
        self._reader = ChunkReader(limits, authorized=False)
        self._writer = ChunkWriter()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._assembler = TrackAssembler(limits.probe_messages, limits.max_buffered_packets)
        self._pending_configs: dict[MediaKind, tuple[MediaTag, int]] = {}
        self._streams: set[int] = set()
        self._next_stream_id = 1
        self._publish_stream = 0
        self._publish_key = ""
        self._failed: str | None = None
        self._peer_window = 0
        self._last_ack = 0
        self.state = SessionState.HANDSHAKE
        self.app = ""
        self.tc_url = ""
        self.close_reason: str | None = None
        """Set when the session wants the connection closed (after sending
        :meth:`data_to_send`): a rejected publish or connect, or playback."""
        self.bytes_received = 0
        self.messages_received = 0
        self.media_packets = 0
        self.frames_dropped_before_publish = 0

    # -- input ----------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Process bytes from the peer. Raises :class:`RtmpProtocolError`
        (the connection must then be closed); afterwards further calls raise
        :class:`RtmpUsageError`."""
        if self._failed is not None:
            raise RtmpUsageError(f"session already failed: {self._failed}")
        self.bytes_received += len(data)
        try:
            if self.state is SessionState.HANDSHAKE:
                data = self._handshake.receive_data(data)
                self._out += self._handshake.data_to_send()
                if not self._handshake.done:
                    return
                self.state = SessionState.AWAIT_CONNECT
                self._events.append(HandshakeDone(self._handshake.digest_scheme is not None))
            self._reader.receive_data(data)
            while self.state is not SessionState.CLOSED:
                message = self._reader.next_message()
                if message is None:
                    break
                self.messages_received += 1
                self._handle(message)
            self._maybe_ack()
        except RtmpProtocolError as exc:
            self._failed = exc.reason
            self.state = SessionState.CLOSED
            raise

    def _maybe_ack(self) -> None:
        if self._peer_window and self.bytes_received - self._last_ack >= self._peer_window:
            self._last_ack = self.bytes_received
            self._send(m.control(m.ACKNOWLEDGEMENT, self.bytes_received))

    # -- output ---------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> Iterator[Event]:
        """Yield the queued events (until none is left)."""
        while self._events:
            yield self._events.popleft()

    def _send(self, message: RtmpMessage) -> None:
        self._out += self._writer.write(message)

    def _status(self, level: str, code: str, description: str, extra: dict[str, AmfValue] | None = None) -> None:
        info = m.status_info(level, code, description)
        if extra:
            info.update(extra)
        self._send(m.command("onStatus", 0, None, info, stream_id=self._publish_stream))

    # -- commands the adapter calls -------------------------------------
    def accept_publish(self) -> None:
        """Let the pending publish start. Next: send :meth:`data_to_send`,
        then handle :class:`TracksReady` and :class:`MediaPacket` events."""
        if self.state is not SessionState.PUBLISH_PENDING:
            raise RtmpUsageError(f"accept_publish in state {self.state.value}")
        self.state = SessionState.PUBLISHING
        self._reader.authorize()
        self._send(m.stream_begin(self._publish_stream))
        self._status("status", "NetStream.Publish.Start", f"{self._publish_key} is now published.",
                     {"details": self._publish_key})
        for kind, (tag, ts) in self._pending_configs.items():
            self._events.extend(self._assembler.push(kind, tag, ts))
        self._pending_configs.clear()

    def reject_publish(self, code: str = "NetStream.Publish.BadName", description: str = "publish refused") -> None:
        """Refuse the pending publish with an ``onStatus`` error; the session
        then asks for the connection to be closed (:attr:`close_reason`)."""
        if self.state is not SessionState.PUBLISH_PENDING:
            raise RtmpUsageError(f"reject_publish in state {self.state.value}")
        if code not in _PUBLISH_FAILURE_CODES:
            raise RtmpUsageError(f"{code!r} is not a publish failure code")
        self._status("error", code, description)
        self.state = SessionState.CLOSED
        self._pending_configs.clear()
        self.close_reason = f"publish refused: {code}: {description}"

    @property
    def publishing(self) -> bool:
        return self.state is SessionState.PUBLISHING

    @property
    def dropped_frames(self) -> int:
        """Coded frames dropped because their track had no configuration."""
        return self._assembler.dropped

    # -- message handling -----------------------------------------------
    def _handle(self, msg: RtmpMessage) -> None:
        t = msg.type_id
        if t in m.PROTOCOL_CONTROL:
            self._handle_control(msg)
        elif t == m.USER_CONTROL:
            uc = m.parse_user_control(msg.payload)
            if uc.event == m.UC_PING_REQUEST:
                self._send(m.user_control(m.UC_PING_RESPONSE, uc.data[:4]))
        elif t == m.COMMAND_AMF0:
            self._handle_command(msg, msg.payload)
        elif t == m.COMMAND_AMF3:
            # An AMF3 command starts with a format byte, then AMF0 values.
            self._handle_command(msg, msg.payload[1:])
        elif t == m.DATA_AMF0:
            self._handle_data(amf0.decode(msg.payload, self._amf_limits))
        elif t == m.DATA_AMF3:
            try:
                values = amf0.decode(msg.payload[1:], self._amf_limits)
            except RtmpLimitError:
                raise
            except RtmpProtocolError:
                return  # true AMF3 data: nothing in it is needed, skip it
            self._handle_data(values)
        elif t in (m.AUDIO, m.VIDEO):
            self._handle_media(msg.stream_id, t, msg.payload, msg.timestamp)
        elif t == m.AGGREGATE:
            parts = m.split_aggregate(msg.payload)
            if parts:
                base = parts[0].timestamp
                for part in parts:
                    if part.type_id in (m.AUDIO, m.VIDEO):
                        ts = (msg.timestamp + part.timestamp - base) & 0xFFFFFFFF
                        self._handle_media(msg.stream_id, part.type_id, part.payload, ts)
        # Shared objects and unknown types carry nothing for a publish: ignored.

    def _handle_control(self, msg: RtmpMessage) -> None:
        t = msg.type_id
        if t == m.SET_PEER_BANDWIDTH or t == m.ACKNOWLEDGEMENT:
            return
        value = m.parse_u32(msg.payload, "protocol control")
        if t == m.SET_CHUNK_SIZE:
            self._reader.set_chunk_size(value)
        elif t == m.ABORT:
            self._reader.abort(value)
        elif t == m.WINDOW_ACK_SIZE:
            self._peer_window = value

    def _handle_command(self, msg: RtmpMessage, payload: bytes) -> None:
        values = amf0.decode(payload, self._amf_limits)
        if len(values) < 2 or not isinstance(values[0], str):
            raise RtmpProtocolError("command message without a name and transaction id")
        name = values[0]
        txn = amf0.as_number(values[1]) or 0.0
        args = values[3:]
        if name == "connect":
            self._on_connect(txn, values[2] if len(values) > 2 else None)
            return
        if self.state in (SessionState.HANDSHAKE, SessionState.AWAIT_CONNECT):
            raise RtmpProtocolError(f"command {name!r} before connect")
        if name in ("releaseStream", "FCPublish", "FCUnpublish", "getStreamLength", "_checkbw"):
            if txn:
                self._send(m.command("_result", txn, None, UNDEFINED))
            if name == "FCPublish":
                key = _str(args[0]) if args else ""
                self._send(m.command("onFCPublish", 0, None,
                                     m.status_info("status", "NetStream.Publish.Start", key)))
            elif name == "FCUnpublish":
                self._stop("FCUnpublish")
        elif name == "createStream":
            if len(self._streams) >= self._limits.max_message_streams:
                raise RtmpLimitError(f"more than {self._limits.max_message_streams} createStream calls")
            stream_id = self._next_stream_id
            self._next_stream_id += 1
            self._streams.add(stream_id)
            self._send(m.command("_result", txn, None, float(stream_id)))
        elif name == "publish":
            self._on_publish(msg.stream_id, args)
        elif name == "deleteStream":
            deleted = amf0.as_number(args[0]) if args else None
            if deleted is not None and int(deleted) == self._publish_stream:
                self._stop("deleteStream")
            if deleted is not None:
                self._streams.discard(int(deleted))
        elif name == "closeStream":
            if msg.stream_id == self._publish_stream:
                self._stop("closeStream")
        elif name in ("play", "play2"):
            self._publish_stream = msg.stream_id
            self._status("error", "NetStream.Play.Failed", "this server does not play streams over RTMP")
            self.state = SessionState.CLOSED
            self.close_reason = "peer asked to play; RTMP playback is not served"
        # Anything else (_result, _error, onBWDone, user calls) needs no answer.

    def _on_connect(self, txn: float, cmd: AmfValue) -> None:
        if self.state is not SessionState.AWAIT_CONNECT:
            raise RtmpProtocolError("connect sent twice")
        if not isinstance(cmd, dict):
            raise RtmpProtocolError("connect without a command object")
        app = _str(cmd.get("app")).split("?", 1)[0].strip("/")
        self.app = app
        self.tc_url = _str(cmd.get("tcUrl"))
        if self._app_names is not None and app not in self._app_names:
            self._send(m.command("_error", txn, None, m.status_info(
                "error", "NetConnection.Connect.Rejected", f"unknown application {app!r}")))
            self.state = SessionState.CLOSED
            self.close_reason = f"connect to unknown application {app!r}"
            return
        self.state = SessionState.CONNECTED
        lim = self._limits
        self._send(m.control(m.WINDOW_ACK_SIZE, lim.window_ack_size))
        self._send(m.set_peer_bandwidth(lim.peer_bandwidth))
        self._send(m.control(m.SET_CHUNK_SIZE, lim.out_chunk_size))
        self._writer.set_chunk_size(lim.out_chunk_size)
        self._send(m.stream_begin(0))
        info = m.status_info("status", "NetConnection.Connect.Success", "Connection succeeded.")
        info["objectEncoding"] = 0.0
        self._send(m.command("_result", txn, {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31.0, "mode": 1.0}, info))
        self._events.append(Connected(app, self.tc_url, _str(cmd.get("flashVer"))))

    def _on_publish(self, stream_id: int, args: list[AmfValue]) -> None:
        if self.state is not SessionState.CONNECTED:
            raise RtmpProtocolError(f"publish in state {self.state.value}")
        if stream_id not in self._streams:
            raise RtmpProtocolError(f"publish on message stream {stream_id}, which createStream did not return")
        key = _str(args[0]) if args else ""
        publish_type = _str(args[1]) if len(args) > 1 else "live"
        self._publish_stream = stream_id
        self._publish_key = key
        self.state = SessionState.PUBLISH_PENDING
        self._events.append(PublishRequested(self.app, key, self.tc_url, publish_type or "live", stream_id))

    def _stop(self, reason: str) -> None:
        if self.state in (SessionState.PUBLISHING, SessionState.PUBLISH_PENDING):
            was_publishing = self.state is SessionState.PUBLISHING
            self.state = SessionState.STOPPED
            if was_publishing:
                self._status("status", "NetStream.Unpublish.Success", f"{self._publish_key} is now unpublished.")
            self._events.append(PublishStopped(reason))

    def _handle_data(self, values: list[AmfValue]) -> None:
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            meta = dict(values[1])
            self._assembler.set_metadata(hints_from_metadata(meta))
            self._events.append(Metadata(meta))

    def _handle_media(self, stream_id: int, type_id: int, payload: bytes, timestamp: int) -> None:
        if self.state not in (SessionState.PUBLISHING, SessionState.PUBLISH_PENDING):
            self.frames_dropped_before_publish += 1
            return
        if stream_id != self._publish_stream:
            raise RtmpProtocolError(f"media on message stream {stream_id}, not the published stream")
        kind = MediaKind.VIDEO if type_id == m.VIDEO else MediaKind.AUDIO
        tag = parse_video(payload) if kind is MediaKind.VIDEO else parse_audio(payload)
        if tag is None:
            return
        if self.state is SessionState.PUBLISH_PENDING:
            if tag.role is TagRole.CONFIG:
                self._pending_configs[kind] = (tag, timestamp)
            else:
                self.frames_dropped_before_publish += 1
            return
        self.media_packets += 1
        self._events.extend(self._assembler.push(kind, tag, timestamp))
