"""The stream registry and its fan-out.

A :class:`LiveStream` has at most one publisher and any number of
subscriptions. The publisher writes on the event loop and never waits: every
subscription is a bounded buffer, and a consumer that falls behind loses
packets (counted, logged at a limited rate) instead of slowing the publisher
or the other consumers.

A publisher that disconnects leaves its stream waiting for a grace window;
one that comes back with the same playback name inside it continues the same
stream, and consumers see a ``StreamStarted(discontinuity=True)``. When the
window passes, consumers see :class:`StreamEnded`.

Streams are known by a :data:`~engine.media.StreamKey`: a source by its name
(checked against :data:`~engine.media.STREAM_NAME_RULE` when claimed), a
rendition by its :class:`~engine.media.RenditionId`. The two never collide
and no name is ever split to find a source.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from engine.codecs import CodecError, describe_track
from engine.errors import StreamBusyError
from engine.media import (
    MediaKind,
    Packet,
    RenditionId,
    StreamEnded,
    StreamItem,
    StreamKey,
    StreamStarted,
    Track,
    check_stream_name,
)

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL_S = 5.0
"""At most one log line per subscription per this many seconds about drops."""

WakeRule = Callable[[StreamItem], bool]
"""Called with each item a subscription takes, in the publisher's call: true
when the consumer should be woken for it (see :class:`Subscription`)."""


class StreamState(enum.Enum):
    LIVE = "live"
    WAITING = "waiting"  # publisher gone, inside the reconnect grace window
    ENDED = "ended"


@dataclass(slots=True)
class FanoutStats:
    """Counters the metrics endpoint reads."""

    packets_in: int = 0
    bytes_in: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class Subscription:
    """One consumer's bounded view of a stream.

    Iterate it (``async for item in sub``) or call :meth:`get`. Iteration ends
    after :class:`StreamEnded` or :meth:`close`. When the buffer is full, the
    queued packets are discarded and the subscription waits for the next video
    keyframe before it accepts packets again, so a lagging consumer resumes on
    a decodable frame; control items are never dropped.

    A consumer woken for every packet pays a task switch each time, often more
    than its work on the packet. With ``wake_when``, packets are buffered
    without waking it until the rule says so, or until ``wake_after`` packets
    wait; control items always wake it. The rule runs in the publisher's call,
    so it must be cheap and must not raise: one that raises is logged and
    dropped, and the subscription wakes for every item from then on.
    """

    def __init__(
        self,
        stream: LiveStream,
        consumer: str,
        maxsize: int,
        wake_when: WakeRule | None = None,
        wake_after: int = 64,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if wake_after < 1:
            raise ValueError("wake_after must be at least 1")
        self.stream = stream
        self.consumer = consumer
        self.maxsize = maxsize
        self._wake_when = wake_when
        self._wake_after = wake_after
        self.dropped = 0
        self._items: collections.deque[StreamItem] = collections.deque()
        self._packets = 0
        self._waiter: asyncio.Future[None] | None = None
        self._resync = False
        self._closed = False
        self._ended = False
        self._last_drop_log = 0.0

    # -- publisher side -------------------------------------------------
    def _offer(self, item: StreamItem) -> None:
        if self._closed:
            return
        if isinstance(item, Packet):
            if self._resync:
                if not (item.keyframe and self.stream.is_video(item.track)) and self.stream.has_video:
                    self._count_drop(1)
                    return
                self._resync = False
            if self._packets >= self.maxsize:
                discarded = [i for i in self._items if isinstance(i, Packet)]
                self._items = collections.deque(i for i in self._items if not isinstance(i, Packet))
                self._packets = 0
                self._count_drop(len(discarded) + 1)
                if self.stream.has_video and not (item.keyframe and self.stream.is_video(item.track)):
                    self._resync = True
                    return
            self._packets += 1
            self._items.append(item)
            # The rule sees every item taken, whether or not it wakes.
            rule_says = self._wake_when is None or self._rule(item)
            if rule_says or self._packets >= self._wake_after:
                self._wake()
            return
        self._items.append(item)
        if self._wake_when is not None:
            self._rule(item)
        self._wake()

    def _rule(self, item: StreamItem) -> bool:
        assert self._wake_when is not None
        try:
            return self._wake_when(item)
        except Exception:
            log.exception("stream %s: the wake rule of consumer %s failed; waking it for every item",
                          self.stream.name, self.consumer)
            self._wake_when = None
            return True

    def _count_drop(self, n: int) -> None:
        self.dropped += n
        self.stream.stats.dropped[self.consumer] = self.stream.stats.dropped.get(self.consumer, 0) + n
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            log.warning(
                "stream %s: consumer %s is behind, %d packets dropped so far",
                self.stream.name,
                self.consumer,
                self.dropped,
            )

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- consumer side --------------------------------------------------
    def get_nowait(self) -> StreamItem | None:
        """Return the next item, or ``None`` when nothing is buffered."""
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, Packet):
            self._packets -= 1
        elif isinstance(item, StreamEnded):
            self._ended = True
        return item

    async def get(self) -> StreamItem | None:
        """Wait for the next item; ``None`` once the subscription is closed
        or the stream has ended and everything was read."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._closed or self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StreamItem:
        item = await self.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def drain(self) -> Iterator[StreamItem]:
        """Yield every buffered item without waiting."""
        while (item := self.get_nowait()) is not None:
            yield item

    @property
    def buffered(self) -> int:
        return self._packets

    def close(self) -> None:
        """Stop receiving; the stream forgets this subscription."""
        if self._closed:
            return
        self._closed = True
        self.stream._unsubscribe(self)
        self._wake()


