"""LL-HLS parts: none is longer than the part target (RFC 8216bis 4.4.4.9),
at segment cuts, discontinuities and the end of the stream too, and every
segment is its parts joined.

The segmenter is driven with packets the way an RTMP ingest hands them over
(millisecond timestamps that jitter, audio interleaved a little ahead or
behind); the muxer records what it is given.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from drm.model import KeyPeriod
from engine.media import Codec, Packet, StreamEnded, StreamItem, StreamStarted, Track
from packager.hls.keys import SegmentKey
from packager.hls.segmenter import PartReady, Segmenter, SegmentReady

TB = Fraction(1, 1000)
VIDEO = Track(0, Codec.H264, TB, b"\x01\x64\x00\x1f", width=640, height=360)
AUDIO = Track(1, Codec.AAC, TB, b"\x11\x90", sample_rate=48000, channels=2)
AUDIO_ONLY = AUDIO.with_changes(index=0)


class RecordingMuxer:
    """Writes each fragment as the list of its packets, so that joined
    fragments can be compared and traced back to packets."""

    extension = ".m4s"

    def __init__(self, tracks: tuple[Track, ...]) -> None:
        self.tracks = tracks
        self.fragments: list[list[Packet]] = []

    def init_segment(self) -> bytes | None:
        return b"init"

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        self.fragments.append(list(packets))
        return repr([(p.track, p.dts) for p in packets]).encode()


@dataclass
class Run:
    parts: list[PartReady]
    segments: list[SegmentReady]
    fragments: list[list[Packet]]
    part_target: Fraction


def run(items: Sequence[StreamItem], part_target: Fraction, target: Fraction = Fraction(2)) -> Run:
    made: list[RecordingMuxer] = []

    def factory(tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> RecordingMuxer:
        made.append(RecordingMuxer(tracks))
        return made[-1]

    seg = Segmenter(factory, target, Fraction(12), part_target=part_target)
    for item in items:
        seg.feed(item, now=0.0)
    events = seg.events()
    return Run(
        [e for e in events if isinstance(e, PartReady)],
        [e for e in events if isinstance(e, SegmentReady)],
        [f for m in made for f in m.fragments],
        part_target,
    )


def check(result: Run, video: bool = True) -> None:
    """Every part within the target; segments are their parts, cut on
    keyframes; each part holds the packets that start in its span (or
    before it: audio that came late)."""
    assert result.parts
    assert len(result.fragments) == len(result.parts)
    for part in result.parts:
        assert 0 < part.duration <= result.part_target, part
    by_segment: dict[int, list[tuple[PartReady, list[Packet]]]] = {}
    for part, fragment in zip(result.parts, result.fragments, strict=True):
        by_segment.setdefault(part.segment_sequence, []).append((part, fragment))
    assert sorted(by_segment) == [s.sequence for s in result.segments]
    last_segment = result.segments[-1].sequence
    for segment in result.segments:
        mine = by_segment[segment.sequence]
        assert [p.index for p, _ in mine] == list(range(len(mine)))
        assert b"".join(p.data for p, _ in mine) == segment.data
        assert sum(p.duration for p, _ in mine) == segment.duration
        assert segment.packet_count == sum(len(f) for _, f in mine)
        if video:
            first_video = next(p for _, f in mine for p in f if p.track == VIDEO.index)
            assert first_video.keyframe and mine[0][0].independent
        start = segment.start
        for n, (part, fragment) in enumerate(mine):
            end = start + part.duration
            final = segment.sequence == last_segment and n == len(mine) - 1
            for p in fragment:
                assert p.dts_seconds < end or (final and p.dts_seconds <= end)
                # Audio that arrives after the part it starts in was closed
                # goes to the next one; video is never late.
                if p.track == VIDEO.index or not video:
                    assert start <= p.dts_seconds
            start = end


def rtmp_times(count: int, step: Fraction, start: int, rng: random.Random, jitter: int) -> list[int]:
    """Millisecond timestamps of ``count`` frames ``step`` ms apart, rounded
    and jittered by up to ``jitter`` ms the way RTMP publishers send them."""
    times = [start + round(i * step) + rng.randint(-jitter, jitter) for i in range(count)]
    for i in range(1, count):
        times[i] = max(times[i], times[i - 1] + 1)
    return times


def stream(
    *,
    seconds: Fraction,
    fps: Fraction,
    gop: int,
    audio_rate: int | None,
    audio_offset_ms: int = 0,
    audio_extra_ms: int = 0,
    audio_lead_ms: int = 0,
    jitter: int = 1,
    start: int = 0,
    rng: random.Random | None = None,
    video: bool = True,
) -> list[Packet]:
    """Video (keyframe every ``gop`` frames) and AAC, interleaved as sent:
    in decode order, audio ``audio_lead_ms`` ahead of the video."""
    rng = rng or random.Random(0)
    sent: list[tuple[int, int, Packet]] = []
    if video:
        frames = int(seconds * fps)
        for i, ts in enumerate(rtmp_times(frames, 1000 / fps, start, rng, jitter)):
            sent.append((ts, 0, Packet(VIDEO.index, ts, ts, TB, b"v", keyframe=i % gop == 0)))
    if audio_rate is not None:
        track = AUDIO.index if video else AUDIO_ONLY.index
        step = Fraction(1024 * 1000, audio_rate)
        count = int((seconds * 1000 + audio_extra_ms) / step)
        for ts in rtmp_times(count, step, start + audio_offset_ms, rng, 0):
            sent.append((ts - audio_lead_ms, 1, Packet(track, ts, ts, TB, b"a")))
    sent.sort(key=lambda s: (s[0], s[1]))
    return [p for _, _, p in sent]


def test_audio_running_past_the_last_frame_is_split_at_the_end() -> None:
    """The case seen live with 0.334 s parts: audio ran 83 ms past the last
    video frame and the stream's last part lasted 0.417 s."""
    result = run(
        [
            StreamStarted((VIDEO, AUDIO)),
            *stream(seconds=Fraction(6), fps=Fraction(30), gop=60, audio_rate=48000, audio_extra_ms=83, jitter=0),
            StreamEnded(""),
        ],
        Fraction(167, 500),
    )
    check(result)
    last = [p for p in result.parts if p.segment_sequence == result.segments[-1].sequence]
    assert sum(p.duration for p in last) > 2
    # The split is at the last frame, not at the stream's last packet.
    assert any(p.track == VIDEO.index for p in result.fragments[-2])


