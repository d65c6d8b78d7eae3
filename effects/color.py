"""Colour filters: presets and ``.cube`` LUT files.

Presets are cheap closed forms: ``warm`` and ``cool`` are per-channel
curves (``cv2.LUT``), ``mono`` is luma, ``vintage`` is a sepia matrix
(``cv2.transform``) with lifted blacks and a little fade. A ``.cube`` file is
parsed once when the stage is built (1D or 3D) and baked for per-frame use
(see :class:`effects.cube.BakedLut`). ``strength`` mixes the filtered
frame with the original.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from effects import catalog
from effects.cube import BakedLut, parse_cube
from effects.errors import CubeParseError, EffectOptionError
from effects.stage import EffectInfo, Image, StageContext

PRESETS = catalog.COLOR_PRESETS

# Sepia as a BGR -> BGR matrix (rows produce B, G, R from B, G, R inputs).
_SEPIA = np.array(
    [[0.131, 0.534, 0.272],
     [0.168, 0.686, 0.349],
     [0.189, 0.769, 0.393]],
    dtype=np.float32,
)


def _curves(red: float, green: float, blue: float) -> NDArray[Any]:
    """Per-channel gamma curves as a 1x256x3 BGR table (gamma < 1 lifts)."""
    levels = np.arange(256, dtype=np.float32) / 255.0
    table = np.stack([levels ** blue, levels ** green, levels ** red], axis=-1)
    return np.round(table * 255.0).astype(np.uint8).reshape(1, 256, 3)


def apply_preset(image: Image, preset: str) -> Image:
    """The preset's look on a BGR frame (a new array)."""
    if preset == "warm":
        return cv2.LUT(image, _curves(0.85, 0.97, 1.18))
    if preset == "cool":
        return cv2.LUT(image, _curves(1.18, 1.0, 0.85))
    if preset == "mono":
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    if preset == "vintage":
        sepia = cv2.transform(image, _SEPIA)
        # Faded blacks and softened whites: 0 -> 24, 255 -> 235.
        return cv2.convertScaleAbs(sepia, alpha=211 / 255, beta=24)
    return image.copy()


class ColourFilter:
    """The colour filter stage."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._preset: str = options["preset"]
        self._strength: float = options["strength"]
        self._lut: BakedLut | None = None
        if options["lut"]:
            path = Path(options["lut"])
            try:
                text = path.read_text(encoding="utf-8", errors="strict")
            except (OSError, UnicodeDecodeError) as exc:
                raise EffectOptionError(f"color: option lut: cannot read {str(path)!r}: {exc}") from exc
            try:
                self._lut = BakedLut(parse_cube(text))
            except CubeParseError as exc:
                raise EffectOptionError(f"color: option lut: {path.name}: {exc}") from exc
        if self._preset == "none" and self._lut is None:
            raise EffectOptionError("color: give preset=... or lut=FILE.cube")

    def process(self, image: Image) -> Image:
        out = image
        if self._preset != "none":
            out = apply_preset(out, self._preset)
        if self._lut is not None:
            out = self._lut.apply(out)
        if self._strength < 1.0:
            out = cv2.addWeighted(out, self._strength, image, 1.0 - self._strength, 0.0)
        return out


def _build(options: Mapping[str, Any], context: StageContext) -> ColourFilter:
    return ColourFilter(options)


EFFECT = EffectInfo.of(catalog.COLOR, _build)
