"""EXT-X-KEY in media playlists (RFC 8216bis 4.4.4.4): byte vectors of live
windows, discontinuities, parts and delta updates; key tags written and read
back both ways; EXT-X-SESSION-KEY in the multivariant playlist."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packager.errors import PlaylistError
from packager.hls.playlist import KeyTag, MediaPlaylist, PartEntry, SegmentEntry, Variant, render_multivariant


def key(period: int, seq: int) -> tuple[KeyTag, ...]:
    iv = seq.to_bytes(16, "big")
    return (KeyTag("AES-128", f"/keys/show/{period:032x}", iv=iv, key_format="identity", key_format_versions="1"),)


def entry(seq: int, period: int | None, disc: bool = False, parts: tuple[PartEntry, ...] = ()) -> SegmentEntry:
    keys = key(period, seq) if period is not None else ()
    return SegmentEntry(seq, f"seg_{seq}.ts", Fraction(2), 1_700_000_000.0 + seq * 2, disc, None, 100, parts, keys)


def token(uri: str) -> str:
    return uri + "?token=T"


def test_every_segment_states_its_iv_and_the_token_reaches_the_key_uri() -> None:
    pl = MediaPlaylist(target_duration=2, window=3, version=5)
    for seq in range(4):
        pl.add(entry(seq, period=seq // 2))
    assert pl.render(token) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:5\n"
        "#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-MEDIA-SEQUENCE:1\n"
        '#EXT-X-KEY:METHOD=AES-128,URI="/keys/show/00000000000000000000000000000000?token=T",'
        'IV=0x00000000000000000000000000000001,KEYFORMAT="identity",KEYFORMATVERSIONS="1"\n'
        "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z\n"
        "#EXTINF:2.00000,\n"
        "seg_1.ts?token=T\n"
        '#EXT-X-KEY:METHOD=AES-128,URI="/keys/show/00000000000000000000000000000001?token=T",'
        'IV=0x00000000000000000000000000000002,KEYFORMAT="identity",KEYFORMATVERSIONS="1"\n'
        "#EXTINF:2.00000,\n"
        "seg_2.ts?token=T\n"
        '#EXT-X-KEY:METHOD=AES-128,URI="/keys/show/00000000000000000000000000000001?token=T",'
        'IV=0x00000000000000000000000000000003,KEYFORMAT="identity",KEYFORMATVERSIONS="1"\n'
        "#EXTINF:2.00000,\n"
        "seg_3.ts?token=T\n"
    )


def cbcs(period: int) -> tuple[KeyTag, ...]:
    return (
        KeyTag("SAMPLE-AES", f"data:text/plain;base64,cHNzaA{period}", key_format="urn:uuid:x",
               key_format_versions="1", own_uri=False),
        KeyTag("SAMPLE-AES", f"skd://k/{period}", key_format="com.apple.streamingkeydelivery",
               key_format_versions="1", own_uri=False),
    )


def test_unchanged_keys_are_stated_once_and_again_after_a_discontinuity() -> None:
    pl = MediaPlaylist(target_duration=2, window=10)
    for seq, period, disc in ((0, 0, False), (1, 0, False), (2, 1, True), (3, 1, False)):
        pl.add(SegmentEntry(seq, f"s{seq}.m4s", Fraction(2), 0.0, disc, "init.mp4", 1, keys=cbcs(period)))
    text = pl.render(token)
    lines = [line for line in text.splitlines() if line.startswith(("#EXT-X-KEY", "#EXT-X-DISC", "s"))]
    assert lines == [
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="data:text/plain;base64,cHNzaA0",KEYFORMAT="urn:uuid:x",'
        'KEYFORMATVERSIONS="1"',
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://k/0",KEYFORMAT="com.apple.streamingkeydelivery",'
        'KEYFORMATVERSIONS="1"',
        "s0.m4s?token=T",
        "s1.m4s?token=T",
        "#EXT-X-DISCONTINUITY",
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="data:text/plain;base64,cHNzaA1",KEYFORMAT="urn:uuid:x",'
        'KEYFORMATVERSIONS="1"',
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://k/1",KEYFORMAT="com.apple.streamingkeydelivery",'
        'KEYFORMATVERSIONS="1"',
        "s2.m4s?token=T",
        "s3.m4s?token=T",
    ]
    # The window slides past the period's first segment: the new first
    # segment still states its key.
    for seq in range(4, 13):
        pl.add(SegmentEntry(seq, f"s{seq}.m4s", Fraction(2), 0.0, False, "init.mp4", 1, keys=cbcs(1)))
    text = pl.render()
    assert text.index('URI="skd://k/1"') < text.index("s3.m4s")
    assert text.count("#EXT-X-KEY:") == 2


def test_clear_segments_after_encrypted_ones_say_method_none() -> None:
    pl = MediaPlaylist(target_duration=2, window=5, version=5)
    pl.add(entry(0, 0))
    pl.add(entry(1, None))
    text = pl.render()
    assert text.index("seg_0.ts") < text.index("#EXT-X-KEY:METHOD=NONE") < text.index("seg_1.ts")


def part(seq: int, i: int) -> PartEntry:
    return PartEntry(f"part_{seq}_{i}.ts", Fraction(1, 2), i == 0, b"")


def test_parts_follow_their_segments_key_and_delta_updates_keep_the_first_key() -> None:
    pl = MediaPlaylist(target_duration=2, window=10, version=5, part_target=Fraction(1, 2))
    for seq in range(8):
        pl.add(entry(seq, period=seq // 4))
    pl.add_part(8, part(8, 0), False, None, key(2, 8))
    pl.add_part(8, part(8, 1), False, None, key(2, 8))
    text = pl.render(token)
    open_key = text.index("IV=0x00000000000000000000000000000008")
    assert text.index("seg_7.ts") < open_key < text.index("part_8_0.ts") < text.index("part_8_1.ts")
    assert text.count("IV=0x00000000000000000000000000000008") == 1
    # _HLS_skip: the segments older than six target durations leave, the
    # first one listed says its key.
    delta = pl.render(token, skip=True)
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=2" in delta
    first_uri = next(line for line in delta.splitlines() if line.startswith("seg_"))
    assert first_uri == "seg_2.ts?token=T"
    assert delta.index("IV=0x00000000000000000000000000000002") < delta.index(first_uri)
    assert "IV=0x00000000000000000000000000000001" not in delta


def test_session_keys_in_the_multivariant_playlist() -> None:
    tag = key(0, 5)[0]
    text = render_multivariant([Variant("src/media.m3u8", 1000, None, ["avc1.64001f"], None, None)], 5, token, [tag])
    assert text.splitlines()[3] == (
        '#EXT-X-SESSION-KEY:METHOD=AES-128,URI="/keys/show/00000000000000000000000000000000?token=T",'
        'KEYFORMAT="identity",KEYFORMATVERSIONS="1"'
    )


key_tags = st.builds(
    KeyTag,
    st.sampled_from(["AES-128", "SAMPLE-AES", "SAMPLE-AES-CTR"]),
    st.text(st.characters(codec="ascii", categories=["L", "N"], include_characters="/:.-_?=&"), min_size=1),
    st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
    st.one_of(st.none(), st.sampled_from(["identity", "com.apple.streamingkeydelivery", "urn:uuid:1077efec"])),
    st.one_of(st.none(), st.sampled_from(["1", "1/2"])),
    st.just(True),
)


@given(key_tags)
def test_key_tags_read_back_as_written(tag: KeyTag) -> None:
    own = not tag.uri.startswith(("data:", "skd:"))
    expected = KeyTag(tag.method, tag.uri, tag.iv, tag.key_format, tag.key_format_versions, own)
    assert KeyTag.parse(tag.render()) == expected
    session = KeyTag.parse(tag.render_session())
    assert session.iv is None and session.uri == tag.uri


@pytest.mark.parametrize(
    "line",
    [
        '#EXT-X-KEY:METHOD=AES-128,URI="/k",KEYFORMAT="identity"',
        '#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="skd://x",KEYFORMAT="com.apple.streamingkeydelivery"',
        '#EXT-X-KEY:METHOD=AES-128,URI="/k?a=1,b=2",IV=0x000102030405060708090A0B0C0D0E0F',
    ],
)
def test_key_tag_vectors_read_and_write_the_same_line(line: str) -> None:
    tag = KeyTag.parse(line)
    assert (tag.render_session() if line.startswith("#EXT-X-SESSION-KEY") else tag.render()) == line


@pytest.mark.parametrize(
    "line",
    [
        "#EXT-X-MAP:URI=\"x\"",
        "#EXT-X-KEY:METHOD=AES-128",
        '#EXT-X-KEY:METHOD=AES-128,URI="/k",IV=0x00',
        '#EXT-X-KEY:METHOD=AES-128,URI="/k",IV=00000000000000000000000000000000ab',
        '#EXT-X-KEY:METHOD=AES-128,URI="/k',
        '#EXT-X-KEY:METHOD=AES-128,URI="/k",',
        '#EXT-X-KEY:METHOD=AES-128,METHOD=NONE,URI="/k"',
        '#EXT-X-KEY:method=AES-128,URI="/k"',
        '#EXT-X-KEY:METHOD=AES-128,URI="/k"x',
    ],
)
def test_malformed_key_tags_are_refused(line: str) -> None:
    with pytest.raises(PlaylistError):
        KeyTag.parse(line)


def test_a_new_init_segment_is_never_under_a_whole_segment_key() -> None:
    pl = MediaPlaylist(target_duration=2, window=10)
    tag = key(0, 0)[0]
    for seq, init, disc in ((0, "init_1.mp4", False), (1, "init_1.mp4", False), (2, "init_2.mp4", True)):
        keys = (KeyTag(tag.method, tag.uri, seq.to_bytes(16, "big"), "identity", "1"),)
        pl.add(SegmentEntry(seq, f"s{seq}.m4s", Fraction(2), 0.0, disc, init, 1, keys=keys))
    lines = [line.split(",IV=")[0] for line in pl.render().splitlines() if not line.startswith(("#EXTINF", "#EXT-X-P"))]
    aes = '#EXT-X-KEY:METHOD=AES-128,URI="/keys/show/00000000000000000000000000000000"'
    assert lines[-10:] == [
        '#EXT-X-MAP:URI="init_1.mp4"', aes, "s0.m4s", aes, "s1.m4s",
        "#EXT-X-DISCONTINUITY", "#EXT-X-KEY:METHOD=NONE", '#EXT-X-MAP:URI="init_2.mp4"', aes, "s2.m4s",
    ]
    # Sample encryption keys stay in force over a map: its init names them.
    cb = MediaPlaylist(target_duration=2, window=10)
    cb.add(SegmentEntry(0, "s0.m4s", Fraction(2), 0.0, False, "init_1.mp4", 1, keys=cbcs(0)))
    cb.add(SegmentEntry(1, "s1.m4s", Fraction(2), 0.0, True, "init_2.mp4", 1, keys=cbcs(0)))
    assert "METHOD=NONE" not in cb.render()
