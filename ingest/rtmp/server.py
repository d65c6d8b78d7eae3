"""The asyncio adapter for the RTMP(S) ingest.

It owns sockets, timers and tasks and nothing else: bytes go into an
:class:`~ingest.rtmp.session.RtmpServerSession`, the session's replies go back
out, and its events become calls on the publish check and the stream
registry. RTMPS is the same server given an ``ssl.SSLContext``.

A protocol error, a timeout or a refused publish closes only that connection,
with one log line that says why.

Once a connection publishes, its reads take a shorter way: the socket's
bytes go to the session from the transport's callback (:class:`_Reader`),
without waking the connection's task for each read, which costs more than
parsing them. The task sleeps until something needs it (a protocol error,
the session asking to close, a full send buffer, the end of the
connection) and then carries on exactly as if it had read the bytes itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import SupportsIndex

from engine.auth import PublishCheck, PublishRequest, grant_settings
from engine.errors import PublishDenied, StreamBusyError, StreamNameError
from engine.registry import Publisher, StreamRegistry
from ingest.rtmp.errors import RtmpProtocolError, RtmpUsageError
from ingest.rtmp.events import (
    Connected,
    Event,
    MediaPacket,
    PublishRequested,
    PublishStopped,
    TracksChanged,
    TracksReady,
)
from ingest.rtmp.limits import RtmpLimits
from ingest.rtmp.session import RtmpServerSession, SessionState

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
WATCHDOG_INTERVAL_S = 0.5
"""How often a connection's timeouts are checked (their resolution)."""
DIRECT_SEND_BUFFER = 64 * 1024
"""Bytes waiting to be sent past which a publishing connection's task takes
over again, to wait for the peer to read (with the idle timeout)."""


