"""A recording's playlists and manifest, rendered from its journal state
(pure functions: the recorder writes them as it goes, start-up recovery
writes the final ones the same way)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from packager.recording.journal import JournalState, VariantLog

MULTIVARIANT = "index.m3u8"
MEDIA_PLAYLIST = "media.m3u8"
MANIFEST = "recording.json"


def render_media(variant: VariantLog, ended: bool) -> str:
    """The variant's VOD media playlist: ``EVENT`` while it grows, ``VOD``
    with ``EXT-X-ENDLIST`` once the recording is closed. Every segment is
    listed; each change of init segment is preceded by a discontinuity."""
    fmp4 = bool(variant.inits)
    longest = max((s.duration for s in variant.segments), default=Fraction(1))
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{7 if fmp4 else 3}",
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(longest))}",
        f"#EXT-X-PLAYLIST-TYPE:{'VOD' if ended else 'EVENT'}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    current_init: str | None = None
    for index, segment in enumerate(variant.segments):
        if index and (segment.discontinuity or segment.init != current_init):
            lines.append("#EXT-X-DISCONTINUITY")
        if segment.init is not None and segment.init != current_init:
            lines.append(f'#EXT-X-MAP:URI="{segment.init}"')
        current_init = segment.init
        lines.append(f"#EXTINF:{float(segment.duration):.6f},")
        lines.append(segment.file)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def render_multivariant(state: JournalState) -> str | None:
    """Every variant with at least one segment; ``None`` while none has."""
    entries = []
    for variant in state.variants.values():
        if not variant.segments:
            continue
        peak = max(int(s.size * 8 / s.duration) for s in variant.segments)
        average = int(variant.bytes * 8 / variant.duration)
        attributes = [f"BANDWIDTH={int(peak * 1.1) or 1}", f"AVERAGE-BANDWIDTH={average or 1}"]
        if variant.codecs:
            attributes.append(f'CODECS="{",".join(variant.codecs)}"')
        if variant.resolution is not None:
            attributes.append(f"RESOLUTION={variant.resolution[0]}x{variant.resolution[1]}")
        entries.append((peak, f"#EXT-X-STREAM-INF:{','.join(attributes)}\n{variant.name}/{MEDIA_PLAYLIST}"))
    if not entries:
        return None
    fmp4 = any(v.inits for v in state.variants.values())
    head = ["#EXTM3U", f"#EXT-X-VERSION:{7 if fmp4 else 3}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    body = [text for _, text in sorted(entries, key=lambda e: -e[0])]
    return "\n".join(head + body) + "\n"


def state_name(state: JournalState) -> str:
    """``recording``, ``complete``, ``stopped`` (a limit ended it early) or
    ``interrupted`` (closed at start-up after a crash)."""
    if not state.closed:
        return "recording"
    if state.interrupted:
        return "interrupted"
    return "stopped" if state.stop_reason else "complete"


def manifest(state: JournalState) -> dict[str, Any]:
    """The recording's manifest (``recording.json`` next to its playlists):
    what lists and the VOD service read without parsing playlists."""
    return {
        "id": state.recording_id,
        "stream": state.stream,
        "started_at": state.started_at,
        "ended_at": state.closed_at,
        "duration_s": round(float(state.duration), 3),
        "segments": state.segments,
        "bytes": state.bytes,
        "state": state_name(state),
        "interrupted": state.interrupted,
        "stop_reason": state.stop_reason,
        "format": state.segment_format,
        "playlist": MULTIVARIANT,
        "variants": {
            v.name: {"playlist": f"{v.name}/{MEDIA_PLAYLIST}", "segments": len(v.segments),
                     "duration_s": round(float(v.duration), 3), "codecs": list(v.codecs)}
            for v in state.variants.values()
        },
    }
