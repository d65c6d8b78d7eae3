"""Background replacement (a colour or an image) and background blur.

The person mask comes from :class:`effects.segmentation.Segmenter`. The
mask is sharpened around ``threshold`` (a steep ramp rather than a hard
cut, so hair keeps a soft edge) and the frame is composed with
``cv2.blendLinear``, one C pass over the frame. Blur is done at a quarter
of the frame size and scaled back up: a wide Gaussian at full size would
cost more than the rest of the chain.

The model runs on the chain's helper thread (see :mod:`effects.workers`):
the frame is scaled to model size here, the network runs there while the
rest of the chain works, and the mask is collected on the next frame. A
frame's mask is therefore one or two frames old (``interval`` 2), about as
old as the reused masks between model runs were before; the very first
frame runs the model at once, so no frame goes out without a mask.

The stage is critical (never skipped when the chain runs late): a skipped
frame would show the background the creator asked to hide. When the chain
must save time it calls :meth:`Background.reuse`, which composes with the
last mask and starts no model run.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from effects import catalog
from effects.errors import EffectOptionError
from effects.options import parse_colour
from effects.segmentation import Segmenter
from effects.stage import EffectInfo, Image, StageContext


def sharpen_mask(mask: NDArray[np.float32], threshold: float, softness: float) -> NDArray[np.float32]:
    """Map probabilities to weights: 0 below ``threshold - softness/2``, 1
    above ``threshold + softness/2``, linear between."""
    width = max(softness, 1e-3)
    return np.clip((mask - (threshold - width / 2)) * (1.0 / width), 0.0, 1.0).astype(np.float32)


class Background:
    """The background stage."""

    def __init__(self, options: Mapping[str, Any], context: StageContext) -> None:
        self._mode: str = options["mode"]
        self._blur: float = options["blur"]
        self._threshold: float = options["threshold"]
        self._softness: float = options["softness"]
        red, green, blue = parse_colour(options["colour"])
        self._colour = (blue, green, red)
        self._picture: NDArray[Any] | None = None
        self._scaled: NDArray[Any] | None = None
        if self._mode == "image":
            path = Path(options["image"]) if options["image"] else None
            if path is None or not path.is_file():
                raise EffectOptionError(f"background: mode=image needs image=FILE; no such file {options['image']!r}")
            picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if picture is None:
                raise EffectOptionError(f"background: option image: cannot read {str(path)!r}")
            self._picture = picture
        self._segmenter = Segmenter(context.models, smoothing=options["smoothing"])
        self._helpers = context.helpers
        self._interval: int = options["interval"]
        self._frame = 0
        self._small: NDArray[Any] | None = None
        self._pending: Future[NDArray[np.float32]] | None = None
        self.last_weights: NDArray[np.float32] | None = None

    def process(self, image: Image) -> Image:
        # The model runs every ``interval`` frames, on a helper thread; its
        # mask is collected on the next frame, and reused until the next one
        # arrives (a person moves little in a frame or two, and the mask is
        # already smoothed over time).
        self._collect()
        if self._small is None:
            self._small = self._shape(self._segmenter.infer(self._segmenter.blob(image)))
        elif self._frame % self._interval == 0:
            self._pending = self._helpers.submit(self._segmenter.infer, self._segmenter.blob(image))
        self._frame += 1
        return self._compose(image)

    def reuse(self, image: Image) -> Image:
        """Compose with the last mask; no new model run is started."""
        if self._small is None:
            return self.process(image)
        self._collect()
        self._frame += 1
        return self._compose(image)

    def _collect(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._small = self._shape(pending.result())

    def _shape(self, raw: NDArray[np.float32]) -> NDArray[np.float32]:
        # The soft edge is shaped at model size, then scaled up once.
        return sharpen_mask(self._segmenter.smooth(raw), self._threshold, self._softness)

    def _compose(self, image: Image) -> Image:
        assert self._small is not None
        height, width = image.shape[:2]
        weights = np.asarray(cv2.resize(self._small, (width, height), interpolation=cv2.INTER_LINEAR), np.float32)
        self.last_weights = weights
        backdrop = self._backdrop(image, width, height)
        return cv2.blendLinear(image, backdrop, weights, 1.0 - weights)

    def _backdrop(self, image: Image, width: int, height: int) -> Image:
        if self._mode == "blur":
            # Linear is enough before a blur this strong, and far cheaper.
            small = cv2.resize(image, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_LINEAR)
            sigma = max(0.5, self._blur * small.shape[0] / 20)
            small = cv2.GaussianBlur(small, (0, 0), sigma)
            return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        if self._mode == "image" and self._picture is not None:
            if self._scaled is None or self._scaled.shape[:2] != (height, width):
                self._scaled = _cover(self._picture, width, height)
            return self._scaled
        if self._scaled is None or self._scaled.shape[:2] != (height, width):
            self._scaled = np.empty((height, width, 3), np.uint8)
            self._scaled[:] = self._colour
        return self._scaled


def _cover(picture: NDArray[Any], width: int, height: int) -> NDArray[Any]:
    """Scale and centre-crop ``picture`` to fill the frame."""
    ph, pw = picture.shape[:2]
    ratio = max(width / pw, height / ph)
    size = (max(width, round(pw * ratio)), max(height, round(ph * ratio)))
    scaled = cv2.resize(picture, size, interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
    x0 = (size[0] - width) // 2
    y0 = (size[1] - height) // 2
    return np.ascontiguousarray(scaled[y0:y0 + height, x0:x0 + width])


def _build(options: Mapping[str, Any], context: StageContext) -> Background:
    return Background(options, context)


EFFECT = EffectInfo.of(catalog.BACKGROUND, _build)