def test_a_frame_longer_than_guessed_moves_to_the_next_part() -> None:
    """Parts are closed on a guess of the next frame's duration; a frame that
    turns out longer (a dropped frame) starts the next part instead."""
    times = [round(i * 1000 / 30) for i in range(90)]
    times = [t if i < 9 else t + 60 for i, t in enumerate(times)]  # frame 8 lasts 93 ms
    items: list[StreamItem] = [StreamStarted((VIDEO,))]
    items += [Packet(0, t, t, TB, b"v", keyframe=i % 60 == 0) for i, t in enumerate(times)]
    items.append(StreamEnded(""))
    result = run(items, Fraction(167, 500))
    check(result)
    # Frames 0-7 fit; frame 8 would have fitted with a frame's usual 33 ms.
    assert len(result.fragments[0]) == 8 and result.parts[0].duration == Fraction(267, 1000)
    assert result.fragments[1][0].dts - result.fragments[0][0].dts == 267


def test_a_segment_cut_never_leaves_a_long_last_part() -> None:
    """The keyframe that cuts a segment comes after a frame longer than the
    recent ones: the part before the cut is split."""
    times = [round(i * 1000 / 30) for i in range(120)]
    times = [t if i < 60 else t + 40 for i, t in enumerate(times)]  # frame 59 lasts 73 ms
    items: list[StreamItem] = [StreamStarted((VIDEO,))]
    items += [Packet(0, t, t, TB, b"v", keyframe=i % 60 == 0) for i, t in enumerate(times)]
    items.append(StreamEnded(""))
    result = run(items, Fraction(167, 500))
    check(result)
    first = [p.duration for p in result.parts if p.segment_sequence == 0]
    assert len(first) == 7 and first[-1] == Fraction(73, 1000)


def test_audio_ahead_of_the_keyframe_goes_to_the_next_segment() -> None:
    result = run(
        [
            StreamStarted((VIDEO, AUDIO)),
            *stream(seconds=Fraction(6), fps=Fraction(30), gop=60, audio_rate=48000, audio_lead_ms=150),
            StreamEnded(""),
        ],
        Fraction(1, 2),
    )
    check(result)


