"""The fMP4/CMAF writer against real encodes: what it writes must be read by
ffprobe and decoded by PyAV frame for frame, fragment by fragment."""

from __future__ import annotations

import io
import json
import struct
import subprocess
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codecs import codec_string
from engine.media import Codec, MediaKind, Packet, Track, rescale
from packager.fmp4 import Fmp4TrackError, Fmp4UsageError, Fmp4Writer
from packager.fmp4.fragment import samples_for
from packager.fmp4.init import TrackSlot
from tests.conftest import make_clip

CODECS = {"h264": Codec.H264, "hevc": Codec.HEVC, "av1": Codec.AV1, "libdav1d": Codec.AV1, "aac": Codec.AAC,
          "opus": Codec.OPUS, "libopus": Codec.OPUS}


def demux(path: Path, with_durations: bool = True) -> tuple[list[Track], list[Packet]]:
    """Tracks and packets of a file as an ingest would give them: AVCC video,
    raw AAC/Opus, timestamps shifted by one second so that none is negative."""
    tracks = []
    packets = []
    with av.open(str(path)) as container:
        for s in container.streams:
            ctx = s.codec_context
            tb = Fraction(s.time_base)
            tracks.append(Track(s.index, CODECS[ctx.name], tb, bytes(ctx.extradata or b""),
                                sample_rate=ctx.sample_rate if s.type == "audio" else None))
        for p in container.demux():
            if p.size == 0 or p.pts is None or p.dts is None:
                continue
            tb = Fraction(p.time_base)
            shift = int(1 / tb)
            packets.append(Packet(p.stream.index, p.pts + shift, p.dts + shift, tb, bytes(p), p.is_keyframe,
                                  p.duration if with_durations and p.duration else 0))
    return tracks, packets


def split_at_keyframes(tracks: Sequence[Track], packets: Sequence[Packet]) -> list[list[Packet]]:
    video = {t.index for t in tracks if t.kind is MediaKind.VIDEO}
    groups: list[list[Packet]] = []
    for p in packets:
        if not groups or (p.track in video and p.keyframe):
            groups.append([])
        groups[-1].append(p)
    return groups


def split_every(packets: Sequence[Packet], n: int) -> list[list[Packet]]:
    return [list(packets[i : i + n]) for i in range(0, len(packets), n)]


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, bytes]]:
    pos, end = start, len(data) if end is None else end
    while pos < end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        assert size >= 8 and pos + size <= end, f"bad box {kind!r} size {size}"
        yield kind, data[pos + 8 : pos + size]
        pos += size


def fragment_timing(fragment: bytes) -> dict[int, tuple[int, list[int]]]:
    """track_ID -> (tfdt, sample durations) from one moof."""
    out = {}
    boxes = dict(iter_boxes(fragment))
    for kind, traf in iter_boxes(boxes[b"moof"]):
        if kind != b"traf":
            continue
        inner = dict(iter_boxes(traf))
        track_id = struct.unpack_from(">I", inner[b"tfhd"], 4)[0]
        assert struct.unpack_from(">I", inner[b"tfhd"])[0] & 0x020000  # default-base-is-moof
        assert inner[b"tfdt"][0] == 1
        tfdt = struct.unpack_from(">Q", inner[b"tfdt"], 4)[0]
        trun = inner[b"trun"]
        flags = struct.unpack_from(">I", trun)[0] & 0xFFFFFF
        count = struct.unpack_from(">I", trun, 4)[0]
        row = 16 if flags & 0x800 else 12
        durations = [struct.unpack_from(">I", trun, 12 + i * row)[0] for i in range(count)]
        out[track_id] = (tfdt, durations)
    return out


