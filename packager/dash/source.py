"""The DASH manifest of one HLS output, as it stands now.

The glue between :class:`packager.hls.output.StreamOutput` (which owns the
segments and their files) and the sans-I/O :func:`packager.dash.manifest.build`.
Call it on the event loop, where the output's playlists change.
"""

from __future__ import annotations

from fractions import Fraction

from drm.model import Protection
from packager.dash.manifest import Links, LiveTiming, VariantView, build
from packager.dash.mpd import Manifest
from packager.errors import ManifestError
from packager.hls.config import SegmentFormat
from packager.hls.output import StreamOutput


def has_segments(output: StreamOutput) -> bool:
    return any(v.playlist.segments for v in output.variants.values())


def manifest_of(output: StreamOutput, now: float, links: Links, dynamic: bool | None = None) -> Manifest:
    """``output``'s MPD: dynamic while the stream is live, static once it
    ended (or when ``dynamic`` says so: VOD writes a static one).

    Raises :class:`packager.errors.ManifestError` when the output cannot be
    described (MPEG-TS segments, no segment yet).
    """
    if output.config.segment_format is not SegmentFormat.FMP4:
        raise ManifestError("DASH needs fMP4 (CMAF) segments; hls.segment_format is mpegts")
    views = [
        VariantView(
            name=variant.name,
            segments=tuple(variant.playlist.segments),
            init_tracks=dict(variant.init_tracks),
            bandwidth=output.variant_entry(variant).bandwidth,
            frame_rate=variant.stats.frame_rate,
        )
        for variant in output.variants.values()
        if variant.playlist.segments
    ]
    timing = LiveTiming(
        Fraction(output.config.target_duration_s).limit_denominator(1000), output.config.live_window_segments
    )
    return build(
        views,
        boundaries=dict(output.period_starts),
        dynamic=(not output.ended) if dynamic is None else dynamic,
        now=now,
        timing=timing,
        clock_origin=output.clock_origin,
        links=links,
        protection=output.common_scheme or Protection.NONE,
        key_period_at=output.key_period_at,
    )
