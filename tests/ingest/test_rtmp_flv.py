"""FLV tag bodies: legacy AVC/AAC, enhanced RTMP video and audio, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.media import Codec
from ingest.rtmp.errors import RtmpProtocolError, RtmpUnsupportedCodecError
from ingest.rtmp.flv import MediaTag, TagRole, aac_rate_and_channels, parse_audio, parse_video

H = bytes.fromhex


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("17 00 000000 01640028", MediaTag(Codec.H264, TagRole.CONFIG, H("01640028"), True)),
        ("17 01 000042 00000001 65", MediaTag(Codec.H264, TagRole.FRAME, H("0000000165"), True, 0x42)),
        ("27 01 ffffdf 00000001 41", MediaTag(Codec.H264, TagRole.FRAME, H("0000000141"), False, -33)),
        ("47 01 000000 00", MediaTag(Codec.H264, TagRole.FRAME, H("00"), True, 0)),
        ("17 02 000000", MediaTag(Codec.H264, TagRole.END, b"", True)),
        ("1c 00 000000 01", MediaTag(Codec.HEVC, TagRole.CONFIG, H("01"), True)),
        # Enhanced RTMP: ExHeader bit, frame type, packet type, FourCC.
        ("90 68766331 0102", MediaTag(Codec.HEVC, TagRole.CONFIG, H("0102"), True)),
        ("91 68766331 000021 0000000126", MediaTag(Codec.HEVC, TagRole.FRAME, H("0000000126"), True, 0x21)),
        ("a1 68766331 fffffe 00000001", MediaTag(Codec.HEVC, TagRole.FRAME, H("00000001"), False, -2)),
        ("93 68766331 00000001", MediaTag(Codec.HEVC, TagRole.FRAME, H("00000001"), True, 0)),
        ("92 68766331", MediaTag(Codec.HEVC, TagRole.END, b"", True)),
        ("90 61763031 81", MediaTag(Codec.AV1, TagRole.CONFIG, H("81"), True)),
        ("a1 61763031 12000a", MediaTag(Codec.AV1, TagRole.FRAME, H("12000a"), False, 0)),
        ("91 61766331 000000 00000002 6588", MediaTag(Codec.H264, TagRole.FRAME, H("000000026588"), True, 0)),
        ("90 76703039 01", MediaTag(Codec.VP9, TagRole.CONFIG, H("01"), True)),
    ],
)
def test_video_vectors(body: str, expected: MediaTag) -> None:
    assert parse_video(H(body)) == expected


@pytest.mark.parametrize("body", ["", "57 00", "d0 68766331 00", "94 68766331 02 0009"])
def test_video_bodies_without_media(body: str) -> None:
    # Empty, legacy command frame, enhanced command frame, HDR metadata.
    assert parse_video(H(body)) is None


@pytest.mark.parametrize(
    ("body", "match"),
    [("12 00", "Sorenson"), ("14 00", "VP6"), ("90 61626364", "FourCC"), ("95 61763031", "MPEG-2 TS"),
     ("96 00", "multitrack"), ("97 00", "ModEx")],
)
def test_unsupported_video(body: str, match: str) -> None:
    with pytest.raises(RtmpUnsupportedCodecError, match=match):
        parse_video(H(body))


@pytest.mark.parametrize("body", ["17", "17 01 0000", "17 05 000000", "91 6876", "91 68766331 00", "9f 68766331"])
def test_malformed_video(body: str) -> None:
    with pytest.raises(RtmpProtocolError):
        parse_video(H(body))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("af 00 1190", MediaTag(Codec.AAC, TagRole.CONFIG, H("1190"), True)),
        ("af 01 2110", MediaTag(Codec.AAC, TagRole.FRAME, H("2110"), True)),
        ("a0 01 21", MediaTag(Codec.AAC, TagRole.FRAME, H("21"), True)),
        ("90 4f707573 4f707573486561640102", MediaTag(Codec.OPUS, TagRole.CONFIG, H("4f707573486561640102"), True)),
        ("91 4f707573 fc", MediaTag(Codec.OPUS, TagRole.FRAME, H("fc"), True)),
        ("91 6d703461 2110", MediaTag(Codec.AAC, TagRole.FRAME, H("2110"), True)),
        ("92 6d703461", MediaTag(Codec.AAC, TagRole.END, b"", True)),
    ],
)
def test_audio_vectors(body: str, expected: MediaTag) -> None:
    assert parse_audio(H(body)) == expected


@pytest.mark.parametrize(("body", "match"), [("2f ff", "MP3"), ("b6", "Speex"), ("90 2e6d7033", "FourCC"),
                                             ("95 00", "multitrack")])
def test_unsupported_audio(body: str, match: str) -> None:
    with pytest.raises(RtmpUnsupportedCodecError, match=match):
        parse_audio(H(body))


@pytest.mark.parametrize("body", ["af", "af 02 00", "91 4f70", "93 4f707573"])
def test_malformed_audio(body: str) -> None:
    with pytest.raises(RtmpProtocolError):
        parse_audio(H(body))


@pytest.mark.parametrize(
    ("asc", "expected"),
    [("1190", (48000, 2)), ("1210", (44100, 2)), ("1408", (16000, 1)), ("17805dc010", (48000, 2)),
     ("13b8", (None, 8)), ("11", (None, None)), ("", (None, None))],
)
def test_aac_config_summary(asc: str, expected: tuple[int | None, int | None]) -> None:
    rate, channels = aac_rate_and_channels(H(asc))
    if asc == "13b8":  # index 7 = 22050, channel configuration 7 = 7.1
        assert (rate, channels) == (22050, 8)
    else:
        assert (rate, channels) == expected


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    for parse in (parse_audio, parse_video):
        try:
            parse(data)
        except RtmpProtocolError:
            pass
    aac_rate_and_channels(data)
