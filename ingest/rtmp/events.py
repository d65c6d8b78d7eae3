"""Events an :class:`~ingest.rtmp.session.RtmpServerSession` reports.

The adapter reads them with ``next_event()`` after every ``receive_data``
and acts on them in order; each docstring says what the adapter does next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.media import Packet, Track
from ingest.rtmp.amf0 import AmfValue


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    """The handshake finished (the handshake timeout may be lifted once the
    publish request arrives)."""

    digest: bool


@dataclass(frozen=True, slots=True)
class Connected:
    """The peer's ``connect`` was accepted for ``app``."""

    app: str
    tc_url: str
    flash_ver: str


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """The peer asked to publish ``stream_key`` (query string included, as
    some platforms put tokens there). The adapter runs the publish check and
    then calls ``accept_publish()`` or ``reject_publish(...)``."""

    app: str
    stream_key: str
    tc_url: str
    publish_type: str
    stream_id: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """An ``onMetaData`` (possibly wrapped in ``@setDataFrame``)."""

    values: dict[str, AmfValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TracksReady:
    """The track set is known; the adapter calls ``publisher.start(tracks)``.
    Packets that arrived before follow as :class:`MediaPacket` events."""

    tracks: tuple[Track, ...]


@dataclass(frozen=True, slots=True)
class TracksChanged:
    """A new sequence header changed a track's configuration (or added a
    track) mid-stream; the adapter calls ``publisher.start(tracks)`` again."""

    tracks: tuple[Track, ...]


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One access unit for ``publisher.write``."""

    packet: Packet


@dataclass(frozen=True, slots=True)
class PublishStopped:
    """The peer ended its publish (FCUnpublish, deleteStream, closeStream);
    the adapter closes the publisher. The connection may stay open."""

    reason: str


Event = (
    HandshakeDone | Connected | PublishRequested | Metadata | TracksReady | TracksChanged | MediaPacket | PublishStopped
)
