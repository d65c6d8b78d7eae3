"""Every record and parameter-set parser, fed arbitrary, truncated and
mutated bytes, raises nothing but CodecError."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.codecs import (
    CodecError,
    adts_header,
    codec_string,
    describe_track,
    parameter_sets,
    parse_asc,
    parse_av1c,
    parse_avc_sps,
    parse_avcc,
    parse_hevc_sps,
    parse_hvcc,
    parse_opus_head,
)
from engine.codecs.av1 import iter_obus, parse_sequence_header
from engine.codecs.hevc import parse_vps_frame_rate
from engine.media import Codec, Track

PARSERS: list[Callable[[bytes], object]] = [
    parse_avcc, parse_hvcc, parse_av1c, parse_asc, parse_opus_head, parse_avc_sps, parse_hevc_sps,
    parse_vps_frame_rate, iter_obus, parse_sequence_header, lambda b: adts_header(b, 100),
]


def _all_codecs(data: bytes) -> None:
    for codec in Codec:
        track = Track(0, codec, Fraction(1, 90000), data)
        for fn in (describe_track, codec_string, parameter_sets):
            try:
                fn(track)
            except CodecError:
                pass


def _check(data: bytes) -> None:
    for parse in PARSERS:
        try:
            parse(data)
        except CodecError:
            pass
    _all_codecs(data)


@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    _check(data)


@given(st.sampled_from([b"\x01", b"\x81", b"\x67", b"\x42\x01", b"\x40\x01", b"OpusHead"]), st.binary(max_size=200))
def test_plausible_prefixes(prefix: bytes, rest: bytes) -> None:
    _check(prefix + rest)


@pytest.fixture(scope="module")
def real_records(ffmpeg: str, media_dir: Path) -> list[bytes]:
    out = []
    for codec, ext in (("libx264", "h264"), ("libx265", "hevc"), ("libsvtav1", "av1")):
        path = media_dir / f"hostile_{ext}.mp4"
        if not path.exists():
            subprocess.run(
                [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                 "testsrc2=size=320x240:rate=25", "-frames:v", "2", "-c:v", codec, str(path)],
                check=True, timeout=120,
            )
        with av.open(str(path)) as container:
            out.append(bytes(container.streams.video[0].codec_context.extradata or b""))
    return out


def test_every_truncation_of_real_records(real_records: list[bytes]) -> None:
    for record in real_records:
        for cut in range(len(record)):
            _check(record[:cut])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(st.data())
def test_mutated_real_records(real_records: list[bytes], data: st.DataObject) -> None:
    record = bytearray(data.draw(st.sampled_from(real_records)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(record) - 1))
        record[pos] = data.draw(st.integers(0, 255))
    _check(bytes(record))
