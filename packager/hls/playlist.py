"""HLS playlists as data, rendered to text (RFC 8216bis).

:class:`MediaPlaylist` keeps the sliding window of one variant and renders
it; :func:`render_multivariant` writes the multivariant playlist. Tag names
in comments are the spec's section numbers in draft-pantos-hls-rfc8216bis.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from fractions import Fraction

from packager.errors import PlaylistError

UriRewriter = Callable[[str], str]


def _same(uri: str) -> str:
    return uri


@dataclass(frozen=True, slots=True)
class KeyTag:
    """One ``EXT-X-KEY`` (4.4.4.4) or ``EXT-X-SESSION-KEY`` (4.4.6.5).

    ``own_uri``: the URI is the engine's (its key endpoint), so the viewer's
    token is added to it like to the playlist's other URIs; ``data:`` and
    ``skd://`` URIs are left as they are.
    """

    method: str
    uri: str
    iv: bytes | None = None
    key_format: str | None = None
    key_format_versions: str | None = None
    own_uri: bool = True

    def attributes(self, rewrite: UriRewriter = _same, with_iv: bool = True) -> str:
        uri = rewrite(self.uri) if self.own_uri else self.uri
        attrs = f'METHOD={self.method},URI="{uri}"'
        if self.iv is not None and with_iv:
            attrs += f",IV=0x{self.iv.hex().upper()}"
        if self.key_format is not None:
            attrs += f',KEYFORMAT="{self.key_format}"'
        if self.key_format_versions is not None:
            attrs += f',KEYFORMATVERSIONS="{self.key_format_versions}"'
        return attrs

    def render(self, rewrite: UriRewriter = _same) -> str:
        return "#EXT-X-KEY:" + self.attributes(rewrite)

    def render_session(self, rewrite: UriRewriter = _same) -> str:
        # 4.4.6.5: the same attributes as EXT-X-KEY; a session key names the
        # key, not one segment's IV.
        return "#EXT-X-SESSION-KEY:" + self.attributes(rewrite, with_iv=False)

    @classmethod
    def parse(cls, line: str) -> KeyTag:
        """Read an ``EXT-X-KEY`` or ``EXT-X-SESSION-KEY`` line back."""
        for prefix in ("#EXT-X-KEY:", "#EXT-X-SESSION-KEY:"):
            if line.startswith(prefix):
                attrs = parse_attributes(line[len(prefix):])
                break
        else:
            raise PlaylistError(f"not a key tag: {line[:40]!r}")
        if "METHOD" not in attrs or "URI" not in attrs:
            raise PlaylistError("a key tag needs METHOD and URI")
        iv_text = attrs.get("IV")
        iv = None
        if iv_text is not None:
            if not iv_text.lower().startswith("0x") or len(iv_text) != 34:
                raise PlaylistError("IV is a 128-bit hexadecimal-sequence")
            try:
                iv = bytes.fromhex(iv_text[2:])
            except ValueError as exc:
                raise PlaylistError("IV is a 128-bit hexadecimal-sequence") from exc
        uri = attrs["URI"]
        own = not uri.startswith(("data:", "skd:"))
        return cls(attrs["METHOD"], uri, iv, attrs.get("KEYFORMAT"), attrs.get("KEYFORMATVERSIONS"), own)


def parse_attributes(text: str) -> dict[str, str]:
    """An attribute list (4.2): ``NAME=value`` pairs, quoted strings unquoted."""
    attrs: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        eq = text.find("=", pos)
        if eq < 0:
            raise PlaylistError("an attribute has no value")
        name = text[pos:eq]
        if not name or not all(c.isupper() or c.isdigit() or c == "-" for c in name):
            raise PlaylistError(f"bad attribute name {name!r}")
        pos = eq + 1
        if text.startswith('"', pos):
            end = text.find('"', pos + 1)
            if end < 0:
                raise PlaylistError("unterminated quoted string")
            value = text[pos + 1 : end]
            pos = end + 1
        else:
            end = text.find(",", pos)
            end = len(text) if end < 0 else end
            value = text[pos:end]
            pos = end
        if name in attrs:
            raise PlaylistError(f"attribute {name} given twice")
        attrs[name] = value
        if pos < len(text):
            if text[pos] != ",":
                raise PlaylistError("attributes are separated by commas")
            pos += 1
            if pos == len(text):
                raise PlaylistError("trailing comma in an attribute list")
    return attrs


@dataclass(frozen=True, slots=True)
class PartEntry:
    """A partial segment (4.4.4.9); its bytes are served from memory."""

    uri: str
    duration: Fraction
    independent: bool
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    sequence: int
    uri: str
    duration: Fraction
    program_date_time: float
    discontinuity: bool
    init_uri: str | None
    size: int
    parts: tuple[PartEntry, ...] = ()
    keys: tuple[KeyTag, ...] = ()
    """The ``EXT-X-KEY`` tags in force for this segment and its parts (none: clear)."""
    start: Fraction | None = None
    """Media time at which the segment starts (the stream's timeline, in
    seconds): what the DASH manifest's SegmentTimeline is written from."""