T = TypeVar("T")


class GopCache(Generic[T]):
    """The items since the last video keyframe, at most ``limit`` of them:
    what a consumer joining mid-stream needs to start on a decodable
    picture. The one cache of its kind: the registry keeps one per stream
    (source packets) and the WebRTC hub one per stream (packets ready to
    send). A group longer than ``limit`` is dropped whole until the next
    keyframe, since part of a group is of no use."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: list[T] = []

    def add(self, item: T, *, keyframe: bool) -> None:
        """Note ``item``; ``keyframe`` when it is a video keyframe (it
        starts a new group). Items before the first keyframe are not kept."""
        if keyframe:
            self._items = [item]
        elif self._items:
            if len(self._items) < self.limit:
                self._items.append(item)
            else:
                self._items = []

    def clear(self) -> None:
        self._items = []

    def items(self, last: int | None = None) -> list[T]:
        """A copy of the group, or of its ``last`` items."""
        return list(self._items if last is None else self._items[-last:])

    def __len__(self) -> int:
        return len(self._items)


class LiveStream:
    """A named stream: its tracks, its publisher, its subscriptions.

    Only the registry creates streams. ``key`` is its identity: a source's
    name or a rendition's :class:`RenditionId` (then :attr:`rendition` is
    set); ``name`` is ``str(key)``, for logs and labels only. ``gop_cache``
    keeps the packets since the last video keyframe so that a subscriber that
    asks for it starts on a decodable frame (WebRTC viewers joining
    mid-stream).
    """

    def __init__(self, key: StreamKey, gop_cache_limit: int) -> None:
        self.key = key
        self.name = str(key)
        self.rendition = key if isinstance(key, RenditionId) else None
        self.state = StreamState.LIVE
        self.tracks: tuple[Track, ...] = ()
        self.stats = FanoutStats()
        self.started_wall = time.time()
        self.publish_count = 0
        self.publisher_info: dict[str, str] = {}
        self._subs: list[Subscription] = []
        self._gop: GopCache[Packet] = GopCache(gop_cache_limit)
        self._video_tracks: frozenset[int] = frozenset()
        self._ended = asyncio.Event()
        self._end_callbacks: dict[str, EndCallback] = {}

    @property
    def gop_cache_limit(self) -> int:
        """Most packets of a group kept for joining consumers (the same
        bound serves the stream's other caches of its groups)."""
        return self._gop.limit

    def is_video(self, track: int) -> bool:
        return track in self._video_tracks

    @property
    def has_video(self) -> bool:
        return bool(self._video_tracks)

    def subscribe(
        self,
        consumer: str,
        maxsize: int = 512,
        replay_gop: bool = False,
        wake_when: WakeRule | None = None,
        wake_after: int = 64,
    ) -> Subscription:
        """Add a consumer. It first receives the current track set (when the
        publisher has sent one) and, with ``replay_gop``, the packets of the
        current group of pictures. ``wake_when`` and ``wake_after``: see
        :class:`Subscription`."""
        sub = Subscription(self, consumer, maxsize, wake_when, wake_after)
        if self.tracks:
            sub._offer(StreamStarted(self.tracks))
            if replay_gop:
                for pkt in self._gop.items(maxsize):
                    sub._offer(pkt)
        if self.state is StreamState.ENDED:
            sub._offer(StreamEnded("stream already ended"))
        self._subs.append(sub)
        return sub

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subs)

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def _broadcast(self, item: StreamItem) -> None:
        for sub in tuple(self._subs):
            sub._offer(item)

    def _start(self, tracks: tuple[Track, ...], clock_continues: bool = False) -> None:
        discontinuity = self.publish_count > 0 and bool(self.tracks)
        self.tracks = tracks
        self._video_tracks = frozenset(t.index for t in tracks if t.kind is MediaKind.VIDEO)
        self._gop.clear()
        self.publish_count += 1
        self.state = StreamState.LIVE
        self._broadcast(
            StreamStarted(tracks, discontinuity=discontinuity, clock_continues=discontinuity and clock_continues)
        )

    def _write(self, packet: Packet) -> None:
        self.stats.packets_in += 1
        self.stats.bytes_in += len(packet.data)
        if self._video_tracks:
            self._gop.add(packet, keyframe=packet.keyframe and packet.track in self._video_tracks)
        self._broadcast(packet)

    def _end(self, reason: str) -> None:
        self.state = StreamState.ENDED
        self._gop.clear()
        self._broadcast(StreamEnded(reason))
        self._ended.set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def on_ended(self, key: str, callback: EndCallback) -> None:
        """Run ``callback`` once when the stream ends for good (not on a
        reconnect inside the grace window). One callback per ``key``: an
        ingest that publishes again (RTMP, then WHIP) replaces its own."""
        self._end_callbacks[key] = callback