class _Reader(asyncio.StreamReader):
    """A stream reader that can hand arriving bytes straight to
    :attr:`direct` instead of buffering them. The connection sets
    :attr:`direct` only while nothing is buffered and it waits for its
    :attr:`wake` future, which the end of the stream (or its failure) also
    resolves, so bytes are never taken out of order and no ending is missed."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.direct: Callable[[bytes], None] | None = None
        self.wake: asyncio.Future[None] | None = None
        self.unread = 0
        """Bytes buffered and not yet read."""

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        chunk = data if isinstance(data, bytes) else bytes(data)
        if self.direct is not None and chunk:
            self.direct(chunk)
            return
        self.unread += len(chunk)
        super().feed_data(chunk)

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        self.unread -= len(data)
        return data

    def feed_eof(self) -> None:
        self.stop_direct()
        super().feed_eof()

    def set_exception(self, exc: Exception) -> None:
        self.stop_direct()
        super().set_exception(exc)

    def stop_direct(self, exc: BaseException | None = None) -> None:
        """Stop taking bytes directly and wake the waiting task (raising
        ``exc`` in it when given)."""
        self.direct = None
        wake, self.wake = self.wake, None
        if wake is not None and not wake.done():
            if exc is not None:
                wake.set_exception(exc)
            else:
                wake.set_result(None)


@dataclass(slots=True)
class RtmpConnectionStats:
    """Counters of one connection, for the metrics endpoint and the API."""

    id: int
    remote: str
    protocol: str
    connected_at: float
    """Wall-clock time (seconds since the epoch) the connection was accepted."""
    state: str = "handshake"
    app: str = ""
    stream_name: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    media_packets: int = 0


class _Connection:
    """One accepted socket and its session."""

    def __init__(
        self,
        server: RtmpServer,
        conn_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        remote = f"[{peer[0]}]:{peer[1]}" if peer and ":" in str(peer[0]) else (f"{peer[0]}:{peer[1]}" if peer else "?")
        self.stats = RtmpConnectionStats(conn_id, remote, server.protocol, time.time())
        self.session = RtmpServerSession(server.limits, server.app_names)
        self.publisher: Publisher | None = None
        self.publish_requested = False
        self.kicked: str | None = None

    async def run(self) -> None:
        limits = self.server.limits
        loop = self._loop = asyncio.get_running_loop()
        self._deadline_handshake = loop.time() + limits.handshake_timeout_s
        self._last_read = loop.time()
        self._timed_out: str | None = None
        # One watchdog timer per connection rather than a timeout per read:
        # reads happen hundreds of times a second on a busy stream.
        self._watchdog = loop.call_later(WATCHDOG_INTERVAL_S, self._watch, loop)
        reason = "peer closed the connection"
        try:
            while True:
                if await self._publish_directly():
                    # Woken: what the bytes taken directly left to do.
                    await self._flush()
                    self.stats.state = self.session.state.value
                    if self.session.close_reason is not None:
                        reason = self.session.close_reason
                        log.info("rtmp %s: closing: %s", self.stats.remote, reason)
                        break
                    continue
                data = await self.reader.read(READ_SIZE)
                if not data:
                    if self._timed_out is not None:
                        reason = self._timed_out
                        log.warning("rtmp %s: closing: %s", self.stats.remote, reason)
                    elif self.kicked is not None:
                        reason = f"kicked: {self.kicked}"
                    break
                self._last_read = loop.time()
                self.stats.bytes_in += len(data)
                self.session.receive_data(data)
                await self._flush()
                for event in self.session.events():
                    await self._on_event(event)
                await self._flush()
                self.stats.state = self.session.state.value
                if self.session.close_reason is not None:
                    reason = self.session.close_reason
                    log.info("rtmp %s: closing: %s", self.stats.remote, reason)
                    break
        except RtmpProtocolError as exc:
            reason = f"protocol error: {exc.reason}"
            self.server.protocol_errors += 1
            log.warning("rtmp %s: closing on protocol error: %s", self.stats.remote, exc.reason)
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            reason = f"connection lost: {exc!r}"
            log.info("rtmp %s: %s", self.stats.remote, reason)
        finally:
            self._watchdog.cancel()
            self.stats.state = "closed"
            if self.publisher is not None:
                self.publisher.close(reason)
            await self._close_transport()

    async def _publish_directly(self) -> bool:
        """While publishing, with nothing buffered or left to send, let the
        reader hand bytes to :meth:`_take` and sleep until woken. False when
        the connection is not in that state (read the usual way)."""
        reader = self.reader
        if (
            not isinstance(reader, _Reader)
            or self.session.state is not SessionState.PUBLISHING
            or self.publisher is None
            or reader.unread
            or reader.at_eof()
            or reader.exception() is not None
            or self.writer.is_closing()
        ):
            return False
        wake = reader.wake = self._loop.create_future()
        reader.direct = self._take
        try:
            await wake
        finally:
            reader.direct = None
            reader.wake = None
        return True

    def _take(self, data: bytes) -> None:
        """Bytes from the transport's callback while publishing: the read
        loop's work without its task switch. Whatever needs the task (an
        error, a close, a full send buffer, a state change) wakes it."""
        reader = self.reader
        assert isinstance(reader, _Reader)
        self._last_read = self._loop.time()
        self.stats.bytes_in += len(data)
        session = self.session
        try:
            session.receive_data(data)
            for event in session.events():
                if isinstance(event, MediaPacket):
                    self.stats.media_packets += 1
                    if self.publisher is not None:
                        self.publisher.write(event.packet)
                else:
                    self._on_plain_event(event)
        except Exception as exc:  # raised in the task, handled there as if read there
            reader.stop_direct(exc)
            return
        out = session.data_to_send()
        if out and not self.writer.is_closing():
            self.writer.write(out)
            self.stats.bytes_out += len(out)
        if (
            session.state is not SessionState.PUBLISHING
            or session.close_reason is not None
            or self.writer.transport.get_write_buffer_size() > DIRECT_SEND_BUFFER
        ):
            reader.stop_direct()

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close a connection that went quiet, or that has not asked to
        publish within the handshake timeout."""
        now = loop.time()
        limits = self.server.limits
        if not self.publish_requested and now >= self._deadline_handshake:
            self._timed_out = "handshake timeout"
        elif now - self._last_read >= limits.idle_timeout_s:
            self._timed_out = "idle timeout" if self.publish_requested else "handshake timeout"
        if self._timed_out is not None:
            self.reader.feed_eof()
            self.writer.transport.abort()
            return
        self._watchdog = loop.call_later(WATCHDOG_INTERVAL_S, self._watch, loop)

    async def _flush(self) -> None:
        data = self.session.data_to_send()
        if not data or self.writer.is_closing():
            return
        self.writer.write(data)
        self.stats.bytes_out += len(data)
        async with asyncio.timeout(self.server.limits.idle_timeout_s):
            await self.writer.drain()

    async def _close_transport(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            log.debug("rtmp %s: unclean close: %r", self.stats.remote, exc)

    def kick(self, reason: str) -> None:
        """The registry ended this publish (key revoked...): drop the socket."""
        self.kicked = reason
        log.info("rtmp %s: publisher kicked: %s", self.stats.remote, reason)
        self.writer.transport.abort()

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, PublishRequested):
            self.publish_requested = True
            await self._authorize(event)
        elif isinstance(event, MediaPacket):
            self.stats.media_packets += 1
            if self.publisher is not None:
                self.publisher.write(event.packet)
        else:
            self._on_plain_event(event)

    def _on_plain_event(self, event: Event) -> None:
        """Every event but a publish request (which awaits the publish check)."""
        if isinstance(event, PublishRequested):
            raise RtmpUsageError("a publish request needs the connection's task")
        if isinstance(event, MediaPacket):
            self.stats.media_packets += 1
            if self.publisher is not None:
                self.publisher.write(event.packet)
        elif isinstance(event, TracksReady | TracksChanged):
            if self.publisher is not None:
                self.publisher.start(event.tracks)
        elif isinstance(event, PublishStopped):
            if self.publisher is not None:
                self.publisher.close(f"publisher stopped ({event.reason})")
                log.info("rtmp %s: publish of %s stopped (%s)", self.stats.remote, self.stats.stream_name,
                         event.reason)
        elif isinstance(event, Connected):
            self.stats.app = event.app

    async def _authorize(self, event: PublishRequested) -> None:
        server = self.server
        request = PublishRequest(event.app, event.stream_key, server.protocol, self.stats.remote)
        try:
            async with asyncio.timeout(server.limits.publish_check_timeout_s):
                grant = await server.publish_check.authorize_publish(request)
        except StreamBusyError:
            # The name is live in another process of this node.
            server.publishes_refused += 1
            self.session.reject_publish("NetStream.Publish.BadName", "stream is already being published")
            return
        except PublishDenied as exc:
            server.publishes_refused += 1
            self.session.reject_publish("NetStream.Publish.Unauthorized", str(exc) or "publish denied")
            return
        except TimeoutError:
            server.publishes_refused += 1
            self.session.reject_publish("NetStream.Publish.Failed", "publish check timed out")
            return
        try:
            publisher = server.registry.claim(grant.playback_name, grant_settings(grant))
        except StreamNameError as exc:
            server.publishes_refused += 1
            log.warning("rtmp %s: publish refused: %s", self.stats.remote, exc)
            self.session.reject_publish("NetStream.Publish.BadName", str(exc))
            return
        except StreamBusyError:
            server.publishes_refused += 1
            self.session.reject_publish("NetStream.Publish.BadName", "stream is already being published")
            return
        publisher.on_kick = self.kick
        publisher.stream.publisher_info = {"protocol": server.protocol, "remote": self.stats.remote,
                                           "app": event.app}
        self.publisher = publisher
        self.stats.stream_name = grant.playback_name
        server.publishes_started += 1
        publisher.stream.on_ended("publish-check", functools.partial(server.publish_check.publish_ended, grant))
        self.session.accept_publish()
        # The stream key is a secret: only the public playback name is logged.
        log.info("rtmp %s: publishing to app %r as %s", self.stats.remote, event.app, grant.playback_name)


