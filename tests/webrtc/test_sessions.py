"""The sans-I/O WHIP/WHEP resource table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webrtc.errors import SessionLimitError, UnknownSessionError, WebRtcUsageError
from webrtc.sessions import SessionKind, SessionTable


def table(**kw: float) -> SessionTable:
    args = {"max_publishers": 2, "max_viewers": 3, "max_viewers_per_stream": 2, "idle_timeout_s": 10.0, **kw}
    return SessionTable(int(args["max_publishers"]), int(args["max_viewers"]), int(args["max_viewers_per_stream"]),
                        float(args["idle_timeout_s"]))


def test_limits() -> None:
    t = table()
    t.open(SessionKind.WHIP, "a", 0)
    t.open(SessionKind.WHIP, "b", 0)
    with pytest.raises(SessionLimitError):
        t.open(SessionKind.WHIP, "c", 0)
    t.open(SessionKind.WHEP, "a", 0)
    t.open(SessionKind.WHEP, "a", 0)
    with pytest.raises(SessionLimitError, match="stream 'a'"):
        t.check_room(SessionKind.WHEP, "a")
    t.open(SessionKind.WHEP, "b", 0)
    with pytest.raises(SessionLimitError, match="node"):
        t.open(SessionKind.WHEP, "c", 0)
    assert len(t) == 5 and t.count(SessionKind.WHEP, "a") == 2


def test_expiry_and_touch() -> None:
    t = table()
    a = t.open(SessionKind.WHIP, "a", 0)
    b = t.open(SessionKind.WHEP, "a", 5)
    assert t.next_deadline() == 10
    assert t.expired(9.9) == []
    t.touch(a.id, 8)
    assert t.expired(16) == [b]
    assert t.close(b.id) is b
    assert t.close(b.id) is None
    assert t.next_deadline() == 18
    t.touch("nobody", 100)  # ignored
    t.touch(a.id, 1)  # never moves back
    assert t.get(a.id).last_active == 8
    with pytest.raises(UnknownSessionError):
        t.get(b.id)
    with pytest.raises(WebRtcUsageError):
        t.open(SessionKind.WHIP, "x", 0, session_id=a.id)
    assert t.close(a.id) is a and t.next_deadline() is None


def test_bad_timeout() -> None:
    with pytest.raises(WebRtcUsageError):
        SessionTable(1, 1, 1, 0)


@given(st.lists(st.tuples(st.sampled_from(["open", "touch", "close", "reap"]), st.integers(0, 5),
                          st.floats(0, 100)), max_size=60))
def test_random_operations_keep_invariants(ops: list[tuple[str, int, float]]) -> None:
    t = table(max_publishers=3, max_viewers=4, max_viewers_per_stream=4)
    ids: list[str] = []
    now = 0.0
    for op, n, dt in ops:
        now += dt
        if op == "open":
            kind = SessionKind.WHIP if n % 2 else SessionKind.WHEP
            try:
                ids.append(t.open(kind, f"s{n % 3}", now).id)
            except SessionLimitError:
                pass
        elif op == "touch" and ids:
            t.touch(ids[n % len(ids)], now)
        elif op == "close" and ids:
            t.close(ids.pop(n % len(ids)))
        elif op == "reap":
            for record in t.expired(now):
                assert now - record.last_active > t.idle_timeout_s
                t.close(record.id)
                ids.remove(record.id)
        assert t.count(SessionKind.WHIP) <= 3 and t.count(SessionKind.WHEP) <= 4
        assert len(t) == len(ids)
