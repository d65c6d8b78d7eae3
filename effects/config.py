"""Settings of the live effects (the ``[effects]`` section)."""

from __future__ import annotations

from dataclasses import dataclass

from effects.chain import EffectChain
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
        "Time per video frame all effects of a stream may take before the costliest optional ones "
        "skip frames (counted). 0: never skip.",
        0.0,
    )

    def __post_init__(self) -> None:
        # Refuse a bad effect at start-up, not when the first stream arrives.
        for specs in (self.default, *self.streams.values()):
            try:
                EffectChain(specs)
            except EffectsError as exc:
                raise ValueError(f"effects: {exc}") from exc

    def specs_for(self, name: str) -> list[str]:
        return list(self.streams.get(name, self.default))