class RtmpServer:
    """Accepts RTMP (or, with ``ssl_context``, RTMPS) publishers.

    ``app_names`` restricts the applications ``connect`` may name (``None``
    accepts any). Counters for metrics are plain attributes; per-connection
    counters are in :meth:`connection_stats`.
    """

    def __init__(
        self,
        registry: StreamRegistry,
        publish_check: PublishCheck,
        limits: RtmpLimits,
        ssl_context: ssl.SSLContext | None = None,
        app_names: frozenset[str] | None = None,
    ) -> None:
        self.registry = registry
        self.publish_check = publish_check
        self.limits = limits
        self.ssl_context = ssl_context
        self.app_names = app_names
        self.protocol = "rtmps" if ssl_context is not None else "rtmp"
        self.connections_accepted = 0
        self.connections_refused = 0
        self.protocol_errors = 0
        self.publishes_started = 0
        self.publishes_refused = 0
        self._server: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_id = 1

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        """Listen on ``host``:``port`` (0 picks a free port; see :attr:`port`).
        ``reuse_port``: share the port with other processes (SO_REUSEPORT),
        the kernel spreading new connections over them."""
        if self._server is not None:
            raise RtmpUsageError("the RTMP server is already started")
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            # asyncio.start_server's factory, with a reader that can hand
            # bytes on directly (see _Reader).
            return asyncio.StreamReaderProtocol(_Reader(READ_SIZE, loop), self._on_client, loop=loop)

        self._server = await loop.create_server(
            protocol, host, port, ssl=self.ssl_context, reuse_port=reuse_port or None,
            ssl_handshake_timeout=self.limits.handshake_timeout_s if self.ssl_context else None,
        )
        log.info("%s ingest listening on %s:%d", self.protocol.upper(), host, self.port)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RtmpUsageError("the RTMP server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def connection_stats(self) -> tuple[RtmpConnectionStats, ...]:
        return tuple(c.stats for c in self._connections.values())

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.limits.max_connections:
            self.connections_refused += 1
            log.warning("rtmp: refusing a connection: %d connections is the limit", self.limits.max_connections)
            writer.transport.abort()
            return
        conn_id = self._next_id
        self._next_id += 1
        self.connections_accepted += 1
        conn = _Connection(self, conn_id, reader, writer)
        self._connections[conn_id] = conn
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.run()
        except Exception:
            # A bug of ours, not the peer's: say so loudly, close only this peer.
            log.exception("rtmp %s: internal error; connection closed", conn.stats.remote)
            writer.transport.abort()
        finally:
            del self._connections[conn_id]
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        """Stop listening and close every connection (their publishers are
        closed, so their streams enter the grace window)."""
        if self._server is not None:
            self._server.close()
        for conn in tuple(self._connections.values()):
            conn.writer.transport.abort()
        tasks = tuple(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
