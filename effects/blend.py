"""Alpha blending of small RGBA-like overlays onto BGR frames, in integer
NumPy arithmetic on the overlay's region only."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from effects.stage import Image


def blend_bgra(image: Image, overlay: NDArray[Any], x: int, y: int, opacity: float = 1.0) -> None:
    """Blend a BGRA ``overlay`` onto ``image`` in place with its top-left at
    (``x``, ``y``); parts outside the frame are clipped."""
    height, width = image.shape[:2]
    oh, ow = overlay.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + ow), min(height, y + oh)
    if x0 >= x1 or y0 >= y1:
        return
    part = overlay[y0 - y:y1 - y, x0 - x:x1 - x]
    alpha = part[:, :, 3:4].astype(np.uint16)
    if opacity < 1.0:
        alpha = ((alpha * round(opacity * 256)) >> 8).astype(np.uint16)
    roi = image[y0:y1, x0:x1]
    mixed = roi.astype(np.uint16) * (255 - alpha) + part[:, :, :3].astype(np.uint16) * alpha
    roi[:] = ((mixed + 127) // 255).astype(np.uint8)


def warp_bgra(overlay: NDArray[Any], matrix: NDArray[np.float64], image: Image) -> None:
    """Warp a BGRA ``overlay`` by the 2x3 affine ``matrix`` (overlay to frame
    coordinates) and blend it onto ``image`` in place. Only the warped
    overlay's bounding box is computed, not the whole frame."""
    height, width = image.shape[:2]
    oh, ow = overlay.shape[:2]
    corners = np.array([[0, 0, 1], [ow, 0, 1], [0, oh, 1], [ow, oh, 1]], np.float64) @ matrix.T
    x0 = max(0, int(np.floor(corners[:, 0].min())))
    y0 = max(0, int(np.floor(corners[:, 1].min())))
    x1 = min(width, int(np.ceil(corners[:, 0].max())))
    y1 = min(height, int(np.ceil(corners[:, 1].max())))
    if x0 >= x1 or y0 >= y1:
        return
    local = matrix.copy()
    local[0, 2] -= x0
    local[1, 2] -= y0
    warped = cv2.warpAffine(overlay, local, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    blend_bgra(image, warped, x0, y0)