def probe(ffprobe: str, path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [ffprobe, "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_name,width,height,profile,level,nb_read_frames,r_frame_rate", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert result.stderr == "", result.stderr
    streams: list[dict[str, object]] = json.loads(result.stdout)["streams"]
    return streams


def read_back(data: bytes) -> dict[int, list[tuple[int, bool]]]:
    """Demux with PyAV; (pts, keyframe) per stream index, and decode all."""
    out: dict[int, list[tuple[int, bool]]] = {}
    with av.open(io.BytesIO(data)) as container:
        for p in container.demux():
            if p.size == 0:
                continue
            out.setdefault(p.stream.index, []).append((p.pts, p.is_keyframe))
    return out


def decoded_frames(data: bytes) -> dict[int, int]:
    counts: dict[int, int] = {}
    with av.open(io.BytesIO(data)) as container:
        for p in container.demux():
            for _ in p.decode():
                counts[p.stream.index] = counts.get(p.stream.index, 0) + 1
    return counts


Timeline = dict[int, list[tuple[int, bool]]]


def expected(writer: Fmp4Writer, tracks: Sequence[Track], packets: Sequence[Packet]) -> Timeline:
    out: dict[int, list[tuple[int, bool]]] = {}
    for position, track in enumerate(tracks):
        tb = Fraction(1, writer.timescale(track.index))
        video = track.kind is MediaKind.VIDEO
        out[position] = [(rescale(p.pts, p.time_base, tb), p.keyframe or not video)
                         for p in packets if p.track == track.index]
    return out


@pytest.fixture(scope="session")
def hevc_aac_mp4(ffmpeg: str, media_dir: Path) -> Path:
    return make_clip(ffmpeg, media_dir / "hevc_aac.mp4", seconds=2, size="320x240", rate=25, gop_seconds=1,
                     video_codec="libx265", extra=["-preset", "ultrafast", "-x265-params", "log-level=error"])


@pytest.fixture(scope="session")
def av1_opus_mp4(ffmpeg: str, media_dir: Path) -> Path:
    return make_clip(ffmpeg, media_dir / "av1_opus.mp4", seconds=2, size="320x240", rate=25, gop_seconds=1,
                     video_codec="libsvtav1",
                     extra=["-c:a", "libopus", "-preset", "12", "-svtav1-params", "verbosity=0"])


@pytest.fixture(params=["h264_aac", "hevc_aac", "av1_opus"])
def clip(request: pytest.FixtureRequest) -> Path:
    path: Path = request.getfixturevalue(f"{request.param}_mp4")
    return path


@pytest.mark.parametrize("with_durations", [True, False], ids=["durations", "deltas"])
def test_segments_read_back_frame_for_frame(clip: Path, with_durations: bool, ffprobe: str, tmp_path: Path) -> None:
    tracks, packets = demux(clip, with_durations)
    writer = Fmp4Writer(tracks)
    fragments = [writer.fragment(group, seq) for seq, group in enumerate(split_at_keyframes(tracks, packets), 1)]
    data = writer.init_segment() + b"".join(fragments)
    out = tmp_path / "out.mp4"
    out.write_bytes(data)

    streams = probe(ffprobe, out)
    source = probe(ffprobe, clip)
    for position, (got, want) in enumerate(zip(streams, source, strict=True)):
        assert got["codec_name"] == want["codec_name"]
        # The source's edit list hides the audio priming; a live output has none.
        assert int(str(got["nb_read_frames"])) == sum(1 for p in packets if p.track == tracks[position].index)
        if "width" in want:
            assert (got["width"], got["height"]) == (want["width"], want["height"])
            track = writer.tracks[0]
            assert (track.width, track.height) == (want["width"], want["height"])
            if track.frame_rate is not None:
                assert track.frame_rate == Fraction(str(want["r_frame_rate"]))

    assert read_back(data) == expected(writer, tracks, packets)
    counts = decoded_frames(data)
    for position, track in enumerate(tracks):
        assert counts[position] == sum(1 for p in packets if p.track == track.index)

    # tfdt is continuous: each fragment starts where the previous one ended.
    ends: dict[int, int] = {}
    for fragment in fragments:
        for track_id, (tfdt, durations) in fragment_timing(fragment).items():
            if track_id in ends:
                assert tfdt == ends[track_id]
            if durations != [0]:  # a lone sample without a duration cannot know its end
                ends[track_id] = tfdt + sum(durations)


def test_parts_are_independently_parseable(h264_aac_mp4: Path) -> None:
    tracks, packets = demux(h264_aac_mp4, with_durations=False)
    writer = Fmp4Writer(tracks)
    init = writer.init_segment()
    parts = split_every(packets, 7)
    assert len(parts) > 20
    for seq, part in enumerate(parts, 1):
        fragment = writer.fragment(part, seq)
        assert list(dict(iter_boxes(fragment))) == [b"moof", b"mdat"]
        want = {pos: v for pos, v in expected(writer, tracks, part).items() if v}
        assert read_back(init + fragment) == want
        if part[0].keyframe and part[0].track == 0:
            assert decoded_frames(init + fragment).get(0) == len(want[0])
    # Parts concatenated make the same stream as segments.
    whole = init + b"".join(writer.fragment(part, seq) for seq, part in enumerate(parts, 1))
    assert read_back(whole) == expected(writer, tracks, packets)


def test_codec_strings_match_probe(h264_aac_mp4: Path, ffprobe: str) -> None:
    tracks, _ = demux(h264_aac_mp4)
    video, audio = probe(ffprobe, h264_aac_mp4)
    profiles = {"High": 0x64, "Main": 0x4D, "Constrained Baseline": 0x42}
    level = int(str(video["level"]))
    assert codec_string(tracks[0]).startswith(f"avc1.{profiles[str(video['profile'])]:02x}")
    assert codec_string(tracks[0]).endswith(f"{level:02x}")
    assert codec_string(tracks[1]) == "mp4a.40.2" and audio["profile"] == "LC"


def test_sample_durations_rules() -> None:
    track = Track(0, Codec.AAC, Fraction(1, 1000), bytes((0x11, 0x90)), sample_rate=48000)
    writer = Fmp4Writer([track])
    ms = Fraction(1, 1000)
    # Without durations: deltas, and the last sample repeats the previous one.
    frag = writer.fragment([Packet(0, t, t, ms, b"\x01") for t in (0, 21, 43)], 1)
    assert fragment_timing(frag)[1] == (0, [1008, 1056, 1056])
    # With durations: end time minus start time, each rescaled, so no drift.
    frag = writer.fragment([Packet(0, t, t, ms, b"\x01", duration=21) for t in (64, 85)], 2)
    assert fragment_timing(frag)[1] == (3072, [1008, 1008])
    # A lone sample without a duration gets 0: the caller should set one.
    assert fragment_timing(writer.fragment([Packet(0, 5, 5, ms, b"\x01")], 3))[1] == (240, [0])


def test_misuse_is_reported(h264_aac_mp4: Path) -> None:
    tracks, packets = demux(h264_aac_mp4)
    writer = Fmp4Writer(tracks)
    with pytest.raises(Fmp4UsageError, match="no track"):
        writer.fragment([Packet(7, 0, 0, Fraction(1, 90000), b"x")], 1)
    with pytest.raises(Fmp4UsageError, match="negative"):
        writer.fragment([Packet(0, -1, -1, Fraction(1, 90000), b"x", True)], 1)
    with pytest.raises(Fmp4UsageError, match="backwards"):
        writer.fragment([packets[5], packets[0]] if packets[5].track == packets[0].track else
                        [Packet(0, 9, 9, Fraction(1, 90000), b"x"), Packet(0, 3, 3, Fraction(1, 90000), b"x")], 1)
    with pytest.raises(Fmp4UsageError):
        writer.fragment([], 1)
    with pytest.raises(Fmp4UsageError):
        writer.fragment(packets[:3], -1)
    with pytest.raises(Fmp4TrackError):
        Fmp4Writer([Track(0, Codec.VP8, Fraction(1, 90000))])
    with pytest.raises(Fmp4TrackError):
        Fmp4Writer([Track(0, Codec.H264, Fraction(1, 90000), b"\x01\x64\x00")])
    with pytest.raises(Fmp4TrackError, match="picture size"):
        Fmp4Writer([Track(0, Codec.H264, Fraction(1, 90000), bytes((1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0)))])
    with pytest.raises(Fmp4UsageError):
        Fmp4Writer([])


def test_opus_without_header_and_styp() -> None:
    writer = Fmp4Writer([Track(3, Codec.OPUS, Fraction(1, 48000), channels=2)])
    assert writer.timescale(3) == 48000
    init = writer.init_segment()
    assert [k for k, _ in iter_boxes(init)] == [b"ftyp", b"moov"]
    assert b"dOps" in init and b"Opus" in init
    assert writer.segment_type()[4:8] == b"styp"


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from([Fraction(1, 1000), Fraction(1, 90000), Fraction(1, 44100), Fraction(1001, 30000),
                     Fraction(1, 48000), Fraction(3, 7)]),
    st.sampled_from([90000, 48000, 44100, 1000]),
    st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 20), st.integers(0, 40)), min_size=1, max_size=30),
)
def test_samples_are_rescaled_exactly_whatever_the_time_bases(
    time_base: Fraction, timescale: int, steps: list[tuple[int, int, int]]
) -> None:
    """Every decode time, composition offset and duration is what
    :func:`engine.media.rescale` gives, whether or not the packets' time base
    divides the track's timescale."""
    track = Track(0, Codec.AAC, time_base, b"\x11\x90", sample_rate=48000)
    slot = TrackSlot(track, 1, timescale)
    packets = []
    dts = 0
    for step, cts, duration in steps:
        dts += step
        packets.append(Packet(0, dts + cts, dts, time_base, b"x", True, duration))
    tb = Fraction(1, timescale)
    samples = samples_for(slot, packets)
    for i, (p, s) in enumerate(zip(packets, samples, strict=True)):
        assert s.decode_time == rescale(p.dts, time_base, tb)
        assert s.composition_offset == rescale(p.pts, time_base, tb) - s.decode_time
        if p.duration:
            assert s.duration == rescale(p.dts + p.duration, time_base, tb) - s.decode_time
        elif i + 1 < len(packets):
            assert s.duration == rescale(packets[i + 1].dts, time_base, tb) - s.decode_time
