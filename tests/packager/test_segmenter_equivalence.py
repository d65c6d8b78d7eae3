"""The segmenter counts media times as integers in a unit common to every
time base; its decisions must be exactly those of the same logic on exact
Fractions (:mod:`tests.packager.reference_segmenter`).

Both are fed the same random streams: mixed time bases (milliseconds, 90 kHz,
audio sample rates, NTSC's 1001/30000), frame rates with timestamp jitter,
audio ahead of or behind the video, restarts on a new clock or the same one
with other time bases, audio-only and video-only streams, odd part targets,
and the odd packet a publisher gets wrong (repeated, late or negative
timestamps), clear and protected (AES-128 and ``cbcs`` key periods). Every
event (times, durations, program date times, muxed packets, flags, keys) and
the counters must be equal.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from drm.model import KeyPeriod, Protection
from engine.media import Codec, Packet, StreamEnded, StreamItem, StreamStarted, Track
from packager.hls.keys import SegmentKey, SegmentProtection, key_uri_under
from packager.hls.segmenter import PartReady, Segmenter, SegmenterEvent, SegmentReady, TimelineOrigin
from tests.fixed_keys import FixedKeys
from tests.packager.reference_segmenter import ReferenceSegmenter

TIME_BASES = [
    Fraction(1, 1000),
    Fraction(1, 90000),
    Fraction(1, 48000),
    Fraction(1, 44100),
    Fraction(1001, 30000),
    Fraction(1, 25),
]


class DescribingMuxer:
    """Writes each fragment as a description of its packets, so that equal
    data means the same packets, with the same timestamps and durations, in
    the same order."""

    extension = ".m4s"

    def __init__(self, tracks: tuple[Track, ...]) -> None:
        self.tracks = tracks

    def init_segment(self) -> bytes | None:
        return repr([(t.index, t.time_base) for t in self.tracks]).encode()

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        described = [(p.track, p.pts, p.dts, p.duration, p.time_base, p.keyframe, p.data) for p in packets]
        return repr((sequence, described)).encode()


def factory(tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> DescribingMuxer:
    return DescribingMuxer(tracks)


@dataclass(frozen=True)
class Publish:
    """One track set and the packets sent with it."""

    started: StreamStarted
    packets: list[Packet]


@st.composite
def publishes(draw: st.DrawFn, restart: bool, clock: int) -> Publish:
    """One publish of random tracks; ``clock`` is where its timestamps start
    (milliseconds)."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    has_video = draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else True
    has_audio = True if not has_video else draw(st.integers(0, 5)) > 0
    seconds = draw(st.integers(1, 9))
    tracks: list[Track] = []
    packets: list[tuple[Fraction, Packet]] = []  # (arrival order key, packet)
    if has_video:
        tb = draw(st.sampled_from(TIME_BASES))
        fps = draw(st.integers(24, 60))
        gop = draw(st.integers(1, 4 * fps))
        jitter_ms = draw(st.integers(0, 4))
        delay = draw(st.sampled_from([0, 0, 2]))  # B-frame reordering: pts after dts
        index = len(tracks)
        tracks.append(Track(index, Codec.H264, tb, b"\x01\x64\x00\x1f", width=1920, height=1080))
        for i in range(seconds * fps):
            t = Fraction(clock, 1000) + Fraction(i, fps) + Fraction(rng.randint(-jitter_ms, jitter_ms), 1000)
            dts = round(t / tb)
            pts = dts + round(Fraction(delay, fps) / tb)
            duration = round(Fraction(1, fps) / tb) if rng.random() < 0.1 else 0
            packets.append((t, Packet(index, pts, dts, tb, b"v%d" % i, keyframe=i % gop == 0, duration=duration)))
    if has_audio:
        tb = draw(st.sampled_from(TIME_BASES))
        rate = draw(st.sampled_from([44100, 48000]))
        lead = Fraction(draw(st.integers(-400, 400)), 1000)  # audio ahead (> 0) of the video
        offset = Fraction(draw(st.integers(-60, 60)), 1000)  # audio timestamps against the video's
        index = len(tracks)
        tracks.append(Track(index, Codec.AAC, tb, b"\x11\x90", sample_rate=rate, channels=2))
        for j in range(seconds * rate // 1024):
            t = Fraction(clock, 1000) + offset + Fraction(j * 1024, rate)
            dts = round(t / tb)
            packets.append((t - lead, Packet(index, dts, dts, tb, b"a%d" % j)))
    packets.sort(key=lambda item: (item[0], item[1].track))
    ordered = [p for _, p in packets]
    # What publishers get wrong now and then: a repeated or late timestamp.
    for _ in range(draw(st.integers(0, 2))):
        if ordered:
            p = rng.choice(ordered)
            ordered.insert(ordered.index(p) + 1, Packet(p.track, p.pts, p.dts - rng.randint(0, 2), p.time_base, b"x"))
    clock_continues = restart and draw(st.booleans())
    return Publish(StreamStarted(tuple(tracks), discontinuity=restart, clock_continues=clock_continues), ordered)


@st.composite
def streams(draw: st.DrawFn) -> list[Publish]:
    clock = draw(st.sampled_from([0, 0, -50, 3000, 2**32 - 5000]))
    out = [draw(publishes(restart=False, clock=clock))]
    for _ in range(draw(st.integers(0, 2))):
        previous = out[-1]
        last = max((p.dts_seconds for p in previous.packets), default=Fraction(0))
        publish = draw(publishes(restart=True, clock=0))
        if publish.started.clock_continues:
            # Same clock: carry on a frame or so after the last timestamp.
            publish = draw(publishes(restart=True, clock=int(last * 1000) + draw(st.integers(0, 60))))
            publish = Publish(StreamStarted(publish.started.tracks, True, True), publish.packets)
        out.append(publish)
    return out


def part_targets() -> st.SearchStrategy[Fraction | None]:
    return st.one_of(
        st.none(),
        st.integers(200, 1000).map(lambda ms: Fraction(ms, 1000)),
        st.sampled_from([Fraction(1, 3), Fraction(1001, 3000), Fraction(2, 7), Fraction(1, 5), Fraction(1)]),
    )


def events_of(
    segmenter: Segmenter | ReferenceSegmenter, stream: list[Publish], end: bool
) -> list[tuple[int, list[SegmenterEvent]]]:
    """Feed ``stream`` and return the events after each item (by item
    number), so that when an event comes out is compared too."""
    out: list[tuple[int, list[SegmenterEvent]]] = []
    items: list[StreamItem] = []
    for publish in stream:
        items.append(publish.started)
        items.extend(publish.packets)
    if end:
        items.append(StreamEnded("gone"))
    wall = 1_790_000_000.0
    for n, item in enumerate(items):
        segmenter.feed(item, now=wall + n / 97)
        events = segmenter.events()
        if events:
            out.append((n, events))
    return out


@settings(max_examples=150, deadline=None)
@given(
    stream=streams(),
    part_target=part_targets(),
    target=st.sampled_from([Fraction(1), Fraction(2), Fraction(4), Fraction(6, 5), Fraction(2002, 1000)]),
    max_factor=st.sampled_from([Fraction(1), Fraction(3, 2), Fraction(3)]),
    end=st.booleans(),
)
def test_integer_media_times_decide_exactly_like_fractions(
    stream: list[Publish], part_target: Fraction | None, target: Fraction, max_factor: Fraction, end: bool
) -> None:
    if part_target is not None and part_target > target:
        part_target = target
    longest = target * max_factor
    made = Segmenter(factory, target, longest, part_target=part_target, origin=TimelineOrigin())
    reference = ReferenceSegmenter(factory, target, longest, part_target=part_target, origin=TimelineOrigin())
    got = events_of(made, stream, end)
    expected = events_of(reference, stream, end)
    assert got == expected
    assert made.stats == reference.stats
    assert made.next_sequence == reference.next_sequence
    assert made.anchored == reference.anchored
    # Fractions compare equal to ints too: check the types of the times.
    for _, events in got:
        for event in events:
            if isinstance(event, SegmentReady):
                assert type(event.start) is Fraction and type(event.duration) is Fraction
            if isinstance(event, PartReady):
                assert type(event.segment_start) is Fraction and type(event.duration) is Fraction


def test_renditions_sharing_an_origin_decide_exactly_like_fractions() -> None:
    """Two renditions with different time bases share one timeline origin;
    the second starts from the origin the first chose."""
    rng = random.Random(7)
    streams_: list[list[Publish]] = []
    for tb in (Fraction(1, 90000), Fraction(1, 1000)):
        video = Track(0, Codec.H264, tb, b"\x01", width=1280, height=720)
        audio = Track(1, Codec.AAC, Fraction(1, 44100), b"\x11\x90", sample_rate=44100, channels=2)
        packets = [
            Packet(0, round(Fraction(i, 30) / tb) + 3, round(Fraction(i, 30) / tb), tb, b"v", keyframe=i % 60 == 0)
            for i in range(300)
        ]
        packets += [Packet(1, j * 1024 - 2048, j * 1024 - 2048, Fraction(1, 44100), b"a") for j in range(430)]
        packets.sort(key=lambda p: (p.dts_seconds + Fraction(rng.randint(0, 30), 1000), p.track))
        streams_.append([Publish(StreamStarted((video, audio)), packets)])
    origins = TimelineOrigin(), TimelineOrigin()
    got = [
        events_of(Segmenter(factory, Fraction(2), Fraction(6), Fraction(1, 3), origins[0]), s, True) for s in streams_
    ]
    expected = [
        events_of(ReferenceSegmenter(factory, Fraction(2), Fraction(6), Fraction(1, 3), origins[1]), s, True)
        for s in streams_
    ]
    assert origins[0].offset == origins[1].offset
    assert got == expected
    assert any(isinstance(e, PartReady) for _, events in got[0] for e in events)


@settings(max_examples=25, deadline=None)
@given(
    stream=streams(),
    part_target=st.sampled_from([None, Fraction(1, 3), Fraction(1, 2)]),
    scheme=st.sampled_from([Protection.AES_128, Protection.CBCS]),
    rotate_every=st.integers(0, 3),
)
def test_protected_streams_get_the_same_keys_and_bytes(
    stream: list[Publish], part_target: Fraction | None, scheme: Protection, rotate_every: int
) -> None:
    """With a protection the keys, IVs and (AES-128) encrypted bytes of
    every part and segment are the same too."""
    keys = FixedKeys()

    def protection() -> SegmentProtection:
        return SegmentProtection(
            scheme, lambda index: keys.key_period("show", index), key_uri_under("/keys", "show"), rotate_every
        )

    made = Segmenter(factory, Fraction(2), Fraction(6), part_target, TimelineOrigin(), protection())
    reference = ReferenceSegmenter(factory, Fraction(2), Fraction(6), part_target, TimelineOrigin(), protection())
    got = events_of(made, stream, True)
    assert got == events_of(reference, stream, True)
    assert any(isinstance(e, SegmentReady) and e.key is not None for _, events in got for e in events)
