"""The table of effect implementations and spec parsing against it.

:func:`default_registry` lists every built-in effect with the code that
builds its stages (importing NumPy, OpenCV and Pillow); a registry is a
plain object passed to whoever needs it (the chain, the CLI), so tests and
the composition root can add or leave out effects without global state.
Code that only checks specs uses :func:`effects.catalog.default_catalog`,
which imports none of the implementations.
"""

from __future__ import annotations

from effects import ar, background, beauty, catalog, color, privacy, voice, watermark
from effects.catalog import EffectCatalog
from effects.stage import EffectInfo


class EffectRegistry(EffectCatalog[EffectInfo]):
    """Effects by name, each able to build its stage."""


def default_registry() -> EffectRegistry:
    """All built-in effects, in the catalog's order (privacy first, so
    later stages never see the hidden parts)."""
    implementations = {
        info.name: info
        for info in (
            background.EFFECT,
            privacy.EFFECT,
            beauty.EFFECT,
            color.EFFECT,
            ar.EFFECT,
            watermark.EFFECT,
            voice.EFFECT,
        )
    }
    return EffectRegistry(implementations[meta.name] for meta in catalog.BUILTIN)
