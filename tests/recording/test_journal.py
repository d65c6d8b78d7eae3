"""The journal and the playlists rebuilt from it: vectors both ways, and
hypothesis on cut and garbled journals (a crash can leave any prefix of a
journal, and a damaged disk any bytes): reading never raises, keeps every
line before the damage, and what is read renders valid playlists."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packager.recording.errors import JournalError, RecordingIdError
from packager.recording.ids import check_recording_id, new_recording_id, recording_prefix
from packager.recording.journal import (
    decode_line,
    encode_line,
    init_record,
    parse_journal,
    segment_record,
    start_record,
)
from packager.recording.playlists import manifest, render_media, render_multivariant, state_name

REC = "rec_abcdefghijklmnopqrst"


def sample_journal(segments: int = 4, reconnect_at: int | None = 2) -> bytes:
    lines = [start_record(REC, "alice", 1000.0, "fmp4"),
             init_record("src", "init_a_0.mp4", ["avc1.64001f", "mp4a.40.2"], (640, 360))]
    for n in range(segments):
        if n == reconnect_at:
            lines.append(init_record("src", "init_a_1.mp4", ["avc1.64001f", "mp4a.40.2"], (640, 360)))
        lines.append(segment_record("src", f"seg_a_{n}.m4s", Fraction(2002, 1000), n == reconnect_at, 1000 + n))
    return b"".join(encode_line(r) for r in lines)


def test_ids_are_validated() -> None:
    made = new_recording_id()
    assert check_recording_id(made) == made
    assert recording_prefix(made) == f"recordings/{made}/"
    for bad in ("", "rec_", "rec_../../etc/passwd", "REC_abcdefghijklmnopqrst", "rec_abcdefghijklmnopqrs1", None, 5):
        with pytest.raises(RecordingIdError):
            check_recording_id(bad)


def test_line_round_trip_and_damage() -> None:
    record = segment_record("src", "seg_1.m4s", Fraction(1, 3), False, 7)
    line = encode_line(record)
    assert line.endswith(b"\n")
    assert decode_line(line[:-1]) == record
    flipped = bytearray(line[:-1])
    flipped[-3] ^= 0x01
    with pytest.raises(JournalError):
        decode_line(bytes(flipped))


def test_full_journal_renders_vod_with_discontinuity() -> None:
    state = parse_journal(sample_journal() + encode_line({"t": "close", "at": 1010.0, "interrupted": False}))
    assert state is not None and not state.damaged and state.closed
    assert state.segments == 4 and state.duration == Fraction(8008, 1000)
    text = render_media(state.variants["src"], ended=True)
    assert text.count("#EXTINF:2.002000,") == 4
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    assert text.index('#EXT-X-MAP:URI="init_a_1.mp4"') > text.index("#EXT-X-DISCONTINUITY")
    live = render_media(state.variants["src"], ended=False)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in live and "#EXT-X-ENDLIST" not in live
    multivariant = render_multivariant(state)
    assert multivariant is not None and "src/media.m3u8" in multivariant and "RESOLUTION=640x360" in multivariant
    assert manifest(state)["segments"] == 4 and state_name(state) == "complete"


def test_unreadable_start_gives_nothing() -> None:
    assert parse_journal(b"") is None
    assert parse_journal(b"garbage\n") is None
    assert parse_journal(encode_line(start_record("rec_bad", "alice", 1.0, "fmp4"))) is None


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(min_value=0, max_value=2000))
def test_any_cut_keeps_every_whole_line(cut: int) -> None:
    data = sample_journal(segments=6)
    prefix = data[:cut]
    state = parse_journal(prefix)
    whole_lines = prefix.count(b"\n")
    if whole_lines == 0:
        assert state is None
        return
    assert state is not None
    assert state.valid_bytes == prefix.rfind(b"\n") + 1
    assert state.damaged == (not prefix.endswith(b"\n"))
    # Every whole segment line is listed (one start line, then inits and segments).
    assert state.segments == sum(1 for line in prefix.split(b"\n")[:whole_lines] if b'"t":"seg"' in line)
    for variant in state.variants.values():
        text = render_media(variant, ended=True)
        assert text.count("#EXTINF") == len(variant.segments)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0, max_value=1500), junk=st.binary(min_size=1, max_size=40))
def test_garbled_journal_never_raises(position: int, junk: bytes) -> None:
    data = sample_journal(segments=6)
    position = min(position, len(data))
    garbled = data[:position] + junk + data[position:]
    state = parse_journal(garbled)
    if state is None:
        return
    assert state.valid_bytes <= len(garbled)
    # What was read back is a prefix of the truth.
    assert state.segments <= 6
    reread = parse_journal(garbled[:state.valid_bytes])
    assert reread is not None and reread.segments == state.segments and not reread.damaged
    render_multivariant(state)
    manifest(state)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    state = parse_journal(data)
    if state is not None:
        render_multivariant(state)


@settings(max_examples=200, deadline=None)
@given(record=st.dictionaries(st.sampled_from(["t", "v", "file", "dur", "disc", "size", "codecs", "res", "at",
                                               "interrupted", "reason"]),
                              st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                                        st.text(max_size=20), st.lists(st.integers(), max_size=3)),
                              max_size=8))
def test_valid_crc_with_any_record_never_raises(record: dict[str, object]) -> None:
    """A line whose checksum is right but whose fields are nonsense ends the
    readable part like any damage."""
    data = sample_journal(segments=1) + encode_line(record)
    state = parse_journal(data)
    assert state is not None
    assert state.segments >= 1
    render_multivariant(state)
