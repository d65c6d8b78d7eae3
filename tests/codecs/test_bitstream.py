"""AVCC <-> Annex B conversion, NAL unit listing and emulation prevention."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.codecs import (
    CodecError,
    annexb_to_avcc,
    avcc_to_annexb,
    is_random_access,
    iter_avcc,
    nal_unit_types,
    split_annexb,
)
from engine.codecs.bits import BitReader, escape_rbsp, unescape_rbsp
from engine.media import Codec


def _nal(payload: bytes) -> bytes:
    """A well-formed NAL unit: escaped payload, never ending in a zero byte."""
    return escape_rbsp(payload) + b"\x80"


nal_lists = st.lists(st.binary(min_size=0, max_size=64).map(_nal), min_size=0, max_size=8)


def _avcc(nals: list[bytes], size: int = 4) -> bytes:
    return b"".join(len(n).to_bytes(size, "big") + n for n in nals)


@given(nal_lists, st.sampled_from([1, 2, 4]))
def test_avcc_annexb_round_trip(nals: list[bytes], size: int) -> None:
    avcc = _avcc([n[:255] for n in nals] if size == 1 else nals, size)
    annexb = avcc_to_annexb(avcc, size)
    assert annexb_to_avcc(annexb, size) == avcc
    assert split_annexb(annexb) == list(iter_avcc(avcc, size))


@given(nal_lists)
def test_annexb_three_byte_start_codes_and_trailing_zeros(nals: list[bytes]) -> None:
    stream = b"".join(b"\x00\x00\x01" + n + b"\x00" for n in nals)
    assert split_annexb(stream) == nals


@given(st.binary(max_size=200))
def test_escape_round_trip(data: bytes) -> None:
    escaped = escape_rbsp(data)
    assert b"\x00\x00\x00" not in escaped and b"\x00\x00\x01" not in escaped and b"\x00\x00\x02" not in escaped
    assert unescape_rbsp(escaped) == data


@given(st.binary(max_size=100), st.sampled_from([1, 2, 4]))
def test_avcc_to_annexb_hostile(data: bytes, size: int) -> None:
    try:
        avcc_to_annexb(data, size)
    except CodecError:
        pass


@given(st.binary(max_size=100))
def test_annexb_to_avcc_hostile(data: bytes) -> None:
    try:
        out = annexb_to_avcc(data)
    except CodecError:
        return
    assert avcc_to_annexb(out) or not out


def test_truncated_and_zero_length() -> None:
    packet = _avcc([b"\x65\x88\x80", b"\x06\x05\x80"])
    for cut in range(1, len(packet)):
        if cut in (7, len(packet)):
            continue
        with pytest.raises(CodecError):
            avcc_to_annexb(packet[:cut])
    with pytest.raises(CodecError):
        avcc_to_annexb(b"\x00\x00\x00\x00")
    with pytest.raises(CodecError):
        avcc_to_annexb(packet, 3)
    with pytest.raises(CodecError):
        split_annexb(b"\x65\x88\x00\x00\x01\x41")


def test_nal_types_and_random_access() -> None:
    h264 = _avcc([b"\x09\xf0", b"\x06\x05\x80", b"\x65\x88\x80"])
    assert nal_unit_types(h264, Codec.H264) == [9, 6, 5]
    assert is_random_access(h264, Codec.H264)
    assert not is_random_access(_avcc([b"\x41\x9a\x80"]), Codec.H264)
    hevc = _avcc([b"\x40\x01\x0c", b"\x26\x01\xaf"])  # VPS, IDR_W_RADL
    assert nal_unit_types(hevc, Codec.HEVC) == [32, 19]
    assert is_random_access(hevc, Codec.HEVC)
    assert not is_random_access(_avcc([b"\x02\x01\xd0"]), Codec.HEVC)  # TRAIL_R
    with pytest.raises(CodecError):
        nal_unit_types(h264, Codec.AAC)


def test_bit_reader_exp_golomb() -> None:
    # 1 | 010 | 011 | 00100 | 00101 -> 0, 1, 2, 3, 4 ; se: 0, 1, -1, 2, -2
    data = bytes((0b10100110, 0b01000010, 0b10000000))
    r = BitReader(data)
    assert [r.ue() for _ in range(5)] == [0, 1, 2, 3, 4]
    r = BitReader(data)
    assert [r.se() for _ in range(5)] == [0, 1, -1, 2, -2]
    with pytest.raises(CodecError):
        BitReader(b"\x00" * 8).ue()
    with pytest.raises(CodecError):
        BitReader(b"\x01").u(9)
