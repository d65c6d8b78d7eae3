"""The registry's fan-out: bounded buffers, drop policy, grace window."""

from __future__ import annotations

import asyncio
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import StreamBusyError, StreamNameError
from engine.media import Codec, Packet, RenditionId, StreamEnded, StreamStarted, Track, check_stream_name
from engine.registry import GopCache, LiveStream, StreamRegistry, StreamState

TB = Fraction(1, 1000)
TRACKS = (
    Track(0, Codec.H264, TB, b"\x01", width=640, height=360),
    Track(1, Codec.AAC, TB, b"\x11\x90", sample_rate=48000, channels=2),
)


def video(ts: int, key: bool = False) -> Packet:
    return Packet(0, ts, ts, TB, b"v" * 10, keyframe=key)


def audio(ts: int) -> Packet:
    return Packet(1, ts, ts, TB, b"a" * 4)


async def test_subscriber_gets_tracks_then_packets() -> None:
    reg = StreamRegistry(grace_s=0)
    pub = reg.claim("s")
    sub = pub.stream.subscribe("t")
    pub.start(TRACKS)
    pub.write(video(0, True))
    pub.write(audio(0))
    assert list(sub.drain()) == [StreamStarted(TRACKS), video(0, True), audio(0)]


async def test_second_publisher_refused() -> None:
    reg = StreamRegistry()
    reg.claim("s")
    with pytest.raises(StreamBusyError):
        reg.claim("s")


async def test_slow_consumer_drops_and_resumes_on_keyframe() -> None:
    reg = StreamRegistry(grace_s=0)
    pub = reg.claim("s")
    pub.start(TRACKS)
    slow = pub.stream.subscribe("slow", maxsize=4)
    fast = pub.stream.subscribe("fast", maxsize=1000)
    for i in range(10):
        pub.write(video(i * 33, key=(i == 0)))
    # The publisher never waited, the fast consumer has everything.
    assert sum(isinstance(x, Packet) for x in fast.drain()) == 10
    slow_items = list(slow.drain())
    assert slow.dropped > 0
    assert not any(isinstance(x, Packet) and not x.keyframe for x in slow_items[:1])
    pub.write(video(400))  # not a keyframe: still resyncing
    pub.write(video(433, key=True))
    rest = [x for x in slow.drain() if isinstance(x, Packet)]
    assert rest and rest[0].keyframe
    assert reg.get("s") is not None and reg.get("s").stats.dropped["slow"] == slow.dropped  # type: ignore[union-attr]


async def test_reconnect_within_grace_continues_with_discontinuity() -> None:
    reg = StreamRegistry(grace_s=5)
    pub = reg.claim("s")
    pub.start(TRACKS)
    sub = pub.stream.subscribe("t")
    pub.close()
    assert pub.stream.state is StreamState.WAITING
    pub2 = reg.claim("s")
    assert pub2.stream is pub.stream
    pub2.start(TRACKS)
    items = list(sub.drain())
    assert items == [StreamStarted(TRACKS), StreamStarted(TRACKS, discontinuity=True)]
    reg.close()


async def test_grace_expiry_ends_stream() -> None:
    reg = StreamRegistry(grace_s=0.05)
    pub = reg.claim("s")
    pub.start(TRACKS)
    sub = pub.stream.subscribe("t")
    pub.close()
    items = [item async for item in sub]
    assert isinstance(items[-1], StreamEnded)
    assert reg.get("s") is None


async def test_end_waiting_ends_only_a_stream_without_its_publisher() -> None:
    reg = StreamRegistry(grace_s=60)
    pub = reg.claim("s")
    pub.start(TRACKS)
    assert not reg.end_waiting("s", "returned elsewhere")  # its publisher is here
    assert not reg.end_waiting("nobody", "returned elsewhere")
    pub.close()
    stream = reg.get("s")
    assert stream is not None and stream.state is StreamState.WAITING
    assert reg.end_waiting("s", "returned elsewhere")
    assert reg.get("s") is None and stream.state is StreamState.ENDED
    assert reg.claim("s").stream is not stream  # a new stream, no timer left to end it


async def test_kick_calls_back_and_ends_without_grace() -> None:
    reg = StreamRegistry(grace_s=60)
    pub = reg.claim("s")
    pub.start(TRACKS)
    reasons: list[str] = []
    pub.on_kick = reasons.append
    assert reg.kick("s", "banned")
    assert reasons == ["banned"]
    assert reg.get("s") is None
    await asyncio.sleep(0)


async def test_gop_replay_starts_on_keyframe() -> None:
    reg = StreamRegistry(grace_s=0)
    pub = reg.claim("s")
    pub.start(TRACKS)
    pub.write(video(0, True))
    pub.write(video(33))
    pub.write(video(66, True))
    pub.write(audio(70))
    pub.write(video(99))
    sub = pub.stream.subscribe("late", replay_gop=True)
    pkts = [x for x in sub.drain() if isinstance(x, Packet)]
    assert [p.pts for p in pkts] == [66, 70, 99]


async def test_end_callbacks_run_once_when_the_stream_ends_for_good() -> None:
    reg = StreamRegistry(grace_s=0.05)
    calls: list[str] = []

    async def ended(tag: str) -> None:
        calls.append(tag)

    pub = reg.claim("s")
    pub.start(TRACKS)
    pub.stream.on_ended("check", lambda: ended("first"))
    pub.close()
    pub2 = reg.claim("s")  # back inside the grace window: not ended
    pub2.start(TRACKS)
    pub2.stream.on_ended("check", lambda: ended("second"))  # replaces, never doubles
    await asyncio.sleep(0.1)
    assert calls == []
    pub2.close()
    await asyncio.sleep(0.1)
    await reg.drain()
    assert calls == ["second"]


NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


@given(st.text(max_size=80))
def test_stream_names_follow_the_documented_rule(name: str) -> None:
    allowed = 1 <= len(name) <= 64 and all(c in NAME_CHARS for c in name)
    assert allowed == (re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) is not None)
    if allowed:
        assert check_stream_name(name) == name
    else:
        with pytest.raises(StreamNameError, match="is not allowed"):
            check_stream_name(name)


@pytest.mark.parametrize("name", ["victim/evil", "", "a" * 65, "ok\n", "..", "a b", "x.y", "\u0430dmin"])
async def test_claim_refuses_names_outside_the_rule(name: str) -> None:
    reg = StreamRegistry(grace_s=0)
    with pytest.raises(StreamNameError):
        reg.claim(name)
    assert reg.streams() == ()


async def test_a_rendition_is_linked_to_its_source_by_structure() -> None:
    reg = StreamRegistry(grace_s=0)
    created: list[LiveStream] = []
    reg.on_stream_created(created.append)
    source = reg.claim("cam")
    rid = RenditionId("cam", "360p")
    rendition = reg.claim(rid)
    assert source.stream.rendition is None and source.stream.key == "cam"
    assert rendition.stream.rendition == rid and rendition.stream.key == rid
    assert rendition.stream.name == "cam/360p"  # for logs and labels only
    assert reg.get(rid) is rendition.stream
    assert reg.get("cam/360p") is None  # a string is never parsed into a rendition
    assert [s.key for s in created] == ["cam", rid]
    with pytest.raises(StreamNameError):
        RenditionId("cam", "../360p")
    with pytest.raises(StreamNameError):
        RenditionId("victim/evil", "360p")


async def test_restart_keeps_the_clock_and_marks_a_discontinuity() -> None:
    reg = StreamRegistry(grace_s=0)
    pub = reg.claim("s")
    pub.start(TRACKS)
    sub = pub.stream.subscribe("t")
    pub.restart(TRACKS)  # same tracks: still a new run
    items = list(sub.drain())
    assert [(i.discontinuity, i.clock_continues) for i in items if isinstance(i, StreamStarted)] == [
        (False, False),
        (True, True),
    ]


def test_gop_cache_starts_on_a_keyframe_and_drops_an_overlong_group_whole() -> None:
    cache: GopCache[str] = GopCache(3)
    cache.add("before", keyframe=False)
    assert cache.items() == []  # nothing before the first keyframe
    cache.add("k1", keyframe=True)
    cache.add("a", keyframe=False)
    cache.add("b", keyframe=False)
    assert cache.items() == ["k1", "a", "b"] and cache.items(2) == ["a", "b"]
    cache.add("c", keyframe=False)  # one past the limit: the group is of no use
    assert cache.items() == [] and len(cache) == 0
    cache.add("d", keyframe=False)
    assert cache.items() == []
    cache.add("k2", keyframe=True)
    assert cache.items() == ["k2"]
    snapshot = cache.items()
    cache.clear()
    assert snapshot == ["k2"] and cache.items() == []


async def test_a_streams_gop_cache_is_bounded_by_its_limit() -> None:
    reg = StreamRegistry(gop_cache_limit=3)
    pub = reg.claim("bounded")
    pub.start(TRACKS)
    assert pub.stream.gop_cache_limit == 3
    for i in range(5):
        pub.write(video(i * 33, i == 0))
    sub = pub.stream.subscribe("late", replay_gop=True)
    assert [x for x in sub.drain() if isinstance(x, Packet)] == []


async def test_wake_rule_holds_packets_until_it_says_so() -> None:
    """A consumer with a wake rule sleeps through packets the rule does not
    want it for (the rule still sees each one), wakes for control items,
    for the rule, and after ``wake_after`` packets."""
    seen: list[object] = []

    def rule(item: object) -> bool:
        seen.append(item)
        return isinstance(item, Packet) and item.keyframe

    reg = StreamRegistry(grace_s=0)
    pub = reg.claim("s")
    sub = pub.stream.subscribe("t", wake_when=rule, wake_after=5)
    getter = asyncio.ensure_future(sub.get())
    pub.start(TRACKS)
    await asyncio.sleep(0)
    assert getter.done() and getter.result() == StreamStarted(TRACKS)  # control items wake

    getter = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    pub.write(audio(0))
    pub.write(video(0))
    await asyncio.sleep(0)
    assert not getter.done()  # held
    pub.write(video(33, True))
    await asyncio.sleep(0)
    assert getter.done() and getter.result() == audio(0)
    assert list(sub.drain()) == [video(0), video(33, True)]

    getter = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    for t in range(4):
        pub.write(audio(40 + t))
        await asyncio.sleep(0)
    assert not getter.done()
    pub.write(audio(44))  # the fifth held packet
    await asyncio.sleep(0)
    assert getter.done()
    assert seen[1:] == [audio(0), video(0), video(33, True)] + [audio(40 + t) for t in range(5)]
    sub.close()


async def test_a_failing_wake_rule_falls_back_to_waking_always(caplog: pytest.LogCaptureFixture) -> None:
    def rule(item: object) -> bool:
        raise RuntimeError("broken rule")

    reg = StreamRegistry(grace_s=0)
    pub = reg.claim("s")
    sub = pub.stream.subscribe("t", wake_when=rule, wake_after=100)
    pub.start(TRACKS)
    assert "broken rule" in caplog.text
    assert list(sub.drain()) == [StreamStarted(TRACKS)]
    getter = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    pub.write(audio(0))
    await asyncio.sleep(0)
    assert getter.done() and getter.result() == audio(0)
    sub.close()
