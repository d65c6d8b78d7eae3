"""Beauty: skin smoothing kept to skin, plus brightness and warmth.

Smoothing is a bilateral filter (edge-preserving: it flattens pores and
small blemishes but keeps eyes, lips and hair edges) run at a third of the
frame size (the change it makes is low-frequency, so it is computed small
and added back at full size),
mixed back only where a skin mask says skin. The skin mask is the classic
YCrCb box (Cr 133..173, Cb 77..127), feathered with a blur so no seam
shows. Brightness and warmth are one 256-entry lookup table per channel,
applied with ``cv2.LUT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from effects import catalog
from effects.stage import EffectInfo, Image, StageContext


def skin_mask(image: Image) -> NDArray[Any]:
    """255 where the pixel's chroma is in the skin range, feathered."""
    ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    mask = cv2.inRange(ycrcb, (0, 133, 77), (255, 173, 127))
    return cv2.GaussianBlur(mask, (0, 0), max(1.0, image.shape[0] / 120))


def tone_table(brightness: float, warmth: float) -> NDArray[Any]:
    """A 1x256x3 BGR lookup table: ``brightness`` lifts or lowers all
    channels with a gamma curve (no clipping of highlights); ``warmth``
    raises red and lowers blue (negative: the reverse)."""
    levels = np.arange(256, dtype=np.float32) / 255.0
    gamma = float(2.0 ** (-brightness))
    base = levels ** gamma
    red = np.clip(base * (1.0 + 0.12 * warmth), 0.0, 1.0)
    blue = np.clip(base * (1.0 - 0.12 * warmth), 0.0, 1.0)
    table = np.stack([blue, base, red], axis=-1)
    return np.round(table * 255.0).astype(np.uint8).reshape(1, 256, 3)


class Beauty:
    """The beauty stage."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._smooth: float = options["smooth"]
        self._table = tone_table(options["brightness"], options["warmth"])
        self._identity = options["brightness"] == 0 and options["warmth"] == 0

    def process(self, image: Image) -> Image:
        if self._smooth > 0:
            image = self._smoothen(image)
        if not self._identity:
            image = cv2.LUT(image, self._table)
        return image

    def _smoothen(self, image: Image) -> Image:
        height, width = image.shape[:2]
        small = cv2.resize(image, (max(1, width // 3), max(1, height // 3)), interpolation=cv2.INTER_LINEAR)
        sigma_colour = 20 + 40 * self._smooth
        filtered = cv2.bilateralFilter(small, 5, sigma_colour, 3)
        mask = skin_mask(small)
        # The smoothing's change, at small size, kept to skin and scaled by
        # strength, then added back to the full-size frame: fine detail that
        # is not skin stays at full resolution.
        delta = cv2.subtract(filtered.astype(np.int16), small.astype(np.int16))
        weight = (mask.astype(np.float32) * (self._smooth / 255.0))[:, :, None]
        delta = (delta * weight).astype(np.int16)
        delta = cv2.resize(delta, (width, height), interpolation=cv2.INTER_LINEAR)
        # One saturating pass, uint8 + int16 into uint8: the same result as
        # widening the frame, adding, clipping and narrowing, at a third of
        # the cost.
        return cv2.add(image, delta, dtype=cv2.CV_8U)


def _build(options: Mapping[str, Any], context: StageContext) -> Beauty:
    return Beauty(options)


EFFECT = EffectInfo.of(catalog.BEAUTY, _build)