@dataclass(frozen=True, slots=True)
class RenditionReport:
    """Where another variant's live edge is (4.4.5.4)."""

    uri: str
    last_msn: int
    last_part: int | None


@dataclass(slots=True)
class OpenSegment:
    """The parts of the segment being written (LL-HLS)."""

    sequence: int
    discontinuity: bool
    init_uri: str | None
    parts: list[PartEntry] = field(default_factory=list)
    keys: tuple[KeyTag, ...] = ()


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
    part_target: Fraction | None = None
    segments: collections.deque[SegmentEntry] = field(default_factory=collections.deque)
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    ended: bool = False
    open: OpenSegment | None = None
    next_part_uri: str | None = None
    playlist_type: str | None = None
    """``VOD`` for a finished file (4.4.3.5); ``None`` for live."""

    @property
    def low_latency(self) -> bool:
        return self.part_target is not None

    def add_part(
        self,
        sequence: int,
        part: PartEntry,
        discontinuity: bool,
        init_uri: str | None,
        keys: tuple[KeyTag, ...] = (),
    ) -> None:
        """Add a partial segment of the segment ``sequence`` (not yet complete);
        ``keys`` are its segment's key tags."""
        if self.open is None or self.open.sequence != sequence:
            self.open = OpenSegment(sequence, discontinuity, init_uri, keys=keys)
        self.open.parts.append(part)

    def last_position(self) -> tuple[int, int | None]:
        """The newest (media sequence number, part index) in the playlist."""
        if self.open is not None and self.open.parts:
            return self.open.sequence, len(self.open.parts) - 1
        if self.segments:
            last = self.segments[-1]
            return last.sequence, (len(last.parts) - 1 if last.parts else None)
        return -1, None

    def has(self, msn: int, part: int | None) -> bool:
        """Whether a blocking reload for ``_HLS_msn``/``_HLS_part`` can be
        answered (6.2.5.2): segment ``msn`` is complete, or, with a part,
        that part of it exists."""
        if self.ended:
            return True
        last_complete = self.segments[-1].sequence if self.segments else -1
        if part is None:
            return msn <= last_complete
        if msn <= last_complete:
            return True
        return self.open is not None and self.open.sequence == msn and part < len(self.open.parts)

    def part(self, uri: str) -> PartEntry | None:
        if self.open is not None:
            for p in self.open.parts:
                if p.uri == uri:
                    return p
        for seg in reversed(self.segments):
            for p in seg.parts:
                if p.uri == uri:
                    return p
        return None

    def add(self, entry: SegmentEntry) -> list[SegmentEntry]:
        """Append a segment; return the segments that left the window."""
        if self.ended:
            raise PlaylistError("playlist already ended")
        if self.segments and entry.sequence != self.segments[-1].sequence + 1:
            raise PlaylistError("media sequence numbers must increase by one")
        if not self.segments:
            self.media_sequence = entry.sequence
        if self.open is not None and self.open.sequence == entry.sequence:
            entry = replace(entry, parts=tuple(self.open.parts))
            self.open = None
        self.segments.append(entry)
        self._drop_old_parts()
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

    def _drop_old_parts(self) -> None:
        """Parts more than three target durations from the live edge leave
        the playlist (4.4.4.9); their bytes are freed with them."""
        age = Fraction(0)
        horizon = 3 * self.target_duration
        for i in range(len(self.segments) - 1, -1, -1):
            seg = self.segments[i]
            if age > horizon and seg.parts:
                self.segments[i] = replace(seg, parts=())
            age += seg.duration

    def end(self) -> None:
        self.ended = True
        self.open = None
        self.next_part_uri = None

    @property
    def can_skip_until(self) -> int:
        return 6 * self.target_duration

    def skippable(self) -> int:
        """Segments a delta update may leave out (6.2.5.1): those that end
        more than CAN-SKIP-UNTIL seconds before the end of the playlist."""
        total = sum((s.duration for s in self.segments), Fraction(0))
        end = Fraction(0)
        count = 0
        for seg in self.segments:
            end += seg.duration
            if total - end < self.can_skip_until:
                break
            count += 1
        return count

    @property
    def rounded_max_duration(self) -> int:
        return max((round(s.duration) for s in self.segments), default=0)

    def render(
        self,
        rewrite: UriRewriter = _same,
        skip: bool = False,
        reports: Sequence[RenditionReport] = (),
    ) -> str:
        """The playlist text; ``skip`` asks for a delta update (``_HLS_skip=YES``)."""
        target = max(self.target_duration, self.rounded_max_duration)
        skipped = self.skippable() if skip and self.part_target is not None else 0
        lines = [
            "#EXTM3U",
            # A delta update carries EXT-X-SKIP, which needs version 9.
            f"#EXT-X-VERSION:{max(self.version, 9) if skipped else self.version}",
            # 4.4.3.1: every EXTINF rounded to the nearest integer must not exceed it.
            f"#EXT-X-TARGETDURATION:{target}",
        ]
        if self.part_target is not None:
            # 4.4.3.8: blocking reload, part hold-back of three part targets,
            # delta updates for segments older than six target durations.
            # Both rounded up, so that no part exceeds the printed target and
            # the hold-back is at least three printed targets.
            part_target = _ceil_decimal(self.part_target, 5)
            part_hold_back = _ceil_decimal(3 * part_target, 3)
            lines.append(
                f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={self.can_skip_until:.1f},"
                f"PART-HOLD-BACK={float(part_hold_back):.3f}"
            )
            lines.append(f"#EXT-X-PART-INF:PART-TARGET={float(part_target):.5f}")
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}")
        if self.playlist_type is not None:
            lines.append(f"#EXT-X-PLAYLIST-TYPE:{self.playlist_type}")
        if self.discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        if self.version >= 6:
            lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        current_map: str | None = None
        # 4.4.4.4: a key tag applies to every segment and part after it, up
        # to the next one. The first listed segment (after a skip too) always
        # states its key, so does the first after a discontinuity.
        current_keys: tuple[KeyTag, ...] | None = None
        for i, seg in enumerate(self.segments):
            if i < skipped:
                continue
            if seg.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if seg.init_uri is not None and seg.init_uri != current_map:
                current_keys = _clear_for_map(lines, current_keys)
                lines.append(f'#EXT-X-MAP:URI="{rewrite(seg.init_uri)}"')
                current_map = seg.init_uri
            if seg.keys != current_keys or seg.discontinuity:
                lines.extend(_key_lines(seg.keys, current_keys, rewrite))
                current_keys = seg.keys
            if i == skipped or seg.discontinuity:
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(seg.program_date_time)}")
            for part in seg.parts:
                lines.append(_part_line(part, rewrite))
            lines.append(f"#EXTINF:{float(seg.duration):.5f},")
            lines.append(rewrite(seg.uri))
        if self.open is not None and self.open.parts and not self.ended:
            if self.open.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if self.open.init_uri is not None and self.open.init_uri != current_map:
                current_keys = _clear_for_map(lines, current_keys)
                lines.append(f'#EXT-X-MAP:URI="{rewrite(self.open.init_uri)}"')
            if self.open.keys != current_keys or self.open.discontinuity:
                lines.extend(_key_lines(self.open.keys, current_keys, rewrite))
            for part in self.open.parts:
                lines.append(_part_line(part, rewrite))
        if self.next_part_uri is not None and not self.ended:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{rewrite(self.next_part_uri)}"')
        for report in reports:
            attrs = f'URI="{rewrite(report.uri)}",LAST-MSN={report.last_msn}'
            if report.last_part is not None:
                attrs += f",LAST-PART={report.last_part}"
            lines.append(f"#EXT-X-RENDITION-REPORT:{attrs}")
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