class Publisher:
    """A publisher's handle on its stream; returned by
    :meth:`StreamRegistry.claim`.

    Call :meth:`start` with the track set once it is known (and again if the
    publisher changes codec parameters mid-stream), :meth:`write` for each
    packet, and :meth:`close` when the connection ends. The registry may
    :meth:`kick` the publisher (key revoked, creator banned): the adapter that
    owns the connection registers ``on_kick`` and closes it.
    """

    def __init__(self, registry: StreamRegistry, stream: LiveStream) -> None:
        self._registry = registry
        self.stream = stream
        self.closed = False
        self.on_kick: Callable[[str], None] | None = None
        self._started = False

    def start(self, tracks: tuple[Track, ...]) -> None:
        if self.closed:
            return
        tracks = tuple(_described(t) for t in tracks)
        if not self._started or tracks != self.stream.tracks:
            self.stream._start(tracks)
        self._started = True

    def restart(self, tracks: tuple[Track, ...]) -> None:
        """Begin a new run of this publish on the same clock: consumers see
        ``StreamStarted(discontinuity=True, clock_continues=True)`` even when
        ``tracks`` did not change, and outputs cut and mark a discontinuity
        here. A transcoder does this to every rendition at the moment one of
        them changes codec parameters, so that all renditions keep matching
        segments and discontinuities."""
        if self.closed:
            return
        if not self._started:
            self.start(tracks)
            return
        self.stream._start(tuple(_described(t) for t in tracks), clock_continues=True)

    def write(self, packet: Packet) -> None:
        if not self.closed:
            self.stream._write(packet)

    def close(self, reason: str = "publisher disconnected") -> None:
        if self.closed:
            return
        self.closed = True
        self._registry._release(self, reason)

    def kick(self, reason: str) -> None:
        """End this publish at once, with no grace window."""
        if self.closed:
            return
        callback = self.on_kick
        self.closed = True
        self._registry._release(self, reason, grace=False)
        if callback is not None:
            callback(reason)


def _described(track: Track) -> Track:
    """The track with what its codec record says (size, frame rate, sample
    rate) filled in, so that every consumer sees the same description
    whatever the ingest could tell. A record that cannot be read leaves the
    track as the ingest described it: the consumers that need the record
    report that themselves."""
    try:
        return describe_track(track)
    except CodecError:
        log.warning("track %d: codec record unreadable; using the ingest's description", track.index)
        return track


StreamListener = Callable[[LiveStream], None]
EndCallback = Callable[[], Awaitable[None]]
SettingsListener = Callable[[str, str, object], None]


