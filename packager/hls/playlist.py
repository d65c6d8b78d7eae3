"""HLS playlists as data, rendered to text (RFC 8216bis).

:class:`MediaPlaylist` keeps the sliding window of one variant and renders
it; :func:`render_multivariant` writes the multivariant playlist. Tag names
in comments are the spec's section numbers in draft-pantos-hls-rfc8216bis.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction

from packager.errors import PlaylistError

UriRewriter = Callable[[str], str]


def _same(uri: str) -> str:
    return uri


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    sequence: int
    uri: str
    duration: Fraction
    program_date_time: float
    discontinuity: bool
    init_uri: str | None
    size: int


@dataclass(slots=True)
class MediaPlaylist:
    """The live window of one variant.

    ``version`` is 7 for fMP4 (EXT-X-MAP) and 3 for MPEG-TS. The target
    duration starts at the configured one and grows, with a warning from the
    caller, only if a publisher's keyframe interval forces longer segments.
    """

    target_duration: int
    window: int
    version: int = 7
    segments: collections.deque[SegmentEntry] = field(default_factory=collections.deque)
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    ended: bool = False

    def add(self, entry: SegmentEntry) -> list[SegmentEntry]:
        """Append a segment; return the segments that left the window."""
        if self.ended:
            raise PlaylistError("playlist already ended")
        if self.segments and entry.sequence != self.segments[-1].sequence + 1:
            raise PlaylistError("media sequence numbers must increase by one")
        if not self.segments:
            self.media_sequence = entry.sequence
        self.segments.append(entry)
        removed: list[SegmentEntry] = []
        while len(self.segments) > self.window:
            gone = self.segments.popleft()
            removed.append(gone)
            self.media_sequence = self.segments[0].sequence
            # 4.4.3.3: the discontinuity sequence counts the discontinuity tags
            # that left the window, so every segment keeps its number.
            if gone.discontinuity:
                self.discontinuity_sequence += 1
        return removed

    def end(self) -> None:
        self.ended = True

    @property
    def rounded_max_duration(self) -> int:
        return max((round(s.duration) for s in self.segments), default=0)

    def render(self, rewrite: UriRewriter = _same) -> str:
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{self.version}",
            # 4.4.3.1: every EXTINF rounded to the nearest integer must not exceed it.
            f"#EXT-X-TARGETDURATION:{max(self.target_duration, self.rounded_max_duration)}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
        ]
        if self.discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        if self.version >= 6:
            lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        current_map: str | None = None
        for i, seg in enumerate(self.segments):
            if seg.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if seg.init_uri is not None and seg.init_uri != current_map:
                lines.append(f'#EXT-X-MAP:URI="{rewrite(seg.init_uri)}"')
                current_map = seg.init_uri
            if i == 0 or seg.discontinuity:
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(seg.program_date_time)}")
            lines.append(f"#EXTINF:{float(seg.duration):.5f},")
            lines.append(rewrite(seg.uri))
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


def format_pdt(epoch_seconds: float) -> str:
    """ISO 8601 with milliseconds and an explicit UTC offset (4.4.4.6)."""
    dt = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Variant:
    """One entry of a multivariant playlist (4.4.6.2)."""

    uri: str
    bandwidth: int
    average_bandwidth: int | None
    codecs: Sequence[str]
    resolution: tuple[int, int] | None
    frame_rate: float | None


def render_multivariant(variants: Sequence[Variant], version: int = 7, rewrite: UriRewriter = _same) -> str:
    if not variants:
        raise PlaylistError("a multivariant playlist needs at least one variant")
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in sorted(variants, key=lambda v: -v.bandwidth):
        attrs = [f"BANDWIDTH={v.bandwidth}"]
        if v.average_bandwidth:
            attrs.append(f"AVERAGE-BANDWIDTH={v.average_bandwidth}")
        if v.codecs:
            attrs.append(f'CODECS="{",".join(v.codecs)}"')
        if v.resolution:
            attrs.append(f"RESOLUTION={v.resolution[0]}x{v.resolution[1]}")
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(rewrite(v.uri))
    return "\n".join(lines) + "\n"


def ceil_seconds(value: float | Fraction) -> int:
    return max(1, math.ceil(value))
