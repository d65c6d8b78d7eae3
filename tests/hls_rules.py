"""A checker for the HLS playlists the engine writes.

It parses playlist text and asserts the rules of RFC 8216bis (section
numbers in the messages) and Apple's HLS authoring specification that apply
to a live CMAF/TS origin with LL-HLS. :class:`ReloadChecker` also checks what
must hold between successive reloads of one media playlist.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


class PlaylistRuleError(AssertionError):
    pass


def attributes(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in ATTR.findall(text)}


def fail(rule: str, why: str) -> None:
    raise PlaylistRuleError(f"{rule}: {why}")


@dataclass
class Part:
    duration: float
    uri: str
    independent: bool


@dataclass
class Segment:
    msn: int
    duration: float
    uri: str
    discontinuity: bool
    map_uri: str | None
    pdt: datetime | None
    parts: list[Part] = field(default_factory=list)


@dataclass
class MediaPlaylistView:
    version: int
    target_duration: int
    media_sequence: int
    discontinuity_sequence: int
    segments: list[Segment]
    open_parts: list[Part]
    part_target: float | None
    server_control: dict[str, str]
    preload_hint: dict[str, str] | None
    rendition_reports: list[dict[str, str]]
    skipped: int
    ended: bool


def parse_media(text: str) -> MediaPlaylistView:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        fail("4.4.1.1", "a playlist starts with #EXTM3U")
    version = 1
    target: int | None = None
    msn0 = 0
    dseq = 0
    segments: list[Segment] = []
    pending_parts: list[Part] = []
    part_target = None
    server_control: dict[str, str] = {}
    hint = None
    reports: list[dict[str, str]] = []
    skipped = 0
    ended = False
    disc = False
    current_map: str | None = None
    pdt: datetime | None = None
    duration: float | None = None
    seen_media_sequence = False
    for line in lines[1:]:
        if line.startswith("#EXT-X-VERSION:"):
            version = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            target = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            if segments:
                fail("4.4.3.2", "EXT-X-MEDIA-SEQUENCE must appear before the first segment")
            msn0 = int(line.split(":", 1)[1])
            seen_media_sequence = True
        elif line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            dseq = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            disc = True
        elif line.startswith("#EXT-X-MAP:"):
            current_map = attributes(line.split(":", 1)[1])["URI"]
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00"))
        elif line.startswith("#EXT-X-PART-INF:"):
            part_target = float(attributes(line.split(":", 1)[1])["PART-TARGET"])
        elif line.startswith("#EXT-X-SERVER-CONTROL:"):
            server_control = attributes(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PART:"):
            a = attributes(line.split(":", 1)[1])
            pending_parts.append(Part(float(a["DURATION"]), a["URI"], a.get("INDEPENDENT") == "YES"))
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            hint = attributes(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-RENDITION-REPORT:"):
            reports.append(attributes(line.split(":", 1)[1]))
        elif line.startswith("#EXT-X-SKIP:"):
            skipped = int(attributes(line.split(":", 1)[1])["SKIPPED-SEGMENTS"])
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",")[0])
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#"):
            continue
        else:
            if duration is None:
                fail("4.4.4.1", f"segment {line} has no EXTINF")
            assert duration is not None
            segments.append(
                Segment(msn0 + skipped + len(segments), duration, line, disc, current_map, pdt, pending_parts)
            )
            pending_parts, disc, pdt, duration = [], False, None, None
    if target is None:
        fail("4.4.3.1", "EXT-X-TARGETDURATION is required")
    assert target is not None
    if not seen_media_sequence and msn0:
        fail("4.4.3.2", "media sequence")
    return MediaPlaylistView(
        version, target, msn0, dseq, segments, pending_parts, part_target, server_control, hint, reports,
        skipped, ended,
    )


def check_media(text: str, fmp4: bool) -> MediaPlaylistView:
    """Rules that hold for one media playlist on its own."""
    pl = parse_media(text)
    for seg in pl.segments:
        # 4.4.3.1: EXTINF rounded to the nearest integer <= target duration.
        if round(seg.duration) > pl.target_duration:
            fail("4.4.3.1", f"{seg.uri} lasts {seg.duration}s, over the {pl.target_duration}s target")
        if seg.duration <= 0:
            fail("4.4.4.1", f"{seg.uri} has no duration")
        if fmp4 and seg.map_uri is None:
            fail("4.4.4.5", f"fMP4 segment {seg.uri} has no EXT-X-MAP before it")
    if fmp4 and pl.version < 6:
        fail("7", "EXT-X-MAP in a media playlist needs version 6 or higher")
    if pl.skipped and pl.version < 9:
        fail("7", "EXT-X-SKIP needs version 9 or higher")
    if any(seg.duration != int(seg.duration) for seg in pl.segments) and pl.version < 3:
        fail("7", "decimal EXTINF needs version 3")
    if pl.segments and pl.segments[0].pdt is None and pl.skipped == 0:
        fail("authoring 8.6", "live playlists carry EXT-X-PROGRAM-DATE-TIME on the first segment")
    if pl.part_target is not None:
        sc = pl.server_control
        if sc.get("CAN-BLOCK-RELOAD") != "YES":
            fail("4.4.3.8", "LL-HLS needs CAN-BLOCK-RELOAD=YES")
        phb = float(sc.get("PART-HOLD-BACK", "0"))
        if phb < 2 * pl.part_target:
            fail("4.4.3.8", f"PART-HOLD-BACK {phb} is less than twice PART-TARGET {pl.part_target}")
        if "CAN-SKIP-UNTIL" in sc and float(sc["CAN-SKIP-UNTIL"]) < 6 * pl.target_duration:
            fail("4.4.3.8", "CAN-SKIP-UNTIL must be at least six target durations")
        for seg in [*pl.segments, None]:
            parts = seg.parts if seg is not None else pl.open_parts
            for i, part in enumerate(parts):
                # 4.4.4.9: every part at most PART-TARGET (rounding of the
                # printed value allowed for).
                if part.duration > pl.part_target + 1e-6:
                    fail("4.4.4.9", f"part {part.uri} lasts {part.duration}s, over {pl.part_target}s")
                last = i == len(parts) - 1 and seg is not None
                if not last and not part.independent and part.duration < 0.85 * pl.part_target - 1e-3 and seg:
                    fail("4.4.4.9", f"part {part.uri} is shorter than 85% of the part target")
            if seg is not None and seg.parts:
                total = sum(p.duration for p in seg.parts)
                if not math.isclose(total, seg.duration, abs_tol=1e-3 * (len(seg.parts) + 1)):
                    fail("4.4.4.9", f"parts of {seg.uri} add to {total}s, not {seg.duration}s")
        if not pl.ended and pl.preload_hint is None:
            fail("4.4.5.3", "a live LL-HLS playlist carries EXT-X-PRELOAD-HINT")
        if pl.preload_hint is not None and pl.preload_hint.get("TYPE") not in ("PART", "MAP"):
            fail("4.4.5.3", "PRELOAD-HINT TYPE must be PART or MAP")
        for report in pl.rendition_reports:
            if "URI" not in report or "LAST-MSN" not in report:
                fail("4.4.5.4", "a rendition report needs URI and LAST-MSN")
    return pl


@dataclass
class ReloadChecker:
    """Rules between successive reloads of one media playlist (6.2.1, 6.3.4)."""

    fmp4: bool
    last: MediaPlaylistView | None = None
    uris: dict[int, str] = field(default_factory=dict)
    dseq_of: dict[int, int] = field(default_factory=dict)
    reloads: int = 0

    def check(self, text: str) -> MediaPlaylistView:
        pl = check_media(text, self.fmp4)
        self.reloads += 1
        dseq = pl.discontinuity_sequence
        for seg in pl.segments:
            if seg.discontinuity:
                dseq += 1
            # 6.2.1: a media sequence number always names the same segment,
            # and its discontinuity sequence number never changes.
            if seg.msn in self.uris and self.uris[seg.msn] != seg.uri:
                fail("6.2.1", f"msn {seg.msn} changed from {self.uris[seg.msn]} to {seg.uri}")
            if seg.msn in self.dseq_of and self.dseq_of[seg.msn] != dseq:
                fail("6.2.2", f"msn {seg.msn} changed discontinuity sequence")
            self.uris[seg.msn] = seg.uri
            self.dseq_of[seg.msn] = dseq
        if self.last is not None:
            if pl.media_sequence < self.last.media_sequence:
                fail("6.2.1", "EXT-X-MEDIA-SEQUENCE went backwards")
            if pl.discontinuity_sequence < self.last.discontinuity_sequence:
                fail("6.2.2", "EXT-X-DISCONTINUITY-SEQUENCE went backwards")
            if self.last.ended and not pl.ended:
                fail("6.2.1", "a playlist that ended cannot go on")
            if pl.target_duration != self.last.target_duration:
                fail("4.4.3.1", "EXT-X-TARGETDURATION must not change")
        self.last = pl
        return pl


def check_multivariant(text: str) -> list[dict[str, str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        fail("4.4.1.1", "a playlist starts with #EXTM3U")
    variants = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            a = attributes(line.split(":", 1)[1])
            if "BANDWIDTH" not in a:
                fail("4.4.6.2", "BANDWIDTH is required")
            if "CODECS" not in a:
                fail("authoring 9.1", "every variant lists its CODECS")
            if i + 1 >= len(lines) or lines[i + 1].startswith("#"):
                fail("4.4.6.2", "EXT-X-STREAM-INF is followed by a URI")
            a["URI"] = lines[i + 1]
            variants.append(a)
    if not variants:
        fail("4.4.6.2", "no variants")
    return variants
