"""Settings of the live effects (the ``[effects]`` section).

Light on purpose: specs are checked against the effects' metadata
(:mod:`effects.catalog`), so loading the config imports no image library
and works without the ``effects`` extra. Files an effect names (a LUT, a
backdrop) are opened when a stream's chain is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from effects.catalog import default_catalog
from effects.errors import EffectsError
from engine.settings import doc


@dataclass(frozen=True, slots=True)
class EffectsSettings:
    default: list[str] = doc(
        "Effects every transcoded stream gets, in order, as NAME:key=value,... "
        '(e.g. "watermark:text=FANZ,position=bottom-right"). `fanz-media effects list` names them all.',
        factory=list,
    )
    streams: dict[str, list[str]] = doc(
        "Effects for particular streams, by playback name, instead of the default list.", factory=dict
    )
    budget_ms: float = doc(
        "Time per video frame all effects of a stream may take: past it the costliest optional effects "
        "skip frames (fanz_effect_skipped_frames) and background and face privacy reuse their last mask "
        "and tracked faces (fanz_effect_reused_frames). 0: never skip.",
        0.0,
    )
    threads: int = doc(
        "Threads one stream's effects may use, its transcode thread included: the others run the "
        "segmentation and face detection networks while the stream's thread draws (1 to 8).",
        2,
    )

    def __post_init__(self) -> None:
        if not 1 <= self.threads <= 8:
            raise ValueError("effects.threads must be between 1 and 8")
        if self.budget_ms < 0:
            raise ValueError("effects.budget_ms must not be negative")
        # Refuse a bad effect at start-up, not when the first stream arrives.
        catalog = default_catalog()
        for specs in (self.default, *self.streams.values()):
            try:
                for spec in specs:
                    catalog.coerce(spec)
            except EffectsError as exc:
                raise ValueError(f"effects: {exc}") from exc

    def specs_for(self, name: str) -> list[str]:
        return list(self.streams.get(name, self.default))
