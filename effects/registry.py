"""The table of effects and spec parsing against it.

:func:`default_registry` lists every built-in effect; a registry is a plain
object passed to whoever needs it (the chain, the CLI), so tests and the
composition root can add or leave out effects without global state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from effects import ar, background, beauty, color, privacy, voice, watermark
from effects.errors import EffectOptionError
from effects.options import EffectSpec, check_values, split_spec_text
from effects.stage import EffectInfo


class EffectRegistry:
    """Effects by name."""

    def __init__(self, effects: Iterable[EffectInfo]) -> None:
        self._effects: dict[str, EffectInfo] = {}
        for info in effects:
            if info.name in self._effects:
                raise ValueError(f"effect {info.name} registered twice")
            self._effects[info.name] = info

    def __iter__(self) -> Iterator[EffectInfo]:
        return iter(self._effects.values())

    def __contains__(self, name: object) -> bool:
        return name in self._effects

    def get(self, name: str) -> EffectInfo:
        try:
            return self._effects[name]
        except KeyError:
            known = ", ".join(self._effects)
            raise EffectOptionError(f"unknown effect {name!r} (effects: {known})") from None

    def spec(self, name: str, values: Mapping[str, Any] | None = None) -> EffectSpec:
        """A checked spec for effect ``name`` with ``values`` (text or JSON
        values; missing options take their defaults)."""
        info = self.get(name)
        return EffectSpec(info.name, check_values(info.name, info.options, values or {}))

    def parse(self, text: str) -> EffectSpec:
        """Parse ``NAME:key=value,...``."""
        name, values = split_spec_text(text)
        return self.spec(name, values)

    def from_settings(self, item: Mapping[str, Any]) -> EffectSpec:
        """Parse the JSON form ``{"effect": NAME, key: value, ...}``."""
        if not isinstance(item, Mapping):
            raise EffectOptionError(f"an effect setting must be an object, got {type(item).__name__}")
        name = item.get("effect")
        if not isinstance(name, str):
            raise EffectOptionError(f"an effect setting needs \"effect\": NAME, got {dict(item)!r}")
        values = {key: value for key, value in item.items() if key != "effect"}
        return self.spec(name.strip().lower(), values)

    def coerce(self, spec: EffectSpec | str | Mapping[str, Any]) -> EffectSpec:
        """Accept any of the three forms."""
        if isinstance(spec, EffectSpec):
            return self.spec(spec.name, spec.options())
        if isinstance(spec, str):
            return self.parse(spec)
        return self.from_settings(spec)

    def describe(self) -> str:
        """Every effect with its options, for ``effects list``."""
        return "\n\n".join(info.describe() for info in self)


def default_registry() -> EffectRegistry:
    """All built-in effects, in the order a creator would usually chain
    them (privacy first, so later stages never see the hidden parts)."""
    return EffectRegistry(
        [
            background.EFFECT,
            privacy.EFFECT,
            beauty.EFFECT,
            color.EFFECT,
            ar.EFFECT,
            watermark.EFFECT,
            voice.EFFECT,
        ]
    )
