"""Live effects: stages between decode and the transcode ladder.

Build an :class:`~effects.chain.EffectChain` from effect specs
(``"watermark:text=FANZ,position=bottom-right"`` or the JSON form), run its
``process_video`` / ``process_audio`` off the event loop for each decoded
frame, call ``update`` to change effects while live, and read ``stats`` for
metrics. ``fanz-media effects`` (:func:`effects.cli.main`) lists the
effects and applies them to files.

Importing the package (or :mod:`effects.config`, :mod:`effects.catalog`)
loads no image library; the chain, the registry and the model store load
NumPy, OpenCV and Pillow (the ``effects`` extra) when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from effects.catalog import EffectCatalog, EffectMeta, StageKind, default_catalog
from effects.errors import EffectOptionError, EffectsError, MediaFormatError, ModelNotFoundError
from effects.options import EffectSpec

_LAZY = {
    "EffectChain": "effects.chain",
    "StageStats": "effects.chain",
    "ModelStore": "effects.models",
    "EffectRegistry": "effects.registry",
    "default_registry": "effects.registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'effects' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "EffectCatalog",
    "EffectChain",
    "EffectMeta",
    "EffectOptionError",
    "EffectRegistry",
    "EffectSpec",
    "EffectsError",
    "MediaFormatError",
    "ModelNotFoundError",
    "ModelStore",
    "StageKind",
    "StageStats",
    "default_catalog",
    "default_registry",
]
