"""Annex B / AVCC conversion, avcC records, and the disposable-frame test."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcode.bitstream import (
    BitstreamError,
    annexb_to_avcc,
    avcc_to_annexb,
    build_avcc,
    extradata_to_avcc,
    is_disposable,
    iter_avcc,
    join_avcc,
    parse_avcc,
    split_annexb,
)

SPS = bytes.fromhex("6764001eacd940a02ff9610000030001000003003c8f162d96")
PPS = bytes.fromhex("68ebe3cb22c0")
IDR = b"\x65\x88\x84" + b"\x11" * 20
P_REF = b"\x41\x9a\x24" + b"\x22" * 10
B_NONREF = b"\x01\x9e\x42" + b"\x33" * 10


def test_annexb_to_avcc_drops_parameter_sets_and_keeps_slices() -> None:
    annexb = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + IDR
    assert split_annexb(annexb) == [SPS, PPS, IDR]
    avcc = annexb_to_avcc(annexb)
    assert avcc == len(IDR).to_bytes(4, "big") + IDR
    assert list(iter_avcc(avcc)) == [IDR]


def test_avcc_record_round_trip() -> None:
    record = build_avcc([SPS], [PPS])
    assert record[:4] == bytes([1, 0x64, 0x00, 0x1E])
    assert record[4] == 0xFF  # 4-byte lengths
    assert parse_avcc(record) == ([SPS], [PPS])
    assert extradata_to_avcc(avcc_to_annexb(record)) == record
    assert extradata_to_avcc(record) == record


def test_avcc_length_that_looks_like_a_start_code_is_read_as_a_length() -> None:
    unit = b"\x41" + b"\x00" * 299  # 300 bytes: length 00 00 01 2c
    data = join_avcc([unit])
    assert data.startswith(b"\x00\x00\x01")
    assert list(iter_avcc(data)) == [unit]


def test_disposable_frames() -> None:
    assert is_disposable(join_avcc([B_NONREF]))
    assert not is_disposable(join_avcc([P_REF]))
    assert not is_disposable(join_avcc([IDR]))
    assert not is_disposable(join_avcc([b"\x06\x05\x01\x00"]))  # SEI only: no slice


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x00\x00", b"\x00\x00\x00\x05\x41", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff\x41\x42"],
)
def test_truncated_avcc_raises(data: bytes) -> None:
    if not data:
        assert list(iter_avcc(data)) == []
        return
    with pytest.raises(BitstreamError):
        list(iter_avcc(data))


@pytest.mark.parametrize("record", [b"", b"\x01\x64", b"\x00" * 10, b"\x01\x64\x00\x1e\xff\xe1\x00\x30abc"])
def test_bad_avcc_records_raise(record: bytes) -> None:
    with pytest.raises(BitstreamError):
        parse_avcc(record)


def test_no_start_code_raises() -> None:
    with pytest.raises(BitstreamError):
        split_annexb(b"\x67\x64\x00")
    with pytest.raises(BitstreamError):
        build_avcc([], [PPS])


@given(st.binary(max_size=512))
def test_hostile_bytes_raise_only_bitstream_errors(data: bytes) -> None:
    for fn in (lambda: list(iter_avcc(data)), lambda: parse_avcc(data), lambda: extradata_to_avcc(data)):
        try:
            fn()
        except BitstreamError:
            pass
    try:
        is_disposable(data)
    except BitstreamError:
        pass


@given(st.lists(st.binary(min_size=1, max_size=64).filter(lambda u: b"\x00\x00" not in u and u[-1] != 0), max_size=8))
def test_avcc_annexb_round_trip(units: list[bytes]) -> None:
    units = [bytes([0x41]) + u for u in units]  # non-parameter-set NAL headers
    avcc = join_avcc(units)
    assert list(iter_avcc(avcc)) == units
    annexb = b"".join(b"\x00\x00\x00\x01" + u for u in units)
    if units:
        assert annexb_to_avcc(annexb) == avcc
