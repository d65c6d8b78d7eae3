"""The segmenter's cutting rules, durations, and reconnect handling.

The muxer here records what it is given: these tests are about which packets
go into which segment, not about container bytes (tests/test_rtmp_to_hls.py
checks real files with ffprobe).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from drm.model import KeyPeriod
from engine.media import Codec, Packet, StreamEnded, StreamStarted, Track
from packager.hls.keys import SegmentKey
from packager.hls.segmenter import ORIGIN_HEADROOM, InitReady, Segmenter, SegmentReady, SegmentsEnded

H = int(ORIGIN_HEADROOM * 1000)  # the shift, in packet ticks, of a stream that starts at zero

TB = Fraction(1, 1000)
VIDEO = Track(0, Codec.H264, TB, b"\x01\x64\x00\x1f", width=640, height=360)
AUDIO = Track(1, Codec.AAC, TB, b"\x11\x90", sample_rate=48000, channels=2)


class RecordingMuxer:
    extension = ".m4s"

    def __init__(self, tracks: tuple[Track, ...]) -> None:
        self.tracks = tracks
        self.segments: list[list[Packet]] = []

    def init_segment(self) -> bytes | None:
        return b"init"

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        self.segments.append(list(packets))
        return b"x" * len(packets)


def make(target: float = 2.0) -> tuple[Segmenter, list[RecordingMuxer]]:
    made: list[RecordingMuxer] = []

    def factory(tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> RecordingMuxer:
        made.append(RecordingMuxer(tracks))
        return made[-1]

    return Segmenter(factory, Fraction(target), Fraction(12)), made


def av_stream(seconds: int, gop_s: int = 2, start: int = 0) -> list[Packet]:
    """30 fps video with a keyframe every ``gop_s`` and AAC frames, interleaved by time."""
    items: list[Packet] = []
    for i in range(seconds * 30):
        ts = start + i * 1000 // 30
        items.append(Packet(0, ts, ts, TB, b"v", keyframe=i % (30 * gop_s) == 0))
    for j in range(seconds * 48000 // 1024):
        ts = start + j * 1024 * 1000 // 48000
        items.append(Packet(1, ts, ts, TB, b"a"))
    items.sort(key=lambda p: (p.dts, p.track))
    return items


def segments(events: Sequence[object]) -> list[SegmentReady]:
    return [e for e in events if isinstance(e, SegmentReady)]


def test_cuts_on_keyframes_at_target() -> None:
    seg, _ = make()
    seg.feed(StreamStarted((VIDEO, AUDIO)), now=1000.0)
    for p in av_stream(7):
        seg.feed(p, now=1000.0)
    seg.feed(StreamEnded("done"), now=1007.0)
    events = seg.events()
    assert isinstance(events[0], InitReady)
    assert isinstance(events[-1], SegmentsEnded)
    segs = segments(events)
    assert [s.sequence for s in segs] == [0, 1, 2, 3]
    assert [round(float(s.duration), 2) for s in segs[:3]] == [2.0, 2.0, 2.0]
    assert [float(s.start) for s in segs] == [10.0, 12.0, 14.0, 16.0]
    assert all(s.program_date_time == 1000.0 + float(s.start) - 10 for s in segs)


def test_every_packet_lands_once_with_its_duration() -> None:
    seg, made = make()
    seg.feed(StreamStarted((VIDEO, AUDIO)), now=0.0)
    source = av_stream(5)
    for p in source:
        seg.feed(p, now=0.0)
    seg.feed(StreamEnded(""), now=0.0)
    written = [p for s in made[0].segments for p in s]
    assert sorted((p.track, p.dts) for p in written) == sorted((p.track, p.dts + H) for p in source)
    video = [p for p in written if p.track == 0]
    assert all(p.duration in (33, 34) for p in video)
    for s in made[0].segments:
        first_video = next(p for p in s if p.track == 0)
        assert first_video.keyframe


def test_long_gop_makes_longer_segments_not_broken_ones() -> None:
    seg, _ = make(target=2.0)
    seg.feed(StreamStarted((VIDEO, AUDIO)), now=0.0)
    for p in av_stream(9, gop_s=3):
        seg.feed(p, now=0.0)
    seg.feed(StreamEnded(""), now=0.0)
    durations = [round(float(s.duration)) for s in segments(seg.events())]
    assert durations == [3, 3, 3]


def test_packets_before_first_keyframe_are_skipped() -> None:
    seg, made = make()
    seg.feed(StreamStarted((VIDEO, AUDIO)), now=0.0)
    seg.feed(Packet(1, 0, 0, TB, b"a"), now=0.0)
    seg.feed(Packet(0, 0, 0, TB, b"v", keyframe=False), now=0.0)
    for p in av_stream(3, start=100):
        seg.feed(p, now=0.0)
    seg.feed(StreamEnded(""), now=0.0)
    first = made[0].segments[0][0]
    assert first.track == 0 and first.keyframe and first.dts == 100 + H


def test_reconnect_continues_timeline_with_discontinuity() -> None:
    seg, made = make()
    seg.feed(StreamStarted((VIDEO, AUDIO)), now=0.0)
    for p in av_stream(4):
        seg.feed(p, now=0.0)
    seg.feed(StreamStarted((VIDEO, AUDIO), discontinuity=True), now=100.0)
    for p in av_stream(4):  # the publisher's clock restarts at zero
        seg.feed(p, now=100.0)
    seg.feed(StreamEnded(""), now=104.0)
    events = seg.events()
    assert sum(isinstance(e, InitReady) for e in events) == 2
    segs = segments(events)
    flagged = [s for s in segs if s.discontinuity]
    assert len(flagged) == 1
    idx = segs.index(flagged[0])
    # The new segment starts exactly where the previous one ended.
    assert segs[idx].start == segs[idx - 1].start + segs[idx - 1].duration
    assert segs[idx].program_date_time == 100.0
    starts = [s.start for s in segs]
    assert starts == sorted(starts)
    # Every timestamp the second muxer received is after the first run.
    assert min(p.dts_seconds for s in made[1].segments for p in s) >= segs[idx].start


def test_restart_on_the_same_clock_cuts_there_and_keeps_the_timeline() -> None:
    """New codec parameters mid-stream (a rendition switched from a copied
    to an encoded picture at a keyframe): a new init segment, a cut and a
    discontinuity at that keyframe, and no shift of the timestamps, so the
    rendition stays aligned with the others."""
    seg, made = make()
    stream = av_stream(8, gop_s=1)
    seg.feed(StreamStarted((VIDEO, AUDIO)), now=0.0)
    switch = next(p for p in stream if p.track == 0 and p.keyframe and p.dts == 3000)
    index = stream.index(switch)
    for p in stream[:index]:
        seg.feed(p, now=0.0)
    encoded = VIDEO.with_changes(extradata=b"\x01\x4d\x00\x1e")
    seg.feed(StreamStarted((encoded, AUDIO), discontinuity=True, clock_continues=True), now=50.0)
    for p in stream[index:]:
        seg.feed(p, now=50.0)
    seg.feed(StreamEnded(""), now=60.0)
    events = seg.events()
    inits = [e for e in events if isinstance(e, InitReady)]
    assert len(inits) == 2 and inits[1].tracks[0].extradata == encoded.extradata
    segs = segments(events)
    flagged = [s for s in segs if s.discontinuity]
    assert len(flagged) == 1
    # The cut is at the switch keyframe, on the original timeline (not re-based).
    assert flagged[0].start == Fraction(3000 + H, 1000)
    assert [float(s.start) for s in segs] == [10.0, 12.0, 13.0, 15.0, 17.0]
    assert flagged[0].program_date_time == segs[0].program_date_time + 3.0
    assert made[1].segments[0][0].dts == 3000 + H


def test_backwards_timestamps_are_dropped_and_counted() -> None:
    seg, _ = make()
    seg.feed(StreamStarted((VIDEO,)), now=0.0)
    seg.feed(Packet(0, 0, 0, TB, b"v", keyframe=True), now=0.0)
    seg.feed(Packet(0, 33, 33, TB, b"v"), now=0.0)
    seg.feed(Packet(0, 10, 10, TB, b"v"), now=0.0)
    assert seg.stats.out_of_order_dropped == 1


def test_audio_only_stream_is_cut_by_time() -> None:
    seg, _ = make()
    seg.feed(StreamStarted((AUDIO.with_changes(index=0),)), now=0.0)
    for j in range(6 * 48000 // 1024):
        ts = j * 1024 * 1000 // 48000
        seg.feed(Packet(0, ts, ts, TB, b"a"), now=0.0)
    seg.feed(StreamEnded(""), now=0.0)
    segs = segments(seg.events())
    assert len(segs) == 3
    assert all(abs(float(s.duration) - 2.0) < 0.03 for s in segs[:2])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(-5, 5000), st.booleans()),
        max_size=200,
    )
)
def test_arbitrary_packet_orders_never_break_it(raw: list[tuple[int, int, bool]]) -> None:
    seg, made = make()
    seg.feed(StreamStarted((VIDEO, AUDIO)), now=0.0)
    for track, ts, key in raw:
        seg.feed(Packet(track, ts, ts, TB, b"p", keyframe=key), now=0.0)
    seg.feed(StreamEnded(""), now=0.0)
    segs = segments(seg.events())
    for s, recorded in zip(segs, made[0].segments, strict=True):
        assert s.duration >= 0
        for track in (0, 1):
            dts = [p.dts for p in recorded if p.track == track]
            assert dts == sorted(dts)


def test_parts_never_exceed_part_target_and_join_into_segments() -> None:
    from packager.hls.segmenter import PartReady

    made: list[RecordingMuxer] = []

    def factory(tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> RecordingMuxer:
        made.append(RecordingMuxer(tracks))
        return made[-1]

    part_target = Fraction(1, 2)
    seg = Segmenter(factory, Fraction(2), Fraction(12), part_target=part_target)
    seg.feed(StreamStarted((VIDEO, AUDIO)), now=0.0)
    for p in av_stream(7):
        seg.feed(p, now=0.0)
    seg.feed(StreamEnded(""), now=0.0)
    events = seg.events()
    parts = [e for e in events if isinstance(e, PartReady)]
    segs = segments(events)
    assert parts and all(0 < p.duration <= part_target for p in parts)
    for s in segs:
        mine = [p for p in parts if p.segment_sequence == s.sequence]
        assert [p.index for p in mine] == list(range(len(mine)))
        assert b"".join(p.data for p in mine) == s.data
        assert sum(p.duration for p in mine) == s.duration
        assert mine[0].independent
        # Parts other than the last are at least 85% of the target (RFC 8216bis 4.4.4.9).
        assert all(p.duration >= part_target * Fraction(85, 100) for p in mine[:-1])
    assert sum(len(m.segments) for m in made) == len(parts)


def test_part_target_must_fit_the_segment_target() -> None:
    import pytest

    from packager.errors import PackagerError

    with pytest.raises(PackagerError):
        Segmenter(lambda t, period=None: RecordingMuxer(t), Fraction(2), Fraction(12), part_target=Fraction(3))


def test_negative_start_is_shifted_to_zero() -> None:
    seg, made = make()
    seg.feed(StreamStarted((VIDEO, AUDIO)), now=0.0)
    seg.feed(Packet(1, -21, -21, TB, b"a"), now=0.0)  # AAC priming before zero
    for p in av_stream(3):
        seg.feed(p, now=0.0)
    seg.feed(Packet(1, -50, -50, TB, b"a"), now=0.0)  # hostile: far behind
    seg.feed(StreamEnded(""), now=0.0)
    written = [p for s in made[0].segments for p in s]
    assert min(p.dts for p in written) >= 0
    assert seg.stats.out_of_order_dropped + seg.stats.negative_dropped >= 1


def test_mixed_time_bases_keep_times_exact() -> None:
    """Video at 90 kHz, audio at 44.1 kHz, a part target of 1/3 s (no whole
    number of milliseconds), then a restart on the same clock with video at
    1 kHz and audio at 48 kHz: the
    segmenter compares times in a unit common to every time base it has seen,
    so segment starts, durations and parts stay exact Fractions."""
    from packager.hls.segmenter import PartReady

    made: list[RecordingMuxer] = []

    def factory(tracks: tuple[Track, ...]) -> RecordingMuxer:
        made.append(RecordingMuxer(tracks))
        return made[-1]

    v90, a44 = Fraction(1, 90000), Fraction(1, 44100)
    video = VIDEO.with_changes(time_base=v90)
    audio = AUDIO.with_changes(time_base=a44, sample_rate=44100)
    part_target = Fraction(1, 3)
    seg = Segmenter(factory, Fraction(2), Fraction(12), part_target=part_target)
    seg.feed(StreamStarted((video, audio)), now=0.0)
    first: list[Packet] = []
    for i in range(4 * 30):
        first.append(Packet(0, i * 3000, i * 3000, v90, b"v", keyframe=i % 60 == 0))
    for j in range(4 * 44100 // 1024):
        first.append(Packet(1, j * 1024, j * 1024, a44, b"a"))
    first.sort(key=lambda p: (p.dts_seconds, p.track))
    for p in first:
        seg.feed(p, now=0.0)
    # New codec parameters at 4 s, video now in milliseconds and audio at
    # 48 kHz (a time base the common unit so far does not divide).
    a48 = Fraction(1, 48000)
    second = [p for p in av_stream(4, start=4000) if p.track == 0]
    second += [Packet(1, 192000 + j * 1024, 192000 + j * 1024, a48, b"a") for j in range(4 * 48000 // 1024)]
    second.sort(key=lambda p: (p.dts_seconds, p.track))
    seg.feed(StreamStarted((VIDEO, AUDIO.with_changes(time_base=a48)), discontinuity=True, clock_continues=True),
             now=4.0)
    for p in second:
        seg.feed(p, now=4.0)
    seg.feed(StreamEnded(""), now=8.0)
    events = seg.events()
    segs = segments(events)
    parts = [e for e in events if isinstance(e, PartReady)]
    assert [s.start for s in segs] == [Fraction(10), Fraction(12), Fraction(14), Fraction(16)]
    assert [s.duration for s in segs[:3]] == [Fraction(2)] * 3
    assert [s.discontinuity for s in segs] == [False, False, True, False]
    # The last video frame before the switch ends at 4 s exactly (3000/90000 s each).
    assert segs[1].start + segs[1].duration == Fraction(14)
    assert parts and all(0 < p.duration <= part_target for p in parts)
    for s in segs:
        mine = [p for p in parts if p.segment_sequence == s.sequence]
        assert sum(p.duration for p in mine) == s.duration
        assert all(p.segment_start == s.start for p in mine)
    assert segs[2].program_date_time == segs[0].program_date_time + 4.0
