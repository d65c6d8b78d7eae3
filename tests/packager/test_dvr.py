"""DVR: a long live window (hls.dvr_window_s), parts only near the live
edge, and delta updates that keep the long playlist cheap."""

from __future__ import annotations

from fractions import Fraction

import pytest

from packager.hls.config import HlsConfig
from packager.hls.playlist import MediaPlaylist, PartEntry, SegmentEntry


def test_window_is_derived_from_the_dvr_seconds() -> None:
    assert HlsConfig().live_window_segments == 6
    assert HlsConfig(dvr_window_s=7200).live_window_segments == 3600
    assert HlsConfig(dvr_window_s=7201, target_duration_s=2.0).live_window_segments == 3601
    assert HlsConfig(dvr_window_s=4, window_segments=6).live_window_segments == 6
    with pytest.raises(ValueError):
        HlsConfig(dvr_window_s=-1)


def _add(pl: MediaPlaylist, seq: int) -> None:
    for i in range(4):
        pl.add_part(seq, PartEntry(f"part_a_{seq}_{i}.m4s", Fraction(1, 2), i == 0, b"x"), False, "init_a_1.mp4")
    pl.add(SegmentEntry(seq, f"seg_a_{seq}.m4s", Fraction(2), 1_700_000_000.0 + 2 * seq, False, "init_a_1.mp4", 10))


def test_long_window_lists_parts_only_near_the_edge_and_skips_old_segments() -> None:
    config = HlsConfig(dvr_window_s=600)
    pl = MediaPlaylist(target_duration=2, window=config.live_window_segments, part_target=Fraction(1, 2))
    for seq in range(400):
        _add(pl, seq)
    full = pl.render()
    assert full.count("#EXTINF:") == 300
    assert "#EXT-X-MEDIA-SEQUENCE:100\n" in full
    # Parts of segments more than three target durations (6 s) from the
    # edge are gone: at most the last four complete segments keep theirs.
    part_segments = {line.split("_")[2] for line in full.splitlines() if line.startswith("#EXT-X-PART:")}
    assert part_segments and all(int(s) >= 396 for s in part_segments)
    # A delta update lists only what ends within CAN-SKIP-UNTIL (12 s) of the end.
    delta = pl.render(skip=True)
    assert "CAN-SKIP-UNTIL=12.0" in delta
    skipped = int(delta.split("#EXT-X-SKIP:SKIPPED-SEGMENTS=")[1].split("\n")[0])
    assert skipped + delta.count("#EXTINF:") == 300
    assert delta.count("#EXTINF:") <= 7
    assert len(delta) * 5 < len(full)
