"""AMF0 vectors both ways, round trips of generated values, limits and
hostile input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtmp import amf0
from ingest.rtmp.amf0 import UNDEFINED, AmfDate, AmfLimits, EcmaArray
from ingest.rtmp.errors import RtmpLimitError, RtmpProtocolError, RtmpUsageError

H = bytes.fromhex

VECTORS: list[tuple[amf0.AmfValue, str]] = [
    (1.5, "00 3ff8000000000000"),
    (0.0, "00 0000000000000000"),
    (True, "01 01"),
    (False, "01 00"),
    ("connect", "02 0007 636f6e6e656374"),
    ("", "02 0000"),
    (None, "05"),
    (UNDEFINED, "06"),
    ({"app": "live"}, "03 0003 617070 02 0004 6c697665 0000 09"),
    ({}, "03 0000 09"),
    (EcmaArray({"width": 640.0}), "08 00000001 0005 7769647468 00 4084000000000000 0000 09"),
    ([1.0, None], "0a 00000002 00 3ff0000000000000 05"),
    (AmfDate(1000.0, 0), "0b 408f400000000000 0000"),
    ({"a": {"b": [True]}}, "03 0001 61 03 0001 62 0a 00000001 01 01 0000 09 0000 09"),
]


@pytest.mark.parametrize(("value", "hexbytes"), VECTORS)
def test_vectors_both_ways(value: amf0.AmfValue, hexbytes: str) -> None:
    data = H(hexbytes)
    assert amf0.encode(value) == data
    assert amf0.decode(data) == [value]
    # Trailing bytes are another value; a truncated value is an error.
    assert amf0.decode(data + H("05")) == [value, None]
    for cut in range(1, len(data)):
        with pytest.raises(RtmpProtocolError):
            amf0.decode(data[:cut])


def test_long_string_both_ways() -> None:
    s = "x" * 70000
    data = amf0.encode(s)
    assert data[:5] == H("0c 00011170")
    assert amf0.decode(data) == [s]
    assert amf0.decode(H("0c 00000002 6869")) == ["hi"]


def test_command_sequence() -> None:
    data = amf0.encode("_result", 1, None, 2.0)
    assert amf0.decode(data) == ["_result", 1.0, None, 2.0]


def test_ecma_array_count_is_only_a_hint() -> None:
    assert amf0.decode(H("08 00000063 0001 61 05 0000 09")) == [EcmaArray({"a": None})]


def test_latin1_strings_are_kept() -> None:
    assert amf0.decode(H("02 0002 e9e8")) == ["\u00e9\u00e8"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("07 0001", "references"),
        ("0d", "unknown AMF0 marker"),
        ("11 00", "unknown AMF0 marker"),
        ("03 0000 05", "object end"),
        ("0a ffffffff 05", "strict array"),
    ],
)
def test_malformed(data: str, match: str) -> None:
    with pytest.raises(RtmpProtocolError, match=match):
        amf0.decode(H(data))


def test_depth_limit() -> None:
    nested: amf0.AmfValue = 1.0
    for _ in range(10):
        nested = [nested]
    data = amf0.encode(nested)
    assert amf0.decode(data, AmfLimits(max_depth=10)) == [nested]
    with pytest.raises(RtmpLimitError, match="nesting"):
        amf0.decode(data, AmfLimits(max_depth=9))
    # Deep input does not exhaust the Python stack.
    with pytest.raises(RtmpLimitError):
        amf0.decode(H("0a 00000001") * 100000)


def test_item_limit() -> None:
    data = amf0.encode([None] * 50)
    assert len(amf0.decode(data, AmfLimits(max_items=51))[0]) == 50  # type: ignore[arg-type]
    with pytest.raises(RtmpLimitError, match="values"):
        amf0.decode(data, AmfLimits(max_items=50))


@pytest.mark.parametrize("value", [object(), {1: 2}, {"": 1}, b"bytes"])
def test_unencodable_values_are_usage_errors(value: object) -> None:
    with pytest.raises(RtmpUsageError):
        amf0.encode(value)  # type: ignore[arg-type]


def test_as_number() -> None:
    assert amf0.as_number(3) == 3.0
    assert amf0.as_number("29.97") == 29.97
    assert amf0.as_number(True) is None
    assert amf0.as_number(math.nan) is None
    assert amf0.as_number("fast") is None
    assert amf0.as_number(None) is None


keys = st.text(min_size=1, max_size=20)
scalars = (
    st.floats(allow_nan=False)
    | st.booleans()
    | st.text(max_size=50)
    | st.none()
    | st.just(UNDEFINED)
    | st.builds(AmfDate, st.floats(allow_nan=False), st.integers(-32768, 32767))
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(keys, children, max_size=5)
    | st.dictionaries(keys, children, max_size=5).map(EcmaArray),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, max_size=4))
def test_round_trip(items: list[amf0.AmfValue]) -> None:
    decoded = amf0.decode(amf0.encode(*items))
    assert decoded == items
    assert [type(x) for x in decoded] == [type(x) for x in items]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=500))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    try:
        amf0.decode(data, AmfLimits(max_depth=8, max_items=200))
    except RtmpProtocolError:
        pass
