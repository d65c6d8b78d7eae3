"""Settings of the HLS packager."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from engine.settings import doc


class SegmentFormat(enum.Enum):
    FMP4 = "fmp4"
    MPEGTS = "mpegts"


@dataclass(frozen=True, slots=True)
class HlsConfig:
    segment_format: SegmentFormat = doc(
        "Segment container: fmp4 (CMAF, HLS version 7) or mpegts.", SegmentFormat.FMP4
    )
    target_duration_s: float = doc(
        "Segments are cut on the first keyframe at or after this many seconds.", 2.0
    )
    window_segments: int = doc("How many segments a live media playlist lists (without DVR).", 6)
    dvr_window_s: float = doc(
        "DVR: seconds of a live stream that its media playlists keep listing (and its segment files kept), so "
        "players seek back while it is live; 0 turns DVR off (the playlist lists hls.window_segments). LL-HLS "
        "parts are listed only near the live edge and delta updates (_HLS_skip) keep long playlists cheap.",
        0.0,
    )
    low_latency: bool = doc(
        "LL-HLS: partial segments, preload hints, blocking playlist reload, delta updates and rendition reports.",
        True,
    )
    part_target_s: float = doc(
        "LL-HLS part target: no partial segment is longer than this. Players hold back three parts "
        "(PART-HOLD-BACK), so this sets most of the latency; 0.5 costs about 0.5 s more latency and "
        "a third fewer part requests per viewer.",
        0.334,
    )
    keep_extra_segments: int = doc(
        "Segments kept on disk after they leave the playlist, for players that are a little behind.", 2
    )
    max_segment_s: float = doc(
        "A segment is cut at this length even without a keyframe (audio-only streams; publishers "
        "with very long GOPs).",
        12.0,
    )
    wait_for_playlist_s: float = doc(
        "How long a request for a live stream's playlist waits for the first segment before 404.", 8.0
    )
    cors_origin: str = doc("Access-Control-Allow-Origin sent with every HLS response.", "*")
    segment_cache_s: int = doc(
        "Cache-Control max-age of media segments and parts, in seconds (public for free streams, private for "
        "streams that need a playback token).",
        86400,
    )
    writer_threads: int = doc(
        "Threads that cut, mux and write every stream's HLS files off the event loop (each stream's work runs "
        "in order, on one thread at a time).",
        8,
    )

    @property
    def live_window_segments(self) -> int:
        """How many segments a live media playlist lists: hls.window_segments,
        or enough segments of the target duration to cover the DVR window."""
        if self.dvr_window_s <= 0:
            return self.window_segments
        return max(self.window_segments, math.ceil(self.dvr_window_s / self.target_duration_s))

    def __post_init__(self) -> None:
        if not 0 <= self.dvr_window_s <= 7 * 24 * 3600:
            raise ValueError("hls.dvr_window_s must be between 0 (off) and 604800 (7 days)")
        if self.writer_threads < 1:
            raise ValueError("hls.writer_threads must be at least 1")
        if self.target_duration_s <= 0:
            raise ValueError("hls.target_duration_s must be positive")
        if self.window_segments < 3:
            raise ValueError("hls.window_segments must be at least 3 (RFC 8216 section 6.2.2)")
        if self.low_latency and not 0 < self.part_target_s <= self.target_duration_s / 2:
            raise ValueError("hls.part_target_s must be positive and at most half of hls.target_duration_s")
        if self.max_segment_s < self.target_duration_s:
            raise ValueError("hls.max_segment_s must be at least hls.target_duration_s")
