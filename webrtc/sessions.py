"""The WHIP/WHEP resource table: which sessions exist, their limits and
when a quiet one must be reaped.

Sans-I/O: no sockets, tasks or clocks. The HTTP adapter calls :meth:`open`
when an offer arrives (it raises when a limit is reached), :meth:`touch`
whenever a session shows life (media from a publisher, a connected viewer),
:meth:`close` on DELETE or when the peer connection dies, and every so often
:meth:`expired` with the current time to learn which sessions to tear down.
:meth:`next_deadline` says when that next matters.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

from webrtc.errors import SessionLimitError, UnknownSessionError, WebRtcUsageError


class SessionKind(enum.Enum):
    WHIP = "whip"
    WHEP = "whep"


@dataclass(slots=True)
class SessionRecord:
    """One WHIP or WHEP resource. ``name`` is the playback name."""

    id: str
    kind: SessionKind
    name: str
    created: float
    last_active: float


class SessionTable:
    """Sessions by id, with the per-node and per-stream limits."""

    def __init__(self, max_publishers: int, max_viewers: int, max_viewers_per_stream: int, idle_timeout_s: float):
        if idle_timeout_s <= 0:
            raise WebRtcUsageError("idle_timeout_s must be positive")
        self.max_publishers = max_publishers
        self.max_viewers = max_viewers
        self.max_viewers_per_stream = max_viewers_per_stream
        self.idle_timeout_s = idle_timeout_s
        self._sessions: dict[str, SessionRecord] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def get(self, session_id: str) -> SessionRecord:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise UnknownSessionError(session_id) from None

    def count(self, kind: SessionKind, name: str | None = None) -> int:
        return sum(1 for s in self._sessions.values() if s.kind is kind and (name is None or s.name == name))

    def check_room(self, kind: SessionKind, name: str) -> None:
        """Raise :class:`SessionLimitError` when a new session of ``kind``
        for ``name`` would pass a limit (call before costly set-up)."""
        if kind is SessionKind.WHIP:
            if self.count(SessionKind.WHIP) >= self.max_publishers:
                raise SessionLimitError(f"this node already has {self.max_publishers} WHIP publishers")
            return
        if self.count(SessionKind.WHEP) >= self.max_viewers:
            raise SessionLimitError(f"this node already has {self.max_viewers} WHEP viewers")
        if self.count(SessionKind.WHEP, name) >= self.max_viewers_per_stream:
            raise SessionLimitError(f"stream {name!r} already has {self.max_viewers_per_stream} WHEP viewers")

    def open(self, kind: SessionKind, name: str, now: float, session_id: str | None = None) -> SessionRecord:
        """Add a session (limits checked again) and return it; its id is a
        random URL-safe token unless given."""
        self.check_room(kind, name)
        sid = session_id or secrets.token_urlsafe(16)
        if sid in self._sessions:
            raise WebRtcUsageError(f"session id {sid!r} is already in use")
        record = SessionRecord(sid, kind, name, now, now)
        self._sessions[sid] = record
        return record

    def touch(self, session_id: str, now: float) -> None:
        """The session showed life at ``now``; unknown ids are ignored (the
        session may have been reaped a moment before)."""
        record = self._sessions.get(session_id)
        if record is not None and now > record.last_active:
            record.last_active = now

    def close(self, session_id: str) -> SessionRecord | None:
        """Forget a session; returns it, or ``None`` when it was gone already."""
        return self._sessions.pop(session_id, None)

    def expired(self, now: float) -> list[SessionRecord]:
        """Sessions quiet for longer than the idle timeout. They stay in the
        table until the caller closes them."""
        limit = now - self.idle_timeout_s
        return [s for s in self._sessions.values() if s.last_active < limit]

    def next_deadline(self) -> float | None:
        """The earliest time at which some session would expire."""
        if not self._sessions:
            return None
        return min(s.last_active for s in self._sessions.values()) + self.idle_timeout_s

    def sessions(self, kind: SessionKind | None = None) -> tuple[SessionRecord, ...]:
        return tuple(s for s in self._sessions.values() if kind is None or s.kind is kind)
