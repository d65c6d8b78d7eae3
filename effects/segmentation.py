"""Person/background segmentation with MediaPipe's landscape selfie model.

The model takes a 256x144 RGB image scaled to [0, 1] and returns a 256x144
person probability. The mask is smoothed over time (an exponential moving
average) so its edge does not flicker, and upscaled to the frame with
linear interpolation, which gives a soft edge for free.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from effects.models import SEGMENTATION, ModelStore
from effects.stage import Image

_SIZE = (256, 144)


class Segmenter:
    """Person masks for consecutive frames. Not thread-safe: one per stage."""

    def __init__(self, models: ModelStore, smoothing: float = 0.5) -> None:
        self._net = models.network(SEGMENTATION)
        self._smoothing = smoothing
        self._previous: NDArray[Any] | None = None

    def small_mask(self, image: Image) -> NDArray[Any]:
        """The person probability at model resolution (144x256), smoothed
        with the previous frames' masks."""
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, _SIZE, (0, 0, 0), swapRB=True)
        self._net.setInput(blob)
        mask: NDArray[Any] = np.asarray(self._net.forward(), dtype=np.float32).reshape(_SIZE[1], _SIZE[0])
        if self._previous is not None and self._smoothing > 0:
            mask = cv2.addWeighted(self._previous, self._smoothing, mask, 1.0 - self._smoothing, 0.0)
        self._previous = mask
        return mask

    def mask(self, image: Image) -> NDArray[Any]:
        """The person probability at frame size, in [0, 1]."""
        height, width = image.shape[:2]
        return cv2.resize(self.small_mask(image), (width, height), interpolation=cv2.INTER_LINEAR)
