"""Building H.264 records and packets in the engine's convention: avcC from
parameter sets (checked byte for byte against FFmpeg's own records), encoder
headers normalised, Annex B access units turned into packets, the
disposable-frame test, and Annex B with parameter sets for keyframes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.codecs import (
    CodecError,
    avc_packet_from_annexb,
    avcc_to_annexb,
    build_avcc,
    extradata_to_avcc,
    is_disposable,
    iter_avcc,
    join_avcc,
    parse_avc_sps,
    parse_avcc,
    split_annexb,
)
from engine.media import Codec

SPS = bytes.fromhex("6764001eacd940a02ff9610000030001000003003c8f162d96")  # High, 640x360 at 30
PPS = bytes.fromhex("68ebe3cb22c0")
BASELINE_SPS = bytes.fromhex("6742c01edb0280bfe5c04400")
BASELINE_PPS = bytes.fromhex("68ce3c80")
AUD = b"\x09\xf0"
SEI = b"\x06\x05\x01\x00\x80"
IDR = b"\x65\x88\x84" + b"\x11" * 20
P_REF = b"\x41\x9a\x24" + b"\x22" * 10
B_NONREF = b"\x01\x9e\x42" + b"\x33" * 10
START = b"\x00\x00\x00\x01"


def _annexb(*units: bytes) -> bytes:
    return b"".join(START + u for u in units)


# --- avcC records ---------------------------------------------------------------------------------------------

def test_high_profile_record_vector() -> None:
    record = build_avcc([SPS], [PPS])
    assert record == (
        bytes([1, 0x64, 0x00, 0x1E, 0xFF, 0xE1]) + len(SPS).to_bytes(2, "big") + SPS
        + bytes([1]) + len(PPS).to_bytes(2, "big") + PPS
        + bytes([0xFD, 0xF8, 0xF8, 0x00])  # 4:2:0, 8-bit luma and chroma, no SPS extensions
    )
    config = parse_avcc(record)
    assert (config.profile, config.level, config.nal_length_size) == (100, 30, 4)
    assert config.sps == (SPS,) and config.pps == (PPS,)


def test_baseline_record_has_no_extension_and_keeps_length_size() -> None:
    record = build_avcc([BASELINE_SPS], [BASELINE_PPS], length_size=2)
    assert record[-len(BASELINE_PPS):] == BASELINE_PPS
    config = parse_avcc(record)
    assert (config.profile, config.compatibility, config.level) == (0x42, 0xC0, 0x1E)
    assert config.nal_length_size == 2


def test_extradata_in_either_shape_gives_the_same_record() -> None:
    record = build_avcc([SPS], [PPS])
    assert extradata_to_avcc(record) == record
    assert extradata_to_avcc(_annexb(SPS, PPS)) == record
    assert extradata_to_avcc(b"\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00") == record


@pytest.mark.parametrize(
    ("sps", "pps", "length_size"),
    [
        ([], [PPS], 4),
        ([SPS], [], 4),
        ([b"\x67"], [PPS], 4),  # too short for profile and level
        ([SPS], [PPS], 3),
        ([PPS], [PPS], 4),  # a PPS where the SPS belongs
        ([SPS], [SPS], 4),
        ([SPS, b""], [PPS], 4),
        ([SPS], [b"\xe8" + PPS[1:]], 4),  # forbidden bit set
        ([SPS], [b"\x68" + b"\x01" * 0x10000], 4),  # longer than a 16-bit length
        ([SPS] * 32, [PPS], 4),
        ([SPS], [PPS] * 256, 4),
        ([b"\x67\x64\x00\x1e"], [PPS], 4),  # High profile SPS that does not parse
    ],
)
def test_build_avcc_rejects(sps: list[bytes], pps: list[bytes], length_size: int) -> None:
    with pytest.raises(CodecError):
        build_avcc(sps, pps, length_size)


@pytest.mark.parametrize("extradata", [b"", b"\x00\x00\x00\x01" + PPS, _annexb(SPS), b"\x01\x64", b"\x67\x64\x00"])
def test_extradata_to_avcc_rejects(extradata: bytes) -> None:
    with pytest.raises(CodecError):
        extradata_to_avcc(extradata)


RECORD_CASES = [
    ["-pix_fmt", "yuv420p", "-profile:v", "baseline"],
    ["-pix_fmt", "yuv420p"],
    ["-pix_fmt", "yuv420p10le"],
    ["-pix_fmt", "yuv422p"],
    ["-pix_fmt", "yuv444p"],
]


@pytest.mark.parametrize("args", RECORD_CASES, ids=["baseline", "high", "high10", "high422", "high444"])
def test_records_match_ffmpeg(ffmpeg: str, media_dir: Path, args: list[str]) -> None:
    """The record built from the parameter sets is FFmpeg's own mp4 avcC,
    byte for byte, and the Annex B stream of the same encode gives it too."""
    mp4 = media_dir / f"avcc_{'_'.join(a.strip('-:') for a in args)}.mp4"
    raw = mp4.with_suffix(".h264")
    common = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10",
              "-frames:v", "2", "-c:v", "libx264", *args]
    subprocess.run([*common, str(mp4)], check=True, timeout=60)
    subprocess.run([*common, "-f", "h264", str(raw)], check=True, timeout=60)
    with av.open(str(mp4)) as c:
        expected = bytes(c.streams.video[0].codec_context.extradata or b"")
    config = parse_avcc(expected)
    assert build_avcc(config.sps, config.pps) == expected
    first_au = raw.read_bytes()
    units = split_annexb(first_au)
    header = _annexb(*(u for u in units if u[0] & 0x1F in (7, 8)))
    assert extradata_to_avcc(header) == expected
    sps = parse_avc_sps(config.sps[0])
    assert sps.bit_depth_luma == (10 if "yuv420p10le" in args else 8)


# --- packets --------------------------------------------------------------------------------------------------

def test_access_unit_becomes_a_packet_without_parameter_sets() -> None:
    annexb = _annexb(AUD, SPS) + b"\x00\x00\x01" + PPS + _annexb(SEI, IDR)
    packet = avc_packet_from_annexb(annexb)
    assert list(iter_avcc(packet)) == [SEI, IDR]
    assert avc_packet_from_annexb(_annexb(SPS, PPS)) == b""
    assert list(iter_avcc(avc_packet_from_annexb(_annexb(P_REF), 2), 2)) == [P_REF]


def test_length_that_looks_like_a_start_code_is_read_as_a_length() -> None:
    unit = b"\x41" + b"\x00" * 299  # 300 bytes: length 00 00 01 2c
    data = join_avcc([unit])
    assert data.startswith(b"\x00\x00\x01")
    assert list(iter_avcc(data)) == [unit]


def test_join_avcc_rejects_what_a_length_cannot_hold() -> None:
    with pytest.raises(CodecError):
        join_avcc([b""])
    with pytest.raises(CodecError):
        join_avcc([b"\x41" * 256], 1)
    with pytest.raises(CodecError):
        join_avcc([IDR], 3)
    assert join_avcc([b"\x41" * 255], 1)[0] == 255


def test_disposable_frames() -> None:
    assert is_disposable(join_avcc([B_NONREF]), Codec.H264)
    assert is_disposable(join_avcc([SEI, B_NONREF, B_NONREF]), Codec.H264)
    assert not is_disposable(join_avcc([B_NONREF, P_REF]), Codec.H264)
    assert not is_disposable(join_avcc([P_REF]), Codec.H264)
    assert not is_disposable(join_avcc([IDR]), Codec.H264)
    assert not is_disposable(join_avcc([SEI]), Codec.H264)  # no slice: nothing to drop
    assert not is_disposable(join_avcc([b"\x02\x01\xd0"]), Codec.HEVC)  # never claimed for HEVC
    assert is_disposable(join_avcc([B_NONREF], 2), Codec.H264, 2)
    with pytest.raises(CodecError):
        is_disposable(b"\x00\x00\x00\x09\x01", Codec.H264)


def test_annexb_repeats_parameter_sets_only_when_missing() -> None:
    sets = [SPS, PPS]
    assert avcc_to_annexb(join_avcc([IDR]), 4, sets) == _annexb(SPS, PPS, IDR)
    assert avcc_to_annexb(join_avcc([SPS, PPS, IDR]), 4, sets) == _annexb(SPS, PPS, IDR)
    assert avcc_to_annexb(join_avcc([P_REF])) == _annexb(P_REF)
    hevc_sps, hevc_idr = b"\x42\x01\x01", b"\x26\x01\xaf"
    assert avcc_to_annexb(join_avcc([hevc_idr]), 4, [hevc_sps], Codec.HEVC) == _annexb(hevc_sps, hevc_idr)
    assert avcc_to_annexb(join_avcc([hevc_sps, hevc_idr]), 4, [hevc_sps], Codec.HEVC) == _annexb(hevc_sps, hevc_idr)
    assert avcc_to_annexb(b"", 4, sets) == _annexb(SPS, PPS)


# --- hostile input --------------------------------------------------------------------------------------------

units = st.lists(st.binary(min_size=1, max_size=40), max_size=6)


@given(units, units, st.sampled_from([1, 2, 3, 4]))
def test_build_avcc_hostile(sps: list[bytes], pps: list[bytes], length_size: int) -> None:
    try:
        record = build_avcc(sps, pps, length_size)
    except CodecError:
        return
    config = parse_avcc(record)
    assert (list(config.sps), list(config.pps), config.nal_length_size) == (sps, pps, length_size)


@given(st.sampled_from([b"", b"\x01", START + SPS, START + SPS + START + PPS, START]), st.binary(max_size=200))
def test_extradata_and_access_units_hostile(prefix: bytes, rest: bytes) -> None:
    data = prefix + rest
    try:
        parse_avcc(extradata_to_avcc(data))
    except CodecError:
        pass
    try:
        packet = avc_packet_from_annexb(data)
    except CodecError:
        return
    assert all(u[0] & 0x1F not in (7, 8, 9) for u in iter_avcc(packet))
    assert is_disposable(packet, Codec.H264) in (True, False)


@given(st.binary(max_size=200), st.sampled_from([1, 2, 4]), st.sampled_from([Codec.H264, Codec.HEVC]))
def test_disposable_and_annexb_hostile(data: bytes, length_size: int, codec: Codec) -> None:
    for fn in (lambda: is_disposable(data, codec, length_size),
               lambda: avcc_to_annexb(data, length_size, [SPS], codec)):
        try:
            fn()
        except CodecError:
            pass


@given(st.lists(st.binary(min_size=1, max_size=64).filter(lambda u: b"\x00\x00" not in u and u[-1] != 0), max_size=8))
def test_join_split_round_trip(payloads: list[bytes]) -> None:
    nals = [b"\x41" + u for u in payloads]  # slice headers: nothing is dropped
    packet = join_avcc(nals)
    assert list(iter_avcc(packet)) == nals
    assert avc_packet_from_annexb(_annexb(*nals)) == packet
    assert split_annexb(avcc_to_annexb(packet)) == nals


def test_every_truncation_of_a_header() -> None:
    header = _annexb(SPS, PPS)
    for cut in range(len(header) + 1):
        try:
            record = extradata_to_avcc(header[:cut])
        except CodecError:
            continue
        assert parse_avcc(record).pps
