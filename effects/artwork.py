"""Procedural artwork for AR face filters, drawn with Pillow at start-up.

Each piece is a BGRA image plus the two points in it that land on the
subject's right and left eye; a similarity transform (scale, rotation,
shift) from those two points to the detected eyes anchors the piece to the
face, so it follows head tilt and distance. Anchor points may lie outside
the canvas (a crown sits above the eyes).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image as PILImage
from PIL import ImageDraw


@dataclass(frozen=True, slots=True)
class Artwork:
    image: NDArray[np.uint8]  # BGRA
    right_eye: tuple[float, float]  # image-left eye, in canvas pixels
    left_eye: tuple[float, float]


def _finish(canvas: PILImage.Image, right: tuple[float, float], left: tuple[float, float]) -> Artwork:
    bgra = cv2.cvtColor(np.asarray(canvas, dtype=np.uint8), cv2.COLOR_RGBA2BGRA)
    return Artwork(np.ascontiguousarray(bgra), right, left)


def glasses() -> Artwork:
    canvas = PILImage.new("RGBA", (400, 140), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for cx in (100, 300):
        draw.ellipse((cx - 80, 10, cx + 80, 130), fill=(20, 20, 30, 200), outline=(230, 40, 120, 255), width=12)
        draw.ellipse((cx - 50, 30, cx - 20, 55), fill=(255, 255, 255, 150))
    draw.rectangle((175, 55, 225, 68), fill=(230, 40, 120, 255))
    draw.line((20, 60, 0, 45), fill=(230, 40, 120, 255), width=10)
    draw.line((380, 60, 400, 45), fill=(230, 40, 120, 255), width=10)
    return _finish(canvas, (100, 70), (300, 70))


def mask() -> Artwork:
    # A cloth mask over nose and mouth; the eyes sit above the canvas.
    canvas = PILImage.new("RGBA", (360, 220), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rounded_rectangle((20, 10, 340, 210), radius=70, fill=(70, 150, 220, 245), outline=(30, 80, 140, 255),
                           width=8)
    for y in (70, 110, 150):
        draw.line((50, y, 310, y), fill=(40, 100, 170, 255), width=6)
    draw.line((20, 60, 0, 20), fill=(240, 240, 240, 255), width=8)
    draw.line((340, 60, 360, 20), fill=(240, 240, 240, 255), width=8)
    return _finish(canvas, (115, -20), (245, -20))


def crown() -> Artwork:
    canvas = PILImage.new("RGBA", (300, 160), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    points = [(10, 150), (10, 40), (80, 100), (150, 10), (220, 100), (290, 40), (290, 150)]
    draw.polygon(points, fill=(250, 200, 30, 255), outline=(170, 120, 0, 255), width=6)
    for cx, cy, colour in ((75, 125, (220, 30, 60)), (150, 120, (40, 120, 230)), (225, 125, (30, 180, 90))):
        draw.ellipse((cx - 14, cy - 14, cx + 14, cy + 14), fill=(*colour, 255))
    return _finish(canvas, (105, 290), (195, 290))


def whiskers() -> Artwork:
    canvas = PILImage.new("RGBA", (420, 200), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((180, 40, 240, 85), fill=(240, 120, 160, 255))
    for dy in (-22, 0, 22):
        draw.line((170, 90, 20, 90 + dy * 2), fill=(30, 30, 30, 255), width=5)
        draw.line((250, 90, 400, 90 + dy * 2), fill=(30, 30, 30, 255), width=5)
    return _finish(canvas, (160, -40), (260, -40))


def make(name: str) -> Artwork:
    """The artwork called ``name`` (one of :data:`effects.catalog.ARTWORK_NAMES`)."""
    return {"glasses": glasses, "mask": mask, "crown": crown, "whiskers": whiskers}[name]()


def anchor_matrix(art: Artwork, right_eye: NDArray[np.float32], left_eye: NDArray[np.float32]) -> NDArray[np.float64]:
    """The 2x3 similarity transform taking the artwork's eye points onto the
    face's eye points."""
    a1 = np.array(art.right_eye, np.float64)
    a2 = np.array(art.left_eye, np.float64)
    f1 = np.asarray(right_eye, np.float64)
    f2 = np.asarray(left_eye, np.float64)
    va, vf = a2 - a1, f2 - f1
    norm_a = float(np.hypot(*va))
    scale = float(np.hypot(*vf)) / norm_a if norm_a > 0 else 1.0
    angle = float(np.arctan2(vf[1], vf[0]) - np.arctan2(va[1], va[0]))
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    shift = f1 - rotation @ a1
    return np.hstack([rotation, shift[:, None]])