def test_audio_far_ahead_of_encoded_video_never_cuts_parts() -> None:
    """A ladder rendition's audio runs ahead of its video by the encoding
    delay, often more than a part target: the parts are still cut at the
    frames, ten frames each at 30 fps with 0.334 s parts."""
    result = run(
        [
            StreamStarted((VIDEO, AUDIO)),
            *stream(seconds=Fraction(8), fps=Fraction(30), gop=60, audio_rate=48000, audio_lead_ms=800, jitter=0),
            StreamEnded(""),
        ],
        Fraction(167, 500),
    )
    check(result)
    durations = [p.duration for p in result.parts if p.segment_sequence < 3]
    assert len(durations) == 18 and all(d >= Fraction(333, 1000) for d in durations)


def test_video_that_stops_leaves_audio_in_parts_within_the_target() -> None:
    """A publisher whose video stalls while audio goes on: the audio is cut
    into parts when its segment ends (audio alone never cuts parts while the
    stream has video: it may run ahead of frames still on their way)."""
    items: list[StreamItem] = [StreamStarted((VIDEO, AUDIO))]
    packets = stream(seconds=Fraction(5), fps=Fraction(30), gop=60, audio_rate=48000)
    items += [p for p in packets if p.track == AUDIO.index or p.dts < 1500]
    items.append(StreamEnded(""))
    result = run(items, Fraction(167, 500))
    check(result)
    assert sum(p.duration for p in result.parts) > Fraction(49, 10)


FRAME_RATES = [Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(50), Fraction(60)]


@settings(max_examples=150, deadline=None)
@given(
    fps=st.sampled_from(FRAME_RATES),
    gop_s=st.sampled_from([Fraction(1, 2), Fraction(1), Fraction(2), Fraction(3), Fraction(4)]),
    audio_rate=st.sampled_from([None, 44100, 48000]),
    audio_offset_ms=st.integers(-200, 200),
    audio_extra_ms=st.integers(-400, 400),
    audio_lead_ms=st.integers(-60, 1500),
    part_target_ms=st.integers(200, 1000),
    jitter=st.integers(0, 2),
    seconds=st.integers(2, 9),
    restart=st.sampled_from([None, "reconnect", "same clock"]),
    rng=st.randoms(use_true_random=False),
)
def test_parts_stay_within_the_target_for_any_rate_gop_and_interleaving(
    fps: Fraction,
    gop_s: Fraction,
    audio_rate: int | None,
    audio_offset_ms: int,
    audio_extra_ms: int,
    audio_lead_ms: int,
    part_target_ms: int,
    jitter: int,
    seconds: int,
    restart: str | None,
    rng: random.Random,
) -> None:
    gop = max(1, round(gop_s * fps))
    tracks = (VIDEO, AUDIO) if audio_rate else (VIDEO,)

    def one(start: int) -> list[Packet]:
        return stream(
            seconds=Fraction(seconds), fps=fps, gop=gop, audio_rate=audio_rate, audio_offset_ms=audio_offset_ms,
            audio_extra_ms=audio_extra_ms, audio_lead_ms=audio_lead_ms, jitter=jitter, start=start, rng=rng,
        )

    items: list[StreamItem] = [StreamStarted(tracks), *one(0)]
    if restart == "reconnect":
        items += [StreamStarted(tracks, discontinuity=True), *one(0)]
    elif restart == "same clock":
        items += [StreamStarted(tracks, discontinuity=True, clock_continues=True), *one(seconds * 1000 + 500)]
    items.append(StreamEnded(""))
    check(run(items, Fraction(part_target_ms, 1000)))


@settings(max_examples=60, deadline=None)
@given(
    audio_rate=st.sampled_from([44100, 48000]),
    part_target_ms=st.integers(200, 1000),
    seconds=st.integers(2, 9),
)
def test_audio_only_parts_stay_within_the_target(audio_rate: int, part_target_ms: int, seconds: int) -> None:
    items: list[StreamItem] = [
        StreamStarted((AUDIO_ONLY,)),
        *stream(seconds=Fraction(seconds), fps=Fraction(30), gop=1, audio_rate=audio_rate, video=False),
        StreamEnded(""),
    ]
    check(run(items, Fraction(part_target_ms, 1000)), video=False)