class StreamRegistry:
    """Every stream on this node, by :data:`StreamKey` (a source's playback
    name or a rendition's id).

    ``grace_s`` is the reconnect window. Listeners added with
    :meth:`on_stream_created` are called once per new stream (not on a
    reconnect), which is how outputs such as the HLS packager attach.
    """

    def __init__(self, grace_s: float = 10.0, gop_cache_limit: int = 1024) -> None:
        self.grace_s = grace_s
        self._gop_cache_limit = gop_cache_limit
        self._streams: dict[StreamKey, LiveStream] = {}
        self._publishers: dict[StreamKey, Publisher] = {}
        self._timers: dict[StreamKey, asyncio.TimerHandle] = {}
        self._listeners: list[StreamListener] = []
        self._settings: dict[str, dict[str, object]] = {}
        self._end_tasks: set[asyncio.Task[None]] = set()
        self._settings_listeners: list[SettingsListener] = []

    def on_stream_created(self, listener: StreamListener) -> None:
        self._listeners.append(listener)

    # -- per-stream settings --------------------------------------------------
    # What a stream should get (its ladder, its effects) is decided outside
    # the media path, by the config or the control API, possibly before the
    # publisher connects and possibly while it is live. Stages read these when
    # a stream starts and listen for changes.
    def configure(self, name: str, key: str, value: object) -> None:
        """Set one setting of the stream ``name`` and tell the listeners."""
        self._settings.setdefault(name, {})[key] = value
        for listener in tuple(self._settings_listeners):
            listener(name, key, value)

    def settings(self, name: str) -> dict[str, object]:
        return dict(self._settings.get(name, {}))

    def on_settings_changed(self, listener: SettingsListener) -> None:
        self._settings_listeners.append(listener)

    def get(self, name: StreamKey) -> LiveStream | None:
        return self._streams.get(name)

    def streams(self) -> tuple[LiveStream, ...]:
        return tuple(self._streams.values())

    def publisher(self, name: StreamKey) -> Publisher | None:
        return self._publishers.get(name)

    def claim(self, name: StreamKey, settings: Mapping[str, object] | None = None) -> Publisher:
        """Become the publisher of ``name`` (a source's name, or the
        :class:`RenditionId` of a rendition being published by a transcoder).

        Raises :class:`~engine.errors.StreamNameError` for a source name
        outside :data:`~engine.media.STREAM_NAME_RULE` and
        :class:`StreamBusyError` when the stream has a live publisher. A
        stream waiting in its grace window is continued; otherwise a new
        stream is created and the listeners are told.

        ``settings`` (what the publish check decided, such as the stream's
        protection) are set before the listeners hear of a new stream, so
        that the outputs they start see them.
        """
        if isinstance(name, str):
            check_stream_name(name)
        if name in self._publishers:
            raise StreamBusyError(f"stream {name!r} already has a publisher")
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        stream = self._streams.get(name)
        created = stream is None or stream.state is StreamState.ENDED
        if created:
            if settings and isinstance(name, str):
                self._settings.setdefault(name, {}).update(settings)
            stream = LiveStream(name, self._gop_cache_limit)
            self._streams[name] = stream
        assert stream is not None
        stream.state = StreamState.LIVE
        publisher = Publisher(self, stream)
        self._publishers[name] = publisher
        if created:
            for listener in tuple(self._listeners):
                listener(stream)
        return publisher

    def kick(self, name: StreamKey, reason: str) -> bool:
        """Disconnect the publisher of ``name`` and end its stream now."""
        publisher = self._publishers.get(name)
        if publisher is None:
            return False
        publisher.kick(reason)
        return True

    def end_waiting(self, name: StreamKey, reason: str) -> bool:
        """End ``name`` now if it is waiting in its grace window for its
        publisher to return; whether it was. (Its publisher came back
        somewhere else: another process of the node takes the name.)"""
        stream = self._streams.get(name)
        if stream is None or name in self._publishers:
            return False
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._finish(name, reason)
        return True

    def _release(self, publisher: Publisher, reason: str, grace: bool = True) -> None:
        name = publisher.stream.key
        if self._publishers.get(name) is not publisher:
            return
        del self._publishers[name]
        stream = publisher.stream
        if grace and self.grace_s > 0 and stream.tracks:
            stream.state = StreamState.WAITING
            loop = asyncio.get_running_loop()
            self._timers[name] = loop.call_later(self.grace_s, self._expire, name, reason)
            log.info("stream %s: publisher gone (%s), waiting %.1fs for it to return", name, reason, self.grace_s)
        else:
            self._finish(name, reason)

    def _expire(self, name: StreamKey, reason: str) -> None:
        self._timers.pop(name, None)
        if name not in self._publishers:
            self._finish(name, reason)

    def _finish(self, name: StreamKey, reason: str) -> None:
        stream = self._streams.pop(name, None)
        if stream is None:
            return
        stream._end(reason)
        # Its settings were for this broadcast: a later one of the same name
        # is configured again when it is authorised. Renditions have none.
        if isinstance(name, str):
            self._settings.pop(name, None)
        log.info("stream %s ended: %s", name, reason)
        callbacks, stream._end_callbacks = stream._end_callbacks, {}
        loop = asyncio.get_running_loop()
        for key, callback in callbacks.items():
            task = loop.create_task(self._run_end_callback(name, key, callback), name=f"ended:{name}:{key}")
            self._end_tasks.add(task)
            task.add_done_callback(self._end_tasks.discard)

    @staticmethod
    async def _run_end_callback(name: StreamKey, key: str, callback: EndCallback) -> None:
        try:
            await callback()
        except Exception:
            log.exception("stream %s: end callback %s failed", name, key)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the end callbacks of streams that ended, so
        that a shutdown lets them record the end before their stores close."""
        if self._end_tasks:
            await asyncio.wait(tuple(self._end_tasks), timeout=timeout)

    def close(self) -> None:
        """End every stream (shutdown)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for publisher in tuple(self._publishers.values()):
            publisher.kick("server shutting down")
        for name in tuple(self._streams):
            self._finish(name, "server shutting down")
