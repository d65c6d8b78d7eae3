"""A slow viewer's feed drops (to the next keyframe) and never blocks."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from webrtc.feed import Lane, OutPacket, ViewerFeed


def pkt(pts: int, key: bool = False) -> OutPacket:
    return OutPacket(b"x", pts, key)


def test_waits_for_first_keyframe_then_drops_to_next_keyframe() -> None:
    feed = ViewerFeed("v", video_limit=3)
    feed.offer(Lane.VIDEO, pkt(0))
    assert feed.queued(Lane.VIDEO) == 0 and feed.dropped[Lane.VIDEO] == 1
    for i, key in enumerate([True, False, False]):
        feed.offer(Lane.VIDEO, pkt(i + 1, key))
    assert feed.queued(Lane.VIDEO) == 3
    feed.offer(Lane.VIDEO, pkt(4))  # full: everything dropped, wait for a keyframe
    assert feed.queued(Lane.VIDEO) == 0 and feed.dropped[Lane.VIDEO] == 5
    feed.offer(Lane.VIDEO, pkt(5))
    assert feed.queued(Lane.VIDEO) == 0
    feed.offer(Lane.VIDEO, pkt(6, True))
    got = feed.get_nowait(Lane.VIDEO)
    assert got is not None and got.keyframe and got.pts == 6


def test_audio_drops_oldest() -> None:
    feed = ViewerFeed("v", video_limit=8, audio_limit=2)
    for i in range(4):
        feed.offer(Lane.AUDIO, pkt(i, True))
    assert [feed.get_nowait(Lane.AUDIO).pts for _ in range(2)] == [2, 3]  # type: ignore[union-attr]
    assert feed.dropped[Lane.AUDIO] == 2


def test_seed_squeezes_replayed_gop() -> None:
    feed = ViewerFeed("v", video_limit=8)
    feed.seed_video([pkt(0, True), pkt(3000), pkt(6000)])
    assert [feed.get_nowait(Lane.VIDEO).pts for _ in range(3)] == [5998, 5999, 6000]  # type: ignore[union-attr]
    other = ViewerFeed("w", video_limit=8)
    other.seed_video([pkt(0), pkt(1)])  # not starting on a keyframe: ignored
    assert other.queued(Lane.VIDEO) == 0


async def test_slow_reader_never_blocks_others() -> None:
    fast, slow = ViewerFeed("fast", 10), ViewerFeed("slow", 10)
    received: list[int] = []

    async def reader() -> None:
        while (p := await fast.get(Lane.VIDEO)) is not None:
            received.append(p.pts)

    task = asyncio.create_task(reader())
    for i in range(200):
        for f in (fast, slow):
            f.offer(Lane.VIDEO, pkt(i, i % 20 == 0))
        await asyncio.sleep(0)
    fast.end()
    slow.end()
    await asyncio.wait_for(task, 5)
    assert received == list(range(200))
    assert slow.queued(Lane.VIDEO) <= 10 and slow.dropped[Lane.VIDEO] > 150
    while slow.get_nowait(Lane.VIDEO) is not None:
        pass
    assert await slow.get(Lane.VIDEO) is None


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=300), st.integers(1, 20))
def test_bound_and_keyframe_start_hold(ops: list[tuple[bool, bool]], limit: int) -> None:
    feed = ViewerFeed("v", limit)
    first_after_gap = True
    for i, (key, read) in enumerate(ops):
        feed.offer(Lane.VIDEO, pkt(i, key))
        assert feed.queued(Lane.VIDEO) <= limit
        if read:
            p = feed.get_nowait(Lane.VIDEO)
            if p is not None and first_after_gap:
                assert p.keyframe
                first_after_gap = False
