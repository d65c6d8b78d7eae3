"""Decoder configuration records, parameter sets and codec strings: known
vectors, and real records from ffmpeg encodes checked against ffprobe."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest

from engine.codecs import (
    CodecError,
    adts_header,
    codec_string,
    describe_track,
    parameter_sets,
    parse_asc,
    parse_av1c,
    parse_avcc,
    parse_hvcc,
    parse_opus_head,
)
from engine.codecs.aac import SAMPLE_RATES
from engine.codecs.hevc import hevc_codec_string
from engine.media import Codec, Track

TB = Fraction(1, 90000)


def _avcc(profile: int, compat: int, level: int, sps: bytes = b"", pps: bytes = b"") -> bytes:
    out = bytes((1, profile, compat, level, 0xFF, 0xE0 | (1 if sps else 0)))
    if sps:
        out += len(sps).to_bytes(2, "big") + sps
    out += bytes((1 if pps else 0,))
    if pps:
        out += len(pps).to_bytes(2, "big") + pps
    return out


def _hvcc(space: int, tier: int, profile: int, compat: int, constraints: bytes, level: int) -> bytes:
    return (
        bytes((1, (space << 6) | (tier << 5) | profile))
        + compat.to_bytes(4, "big")
        + constraints
        + bytes((level, 0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 0))
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (_avcc(0x64, 0x00, 0x1F), "avc1.64001f"),  # High@3.1
        (_avcc(0x4D, 0x40, 0x28), "avc1.4d4028"),  # Main@4.0
        (_avcc(0x42, 0xE0, 0x1E), "avc1.42e01e"),  # Constrained Baseline@3.0
    ],
)
def test_avc_codec_string_vectors(record: bytes, expected: str) -> None:
    assert codec_string(Track(0, Codec.H264, TB, record)) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (_hvcc(0, 0, 1, 0x60000000, bytes((0xB0, 0, 0, 0, 0, 0)), 93), "hvc1.1.6.L93.B0"),
        (_hvcc(0, 0, 2, 0x20000000, bytes((0x90, 0, 0, 0, 0, 0)), 120), "hvc1.2.4.L120.90"),
        (_hvcc(1, 1, 4, 0x82000000, bytes((0xB0, 0x23, 0, 0, 0, 0)), 120), "hvc1.A4.41.H120.B0.23"),
        (_hvcc(0, 0, 1, 0x60000000, bytes(6), 60), "hvc1.1.6.L60"),
    ],
)
def test_hevc_codec_string_vectors(record: bytes, expected: str) -> None:
    assert codec_string(Track(0, Codec.HEVC, TB, record)) == expected
    assert hevc_codec_string(parse_hvcc(record), "hev1") == "hev1" + expected[4:]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (bytes((0x81, 0x04, 0x4C, 0x00)), "av01.0.04M.10"),
        (bytes((0x81, 0x08, 0x0C, 0x00)), "av01.0.08M.08"),
        (bytes((0x81, 0x4D, 0xE0, 0x00)), "av01.2.13H.12"),
    ],
)
def test_av1_codec_string_vectors(record: bytes, expected: str) -> None:
    assert codec_string(Track(0, Codec.AV1, TB, record)) == expected


def _bits(*fields: tuple[int, int]) -> bytes:
    value = 0
    width = 0
    for v, n in fields:
        value = (value << n) | v
        width += n
    pad = -width % 8
    return (value << pad).to_bytes((width + pad) // 8, "big")


def test_asc_lc() -> None:
    config = parse_asc(bytes((0x11, 0x90)))
    assert (config.object_type, config.sample_rate, config.channels, config.sbr) == (2, 48000, 2, False)
    assert codec_string(Track(0, Codec.AAC, Fraction(1, 48000), bytes((0x11, 0x90)))) == "mp4a.40.2"


def test_asc_he_aac_explicit() -> None:
    asc = _bits((5, 5), (6, 4), (2, 4), (3, 4), (2, 5), (0, 3))
    config = parse_asc(asc)
    assert config.object_type == 5 and config.core_object_type == 2 and config.sbr and not config.ps
    assert (config.sample_rate, config.output_sample_rate, config.channels) == (24000, 48000, 2)
    track = describe_track(Track(0, Codec.AAC, Fraction(1, 48000), asc))
    assert (track.sample_rate, track.channels) == (48000, 2)
    assert codec_string(track) == "mp4a.40.5"
    # ADTS can only say "AAC-LC at the core rate": SBR is implicit there.
    header = adts_header(asc, 10)
    assert (header[2] >> 6, (header[2] >> 2) & 0x0F) == (1, 6)


def test_asc_parametric_stereo_mono_core() -> None:
    config = parse_asc(_bits((29, 5), (6, 4), (1, 4), (3, 4), (2, 5), (0, 3)))
    assert config.ps and config.channels == 2 and config.object_type == 29


def test_asc_escape_object_type_and_explicit_rate() -> None:
    config = parse_asc(_bits((31, 5), (10, 6), (15, 4), (12345, 24), (1, 4)))
    assert config.object_type == 42 and config.sample_rate == 12345 and config.channels == 1
    with pytest.raises(CodecError):
        adts_header(_bits((2, 5), (15, 4), (12345, 24), (1, 4), (0, 3)), 10)


@pytest.mark.parametrize("bad", [b"", b"\x10", bytes((0x00, 0x10)), _bits((2, 5), (13, 4), (2, 4), (0, 3))])
def test_asc_rejects(bad: bytes) -> None:
    with pytest.raises(CodecError):
        parse_asc(bad)


def test_adts_known_vector() -> None:
    assert adts_header(bytes((0x11, 0x90)), 100) == bytes.fromhex("fff14c800d7ffc")
    with pytest.raises(CodecError):
        adts_header(bytes((0x11, 0x90)), 8190)


def test_opus_head() -> None:
    head = b"OpusHead" + bytes((1, 2)) + (312).to_bytes(2, "little") + (48000).to_bytes(4, "little") + bytes(3)
    parsed = parse_opus_head(head)
    assert (parsed.channels, parsed.pre_skip, parsed.input_sample_rate) == (2, 312, 48000)
    assert describe_track(Track(0, Codec.OPUS, Fraction(1, 48000), head)).channels == 2
    with pytest.raises(CodecError):
        parse_opus_head(head[:18])
    with pytest.raises(CodecError):
        parse_opus_head(b"OpusTags" + head[8:])


def test_avcc_rejects_annexb_and_truncation() -> None:
    with pytest.raises(CodecError, match="Annex B"):
        parse_avcc(b"\x00\x00\x00\x01\x67\x64\x00\x1f")
    with pytest.raises(CodecError):
        parse_avcc(_avcc(0x64, 0, 0x1F, b"\x67\x64\x00\x1f")[:-3])


def test_missing_extradata() -> None:
    track = Track(0, Codec.H264, TB, width=320, height=240)
    assert describe_track(track) == track
    with pytest.raises(CodecError):
        codec_string(track)
    assert codec_string(Track(0, Codec.OPUS, Fraction(1, 48000))) == "opus"
    with pytest.raises(CodecError):
        codec_string(Track(0, Codec.VP8, TB, b"\x00"))


# --- real records from ffmpeg, checked against ffprobe --------------------------------------------------------

def _encode(ffmpeg: str, out: Path, size: str, rate: str, args: list[str]) -> Path:
    if not out.exists():
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
             "-i", f"testsrc2=size={size}:rate={rate}", "-frames:v", "3", "-s", size, *args, str(out)],
            check=True, timeout=120,
        )
    return out


def _probe(ffprobe: str, path: Path) -> dict[str, object]:
    result = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=width,height,profile,level,r_frame_rate", "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    streams: list[dict[str, object]] = json.loads(result.stdout)["streams"]
    return streams[0]


def _track(path: Path, codec: Codec) -> Track:
    with av.open(str(path)) as container:
        extradata = container.streams.video[0].codec_context.extradata
    assert extradata
    return Track(0, codec, TB, bytes(extradata))


H264_CASES = [
    ("1920x1080", "25", ["-pix_fmt", "yuv420p"]),
    ("854x480", "30000/1001", ["-pix_fmt", "yuv420p"]),
    ("426x240", "60", ["-pix_fmt", "yuv420p"]),
    ("176x144", "15", ["-pix_fmt", "yuv420p", "-profile:v", "baseline"]),
    ("641x359", "24", ["-pix_fmt", "yuv444p"]),  # High 4:4:4, odd size, crop unit 1
    ("640x362", "25", ["-pix_fmt", "yuv422p"]),  # High 4:2:2
    ("720x576", "25", ["-pix_fmt", "yuv420p", "-flags", "+ildct+ilme"]),  # field coding
    ("1280x718", "50", ["-pix_fmt", "yuv420p", "-x264-params", "scaling-list=jvt"]) ,
]


@pytest.mark.parametrize(("size", "rate", "args"), H264_CASES)
def test_h264_sps_against_ffprobe(ffmpeg: str, ffprobe: str, media_dir: Path, size: str, rate: str,
                                  args: list[str]) -> None:
    name = f"sps_{size}_{rate.replace('/', '_')}_{len(args)}.mp4"
    path = _encode(ffmpeg, media_dir / name, size, rate, ["-c:v", "libx264", "-preset", "ultrafast", *args])
    probe = _probe(ffprobe, path)
    track = describe_track(_track(path, Codec.H264))
    assert (track.width, track.height) == (probe["width"], probe["height"])
    assert (track.width, track.height) == tuple(int(v) for v in size.split("x"))
    assert track.frame_rate == Fraction(rate)
    config = parse_avcc(track.extradata)
    assert codec_string(track) == f"avc1.{config.profile:02x}{config.compatibility:02x}{probe['level']:02x}"
    sets = parameter_sets(track)
    assert [s[0] & 0x1F for s in sets] == [7, 8]


HEVC_CASES = [("1920x1080", "25"), ("642x362", "30"), ("1280x720", "30000/1001")]


@pytest.mark.parametrize(("size", "rate"), HEVC_CASES)
def test_hevc_sps_against_ffprobe(ffmpeg: str, ffprobe: str, media_dir: Path, size: str, rate: str) -> None:
    path = _encode(ffmpeg, media_dir / f"hevc_{size}_{rate.replace('/', '_')}.mp4", size, rate,
                   ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"])
    probe = _probe(ffprobe, path)
    track = describe_track(_track(path, Codec.HEVC))
    assert (track.width, track.height) == (probe["width"], probe["height"])
    assert (track.width, track.height) == tuple(int(v) for v in size.split("x"))
    assert track.frame_rate == Fraction(rate)
    string = codec_string(track)
    assert string.startswith(f"hvc1.1.6.L{probe['level']}.")  # Main profile
    assert [(s[0] >> 1) & 0x3F for s in parameter_sets(track)][:3] == [32, 33, 34]


@pytest.mark.parametrize("size", ["320x240", "642x362"])
def test_av1_sequence_header_against_ffprobe(ffmpeg: str, ffprobe: str, media_dir: Path, size: str) -> None:
    path = _encode(ffmpeg, media_dir / f"av1_{size}.mp4", size, "25",
                   ["-c:v", "libsvtav1", "-preset", "12", "-svtav1-params", "verbosity=0"])
    probe = _probe(ffprobe, path)
    track = describe_track(_track(path, Codec.AV1))
    assert (track.width, track.height) == (probe["width"], probe["height"])
    config = parse_av1c(track.extradata)
    assert config.bit_depth == 8 and config.subsampling_x == config.subsampling_y == 1
    assert codec_string(track) == f"av01.0.{config.level:02d}M.08"
    assert parameter_sets(track) == []


def test_aac_record_against_ffprobe(h264_aac_mp4: Path) -> None:
    with av.open(str(h264_aac_mp4)) as container:
        stream = container.streams.audio[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        rate = stream.codec_context.sample_rate
    track = describe_track(Track(1, Codec.AAC, Fraction(1, rate), extradata))
    assert track.sample_rate == 48000 and track.channels == 2
    assert codec_string(track) == "mp4a.40.2"
    assert all(v in SAMPLE_RATES for v in (track.sample_rate,))
