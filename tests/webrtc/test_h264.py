"""H.264 framing between WebRTC and the media model, with real x264 output
and hostile input."""

from __future__ import annotations

import subprocess

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codecs import iter_avcc, parse_avcc, split_annexb
from webrtc.errors import BitstreamError
from webrtc.h264 import AnnexBToAvcc, avcc_to_annexb_keyframe, build_avcc, vp8_is_keyframe


@pytest.fixture(scope="module")
def annexb_units(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> list[bytes]:
    """Access units of a real libx264 Annex B stream (2 s, GOP 10)."""
    out = tmp_path_factory.mktemp("h264") / "clip.h264"
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10",
         "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "10", "-pix_fmt", "yuv420p",
         "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(out)],
        check=True, timeout=60,
    )
    with av.open(str(out)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def test_annexb_to_avcc_tracks_parameter_sets(annexb_units: list[bytes]) -> None:
    conv = AnnexBToAvcc()
    units = [conv.push(u) for u in annexb_units]
    assert all(u is not None for u in units)
    first = units[0]
    assert first is not None and first.keyframe and first.new_config is not None
    assert (first.width, first.height) == (320, 240)
    config = parse_avcc(first.new_config)
    assert len(config.sps) == 1 and len(config.pps) == 1
    assert config.nal_length_size == 4
    keyframes = [i for i, u in enumerate(units) if u is not None and u.keyframe]
    assert keyframes == [0, 10]
    for u in units[1:]:
        assert u is not None and u.new_config is None  # same SPS/PPS repeated: no new record
        types = [nal[0] & 0x1F for nal in iter_avcc(u.avcc)]
        assert 7 not in types and 8 not in types and 9 not in types


def test_round_trip_decodes_with_pyav(annexb_units: list[bytes]) -> None:
    """AVCC with the built record decodes; Annex B rebuilt for WebRTC decodes
    from any keyframe without out-of-band parameter sets."""
    conv = AnnexBToAvcc()
    units = [u for u in (conv.push(x) for x in annexb_units) if u is not None]
    assert conv.config is not None
    dec = av.CodecContext.create("h264", "r")
    dec.extradata = conv.config
    frames = sum(len(dec.decode(av.Packet(u.avcc))) for u in units) + len(dec.decode(None))
    assert frames == len(units)
    sets = [*parse_avcc(conv.config).sps, *parse_avcc(conv.config).pps]
    annexb = [avcc_to_annexb_keyframe(u.avcc, u.keyframe, sets) for u in units[10:]]
    assert [nal[0] & 0x1F for nal in split_annexb(annexb[0])][:2] == [7, 8]
    assert [nal[0] & 0x1F for nal in split_annexb(annexb[1])] == [1]
    dec2 = av.CodecContext.create("h264", "r")
    frames2 = sum(len(dec2.decode(av.Packet(a))) for a in annexb) + len(dec2.decode(None))
    assert frames2 == len(annexb)


def test_nothing_before_parameter_sets() -> None:
    conv = AnnexBToAvcc()
    assert conv.push(b"\x00\x00\x00\x01\x65\x88\x84") is None
    assert conv.config is None


def test_build_avcc_round_trips_through_parser() -> None:
    sps, pps = bytes.fromhex("6742c01edb0280bfe5c04400"), bytes.fromhex("68ce3c80")
    record = build_avcc([sps], [pps])
    config = parse_avcc(record)
    assert (config.profile, config.compatibility, config.level) == (0x42, 0xC0, 0x1E)
    assert config.sps == (sps,) and config.pps == (pps,)
    with pytest.raises(BitstreamError):
        build_avcc([], [pps])
    with pytest.raises(BitstreamError):
        build_avcc([b"\x67"], [pps])
    with pytest.raises(BitstreamError):
        build_avcc([sps], [pps], length_size=3)


def test_forbidden_bit_and_malformed_avcc_rejected() -> None:
    with pytest.raises(BitstreamError):
        AnnexBToAvcc().push(b"\x00\x00\x01\xe5\x00")
    with pytest.raises(BitstreamError):
        AnnexBToAvcc().push(b"garbage without a start code")
    with pytest.raises(BitstreamError):
        avcc_to_annexb_keyframe(b"\x00\x00\x00\x09\x65", True, [])


def test_vp8_keyframe_bit() -> None:
    assert vp8_is_keyframe(b"\x10\x02\x00\x9d\x01\x2a")
    assert not vp8_is_keyframe(b"\x11\x02\x00")
    assert not vp8_is_keyframe(b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_annexb_never_crashes(data: bytes) -> None:
    conv = AnnexBToAvcc()
    for chunk in (data, b"\x00\x00\x00\x01" + data, b"\x00\x00\x01\x67" + data + b"\x00\x00\x01\x68\xce"):
        try:
            unit = conv.push(chunk)
        except BitstreamError:
            continue
        if unit is not None:
            list(iter_avcc(unit.avcc))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_hostile_avcc_never_crashes(data: bytes, key: bool) -> None:
    try:
        out = avcc_to_annexb_keyframe(data, key, [b"\x67\x42\x00\x1e", b"\x68\xce"])
    except BitstreamError:
        return
    assert out.startswith(b"\x00\x00\x00\x01") or out == b""


def test_truncated_real_units(annexb_units: list[bytes]) -> None:
    """Every prefix of a real keyframe either parses or raises BitstreamError."""
    key = annexb_units[0]
    for cut in range(0, len(key), max(1, len(key) // 50)):
        try:
            AnnexBToAvcc().push(key[:cut])
        except BitstreamError:
            pass