def _clear_for_map(lines: list[str], keys: tuple[KeyTag, ...] | None) -> tuple[KeyTag, ...] | None:
    """Before an ``EXT-X-MAP``: a whole-segment key in force would apply to
    the init segment too (4.4.4.4, 4.4.4.5), which is written clear, so the
    key is switched off and stated again after the map."""
    if keys and any(k.method == "AES-128" for k in keys):
        lines.append("#EXT-X-KEY:METHOD=NONE")
        return ()
    return keys


def _key_lines(keys: tuple[KeyTag, ...], before: tuple[KeyTag, ...] | None, rewrite: UriRewriter) -> list[str]:
    """The key tags that put ``keys`` in force; ``METHOD=NONE`` when clear
    segments follow encrypted ones."""
    if keys:
        return [k.render(rewrite) for k in keys]
    if before:
        return ["#EXT-X-KEY:METHOD=NONE"]
    return []


def _part_line(part: PartEntry, rewrite: UriRewriter) -> str:
    line = f'#EXT-X-PART:DURATION={float(part.duration):.5f},URI="{rewrite(part.uri)}"'
    return line + (",INDEPENDENT=YES" if part.independent else "")


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


def variant_order(v: Variant) -> tuple[int, int, str]:
    """Highest BANDWIDTH first (players that start on the first variant start
    on the best one; hls.js and Safari pick by bandwidth anyway); ties by the
    taller picture, then by URI, so the order never depends on which
    rendition happened to start first."""
    return (-v.bandwidth, -(v.resolution[1] if v.resolution else 0), v.uri)


def render_multivariant(
    variants: Sequence[Variant],
    version: int = 7,
    rewrite: UriRewriter = _same,
    session_keys: Sequence[KeyTag] = (),
) -> str:
    """``session_keys`` become ``EXT-X-SESSION-KEY`` tags (4.4.6.5), so that a
    player can fetch or license the key before the first media playlist."""
    if not variants:
        raise PlaylistError("a multivariant playlist needs at least one variant")
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    lines.extend(k.render_session(rewrite) for k in session_keys)
    for v in sorted(variants, key=variant_order):
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


def _ceil_decimal(value: Fraction, places: int) -> Fraction:
    """``value`` rounded up to ``places`` decimals (exactly, so that printing
    it with that many decimals does not round it down)."""
    scale = 10**places
    return Fraction(math.ceil(value * scale), scale)


def ceil_seconds(value: float | Fraction) -> int:
    return max(1, math.ceil(value))
