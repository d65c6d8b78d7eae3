"""Person/background segmentation with MediaPipe's landscape selfie model.

The model takes a 256x144 RGB image scaled to [0, 1] and returns a 256x144
person probability. The mask is smoothed over time (an exponential moving
average) so its edge does not flicker, and upscaled to the frame with
linear interpolation, which gives a soft edge for free.

The work is split in three so that the costly middle can run on another
thread: :meth:`Segmenter.blob` scales the frame to model size (cheap, in
the caller's thread, so the job holds no reference to a frame that later
stages change in place), :meth:`Segmenter.infer` runs the network on that
blob (the cost: several milliseconds), and :meth:`Segmenter.smooth` folds
the result into the running mask, in the order results are collected.
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
    """Person masks for consecutive frames. Not thread-safe: one per stage,
    and at most one :meth:`infer` running at a time."""

    def __init__(self, models: ModelStore, smoothing: float = 0.5) -> None:
        self._net = models.network(SEGMENTATION)
        self._smoothing = smoothing
        self._previous: NDArray[Any] | None = None

    @staticmethod
    def blob(image: Image) -> NDArray[np.float32]:
        """The network's input for ``image``: RGB at model size in [0, 1]."""
        return np.asarray(cv2.dnn.blobFromImage(image, 1 / 255.0, _SIZE, (0, 0, 0), swapRB=True), np.float32)

    def infer(self, blob: NDArray[np.float32]) -> NDArray[np.float32]:
        """The raw person probability (144x256) for one blob."""
        self._net.setInput(blob)
        return np.asarray(self._net.forward(), dtype=np.float32).reshape(_SIZE[1], _SIZE[0])

    def smooth(self, mask: NDArray[np.float32]) -> NDArray[Any]:
        """Fold a raw mask into the running one and return the result."""
        if self._previous is not None and self._smoothing > 0:
            mask = np.asarray(
                cv2.addWeighted(self._previous, self._smoothing, mask, 1.0 - self._smoothing, 0.0), np.float32
            )
        self._previous = mask
        return mask

    def small_mask(self, image: Image) -> NDArray[Any]:
        """The person probability at model resolution (144x256), smoothed
        with the previous frames' masks, all in the caller's thread."""
        return self.smooth(self.infer(self.blob(image)))

    def mask(self, image: Image) -> NDArray[Any]:
        """The person probability at frame size, in [0, 1]."""
        height, width = image.shape[:2]
        return cv2.resize(self.small_mask(image), (width, height), interpolation=cv2.INTER_LINEAR)
