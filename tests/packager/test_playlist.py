"""Media and multivariant playlists against RFC 8216bis rules."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packager.errors import PlaylistError
from packager.hls.playlist import (
    MediaPlaylist,
    PartEntry,
    SegmentEntry,
    Variant,
    format_pdt,
    render_multivariant,
)


def entry(seq: int, duration: float = 2.0, disc: bool = False, init: str | None = "init_a_1.mp4") -> SegmentEntry:
    return SegmentEntry(seq, f"seg_a_{seq}.m4s", Fraction(duration), 1_700_000_000.0 + seq * 2, disc, init, 100)


def test_window_slides_and_counts_media_sequence() -> None:
    pl = MediaPlaylist(target_duration=2, window=3)
    removed = []
    for i in range(5):
        removed += pl.add(entry(i))
    assert [s.sequence for s in removed] == [0, 1]
    text = pl.render()
    assert "#EXT-X-MEDIA-SEQUENCE:2\n" in text
    assert text.count("#EXTINF:") == 3
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n")
    assert text.count("#EXT-X-MAP:") == 1
    assert "#EXT-X-PROGRAM-DATE-TIME:" in text
    assert "#EXT-X-ENDLIST" not in text
    pl.end()
    assert pl.render().endswith("#EXT-X-ENDLIST\n")


def test_discontinuity_sequence_counts_removed_tags() -> None:
    pl = MediaPlaylist(target_duration=2, window=3)
    pl.add(entry(0))
    pl.add(entry(1, disc=True, init="init_a_2.mp4"))
    pl.add(entry(2, init="init_a_2.mp4"))
    text = pl.render()
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert text.count("#EXT-X-MAP:") == 2
    pl.add(entry(3, init="init_a_2.mp4"))  # seg 0 leaves: no tag on it
    assert "#EXT-X-DISCONTINUITY-SEQUENCE" not in pl.render()
    pl.add(entry(4, init="init_a_2.mp4"))  # seg 1 (tagged) leaves
    text = pl.render()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in text
    assert "#EXT-X-DISCONTINUITY\n" not in text


def test_target_duration_is_never_below_a_rounded_extinf() -> None:
    pl = MediaPlaylist(target_duration=2, window=5)
    pl.add(entry(0, 2.4))
    pl.add(entry(1, 3.6))
    assert "#EXT-X-TARGETDURATION:4\n" in pl.render()


def test_sequence_gaps_are_refused() -> None:
    pl = MediaPlaylist(target_duration=2, window=5)
    pl.add(entry(0))
    with pytest.raises(PlaylistError):
        pl.add(entry(2))


def test_uri_rewriting_reaches_map_and_segments() -> None:
    pl = MediaPlaylist(target_duration=2, window=5)
    pl.add(entry(0))
    text = pl.render(lambda u: u + "?token=t")
    assert '#EXT-X-MAP:URI="init_a_1.mp4?token=t"' in text
    assert "seg_a_0.m4s?token=t\n" in text


def test_pdt_format() -> None:
    assert format_pdt(0.25) == "1970-01-01T00:00:00.250Z"


def test_multivariant_attributes() -> None:
    text = render_multivariant(
        [
            Variant("src/media.m3u8", 2_000_000, 1_500_000, ["avc1.64001f", "mp4a.40.2"], (1280, 720), 30.0),
            Variant("low/media.m3u8", 500_000, None, ["avc1.42c01e"], (640, 360), 29.97),
        ]
    )
    lines = text.splitlines()
    assert lines[:3] == ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    assert lines[3] == (
        '#EXT-X-STREAM-INF:BANDWIDTH=2000000,AVERAGE-BANDWIDTH=1500000,CODECS="avc1.64001f,mp4a.40.2",'
        "RESOLUTION=1280x720,FRAME-RATE=30.000"
    )
    assert lines[4] == "src/media.m3u8"
    with pytest.raises(PlaylistError):
        render_multivariant([])


def test_variants_highest_bandwidth_first_whatever_order_they_started_in() -> None:
    variants = [
        Variant("b/media.m3u8", 800_000, None, [], (640, 360), None),
        Variant("a/media.m3u8", 800_000, None, [], (640, 360), None),
        Variant("tall/media.m3u8", 800_000, None, [], (854, 480), None),
        Variant("src/media.m3u8", 3_000_000, None, [], (1280, 720), None),
    ]
    expected = ["src/media.m3u8", "tall/media.m3u8", "a/media.m3u8", "b/media.m3u8"]
    for order in (variants, variants[::-1]):
        uris = [line for line in render_multivariant(order).splitlines() if not line.startswith("#")]
        assert uris == expected


def test_default_part_target_gives_a_hold_back_of_three_parts() -> None:
    pl = MediaPlaylist(target_duration=2, window=3, part_target=Fraction(167, 500))
    pl.add(entry(0))
    text = pl.render()
    assert "#EXT-X-PART-INF:PART-TARGET=0.33400\n" in text
    assert ",PART-HOLD-BACK=1.002\n" in text


@given(st.fractions(Fraction(1, 10), Fraction(1)).map(lambda f: f.limit_denominator(100_000)))
def test_printed_part_target_and_hold_back_never_round_down(part_target: Fraction) -> None:
    """A part as long as the target is within the printed PART-TARGET, and
    the printed PART-HOLD-BACK is at least three printed targets (4.4.3.8)."""
    pl = MediaPlaylist(target_duration=2, window=3, part_target=part_target)
    pl.add_part(0, PartEntry("part_a_0_0.m4s", part_target, True, b""), False, "init_a_1.mp4")
    text = pl.render()
    printed = Fraction(text.split("#EXT-X-PART-INF:PART-TARGET=")[1].split("\n")[0])
    hold_back = Fraction(text.split("PART-HOLD-BACK=")[1].split("\n")[0])
    part = Fraction(text.split("#EXT-X-PART:DURATION=")[1].split(",")[0])
    assert part_target <= printed < part_target + Fraction(1, 100_000)
    assert part <= printed
    assert hold_back >= 3 * printed
