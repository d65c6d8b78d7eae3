"""Chunk stream vectors both ways (reader and writer), all header types,
extended timestamps, limits, and hypothesis on random and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtmp.chunk import ChunkReader, ChunkWriter, RtmpMessage, encode_basic_header, encode_chunk_header
from ingest.rtmp.errors import RtmpLimitError, RtmpProtocolError, RtmpUsageError
from ingest.rtmp.limits import RtmpLimits

H = bytes.fromhex


def read_all(data: bytes, mode: str, limits: RtmpLimits | None = None) -> list[RtmpMessage]:
    reader = ChunkReader(limits or RtmpLimits())
    out: list[RtmpMessage] = []
    pieces = [data] if mode == "whole" else [data[i : i + 1] for i in range(len(data))]
    for piece in pieces:
        reader.receive_data(piece)
        while (msg := reader.next_message()) is not None:
            out.append(msg)
    return out


@pytest.mark.parametrize(
    ("fmt", "csid", "args", "expected"),
    [
        (0, 3, (1000, 5, 20, 0), "03 0003e8 000005 14 00000000"),
        (0, 4, (0, 7, 9, 1), "04 000000 000007 09 01000000"),
        (1, 3, (20, 2, 9), "43 000014 000002 09"),
        (2, 3, (30,), "83 00001e"),
        (3, 3, (), "c3"),
        (0, 3, (0x01000000, 1, 8, 1), "03 ffffff 000001 08 01000000 01000000"),
        (1, 3, (0xFFFFFF, 1, 8), "43 ffffff 000001 08 00ffffff"),
        (2, 3, (0xFFFFFE,), "83 fffffe"),
        (3, 3, (0x01000000,), "c3 01000000"),
        (0, 64, (0, 0, 1, 0), "00 00 000000 000000 01 00000000"),
        (3, 319, (), "c0 ff"),
        (3, 320, (), "c1 0001"),
        (2, 65599, (1,), "81 ffff 000001"),
    ],
)
def test_chunk_header_vectors(fmt: int, csid: int, args: tuple[int, ...], expected: str) -> None:
    assert encode_chunk_header(fmt, csid, *args) == H(expected)


@pytest.mark.parametrize("csid", [0, 1, 65600])
def test_reserved_chunk_stream_ids_cannot_be_written(csid: int) -> None:
    with pytest.raises(RtmpUsageError):
        encode_basic_header(0, csid)


# Four messages on chunk stream 4, one per header type (see the writer test).
COMPRESSED = H(
    "04 0003e8 000003 08 01000000 616263"  # type 0: ts 1000, "abc"
    "44 000014 000002 09 6465"  # type 1: +20, new length and type
    "84 00001e 6667"  # type 2: +30
    "c4 6869"  # type 3: +30 again
)
COMPRESSED_MESSAGES = [
    RtmpMessage(8, 1, 1000, b"abc", 4),
    RtmpMessage(9, 1, 1020, b"de", 4),
    RtmpMessage(9, 1, 1050, b"fg", 4),
    RtmpMessage(9, 1, 1080, b"hi", 4),
]

LONG = bytes(range(200))
EXT_TS = 0x01000000
# A 200-byte message with an extended timestamp, split at 128 bytes; the
# continuation repeats the extended timestamp (ffmpeg and librtmp do).
EXTENDED_SPLIT = (
    H("05 ffffff 0000c8 09 01000000 01000000") + LONG[:128] + H("c5 01000000") + LONG[128:]
)
# The same without the repeat (some encoders).
EXTENDED_SPLIT_NO_REPEAT = H("05 ffffff 0000c8 09 01000000 01000000") + LONG[:128] + H("c5") + LONG[128:]
# A type 3 chunk starting a new message after an extended type 0: the field
# is added again.
EXTENDED_NEXT = H("05 ffffff 000001 09 01000000 01000000 aa c5 01000000 bb")


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (COMPRESSED, COMPRESSED_MESSAGES),
        (EXTENDED_SPLIT, [RtmpMessage(9, 1, EXT_TS, LONG, 5)]),
        (EXTENDED_SPLIT_NO_REPEAT, [RtmpMessage(9, 1, EXT_TS, LONG, 5)]),
        (EXTENDED_NEXT, [RtmpMessage(9, 1, EXT_TS, b"\xaa", 5), RtmpMessage(9, 1, 2 * EXT_TS, b"\xbb", 5)]),
    ],
)
def test_reader_vectors(data: bytes, expected: list[RtmpMessage], mode: str) -> None:
    assert read_all(data, mode) == expected
    # With the first bytes of another chunk trailing, nothing more comes out.
    assert read_all(data + H("06 0000"), mode) == expected


def test_writer_produces_the_same_vectors() -> None:
    writer = ChunkWriter()
    assert b"".join(writer.write(msg) for msg in COMPRESSED_MESSAGES) == COMPRESSED
    assert ChunkWriter().write(RtmpMessage(9, 1, EXT_TS, LONG, 5)) == EXTENDED_SPLIT
    writer = ChunkWriter()
    assert writer.write(RtmpMessage(9, 1, EXT_TS, b"\xaa", 5)) + writer.write(
        RtmpMessage(9, 1, 2 * EXT_TS, b"\xbb", 5)
    ) == EXTENDED_NEXT


def test_timestamp_deltas_wrap_at_32_bits() -> None:
    data = H("04 ffffff 000001 08 01000000 fffffff0 00 84 000020 01")
    assert [m.timestamp for m in read_all(data, "whole")] == [0xFFFFFFF0, 0x10]


def test_interleaved_chunk_streams_and_set_chunk_size() -> None:
    reader = ChunkReader(RtmpLimits())
    a = ChunkWriter(64).write(RtmpMessage(9, 1, 0, bytes(100), 6))
    b = ChunkWriter(64).write(RtmpMessage(8, 1, 0, b"\x01" * 70, 4))
    # Interleave: first chunk of each, then the continuations.
    first_a, rest_a = a[:12 + 64], a[12 + 64 :]
    first_b, rest_b = b[:12 + 64], b[12 + 64 :]
    reader.set_chunk_size(64)
    reader.receive_data(first_a + first_b + rest_b + rest_a)
    got = [reader.next_message(), reader.next_message(), reader.next_message()]
    assert got == [RtmpMessage(8, 1, 0, b"\x01" * 70, 4), RtmpMessage(9, 1, 0, bytes(100), 6), None]


def test_abort_drops_the_partial_message() -> None:
    reader = ChunkReader(RtmpLimits())
    data = ChunkWriter().write(RtmpMessage(9, 1, 0, bytes(300), 6))
    reader.receive_data(data[: 12 + 128])
    assert reader.next_message() is None
    assert reader.buffered == 128
    reader.abort(6)
    assert reader.buffered == 0
    # A fresh message on the same chunk stream reads normally.
    reader.receive_data(H("86 000000") + bytes(128) + H("c6") + bytes(128) + H("c6") + bytes(44))
    assert reader.next_message() == RtmpMessage(9, 1, 0, bytes(300), 6)


@pytest.mark.parametrize("size", [0, 0x80000000])
def test_invalid_chunk_sizes(size: int) -> None:
    with pytest.raises(RtmpProtocolError):
        ChunkReader(RtmpLimits()).set_chunk_size(size)


def test_chunk_size_over_the_limit() -> None:
    with pytest.raises(RtmpLimitError, match="chunk size"):
        ChunkReader(RtmpLimits(max_chunk_size=4096)).set_chunk_size(4097)


def test_message_size_limit() -> None:
    with pytest.raises(RtmpLimitError, match="exceeds"):
        read_all(H("04 000000 000401 09 01000000"), "whole", RtmpLimits(max_message_size=1024))


def test_chunk_stream_count_limit() -> None:
    data = b"".join(encode_chunk_header(0, csid, 0, 1, 9, 1) + b"x" for csid in range(2, 10))
    assert len(read_all(data, "whole", RtmpLimits(max_chunk_streams=8))) == 8
    with pytest.raises(RtmpLimitError, match="chunk streams"):
        read_all(data, "whole", RtmpLimits(max_chunk_streams=7))


def test_pending_bytes_limit() -> None:
    data = b"".join(encode_chunk_header(0, csid, 0, 1000, 9, 1) + bytes(128) for csid in range(2, 12))
    with pytest.raises(RtmpLimitError, match="unfinished"):
        read_all(data, "whole", RtmpLimits(max_pending_bytes=1000))


@pytest.mark.parametrize("first", ["44 000000 000001 09", "84 000000", "c4"])
def test_compressed_header_without_history(first: str) -> None:
    with pytest.raises(RtmpProtocolError, match="before any type 0"):
        read_all(H(first) + b"x", "whole")


def test_new_header_inside_a_message() -> None:
    with pytest.raises(RtmpProtocolError, match="middle"):
        read_all(H("04 000000 000200 09 01000000") + bytes(128) + H("44 000000 000001 09") + b"x", "whole")


messages_strategy = st.lists(
    st.builds(
        RtmpMessage,
        type_id=st.integers(1, 255),
        stream_id=st.integers(0, 3),
        timestamp=st.integers(0, 0xFFFFFFFF),
        payload=st.binary(max_size=700),
        csid=st.integers(2, 400),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(messages_strategy, st.integers(1, 1000), st.integers(1, 300))
def test_writer_reader_round_trip(messages: list[RtmpMessage], chunk_size: int, step: int) -> None:
    # Timestamps per chunk stream must not go backwards for header compression
    # to be used; the writer falls back to type 0 when they do, so any order works.
    writer = ChunkWriter(chunk_size)
    data = b"".join(writer.write(msg) for msg in messages)
    reader = ChunkReader(RtmpLimits())
    reader.set_chunk_size(chunk_size)
    got = []
    for i in range(0, len(data), step):
        reader.receive_data(data[i : i + step])
        while (msg := reader.next_message()) is not None:
            got.append(msg)
    assert got == messages


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    limits = RtmpLimits(max_message_size=4096, max_pending_bytes=8192, max_chunk_streams=8)
    reader = ChunkReader(limits)
    try:
        reader.receive_data(data)
        while reader.next_message() is not None:
            pass
    except RtmpProtocolError:
        return
    assert reader.buffered <= len(data)
