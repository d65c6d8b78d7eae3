"""Watermark: a PNG with alpha and/or a line of text, blended at a corner.

Sizes are relative to the frame (``scale`` is the watermark's width as a
fraction of the frame's width, ``margin`` a fraction of its height), so one
setting looks the same at every input resolution. The overlay is rendered
once per frame size with Pillow (PyAV's FFmpeg has no drawtext) and cached;
per frame only the covered region is blended. Applied once before the
ladder, every rung carries it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from effects import catalog
from effects.blend import blend_bgra
from effects.errors import EffectOptionError
from effects.options import parse_colour
from effects.stage import EffectInfo, Image, StageContext

POSITIONS = catalog.WATERMARK_POSITIONS


class Watermark:
    """The watermark stage."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._text: str = options["text"]
        self._position: str = options["position"]
        self._margin: float = options["margin"]
        self._opacity: float = options["opacity"]
        self._scale: float = options["scale"]
        self._colour = parse_colour(options["colour"])
        self._font_path: str = options["font"]
        self._logo: PILImage.Image | None = None
        if options["image"]:
            path = Path(options["image"])
            if not path.is_file():
                raise EffectOptionError(f"watermark: option image: no such file {str(path)!r}")
            try:
                with PILImage.open(path) as source:
                    self._logo = source.convert("RGBA")
            except OSError as exc:
                raise EffectOptionError(f"watermark: option image: cannot read {str(path)!r}: {exc}") from exc
        if not self._text and self._logo is None:
            raise EffectOptionError("watermark: give text=... or image=... (or both)")
        if self._font_path and not Path(self._font_path).is_file():
            raise EffectOptionError(f"watermark: option font: no such file {self._font_path!r}")
        self._cache: tuple[tuple[int, int], NDArray[Any], tuple[int, int]] | None = None

    def process(self, image: Image) -> Image:
        height, width = image.shape[:2]
        if self._cache is None or self._cache[0] != (width, height):
            overlay = self.render(width, height)
            self._cache = ((width, height), overlay, self._place(width, height, overlay))
        _, overlay, (x, y) = self._cache
        blend_bgra(image, overlay, x, y, self._opacity)
        return image

    def render(self, width: int, height: int) -> NDArray[Any]:
        """The BGRA overlay for a frame of this size."""
        target_w = max(8, round(width * self._scale))
        parts: list[PILImage.Image] = []
        if self._logo is not None:
            ratio = target_w / self._logo.width
            size = (target_w, max(1, round(self._logo.height * ratio)))
            parts.append(self._logo.resize(size, PILImage.Resampling.LANCZOS))
        if self._text:
            parts.append(self._render_text(target_w, height))
        canvas_w = int(max(part.width for part in parts))
        gap = max(2, height // 100)
        canvas_h = int(sum(part.height for part in parts) + gap * (len(parts) - 1))
        canvas = PILImage.new("RGBA", (canvas_w, canvas_h), (0, 0, 0, 0))
        top = 0
        for part in parts:
            left = {"top-left": 0, "bottom-left": 0}.get(self._position, canvas_w - part.width)
            if self._position == "center":
                left = (canvas_w - part.width) // 2
            canvas.alpha_composite(part, (left, top))
            top += part.height + gap
        rgba = np.asarray(canvas, dtype=np.uint8)
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)

    def _font(self, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        if self._font_path:
            return ImageFont.truetype(self._font_path, size)
        return ImageFont.load_default(size=size)

    def _render_text(self, target_w: int, frame_h: int) -> PILImage.Image:
        # Fit the text to the target width, but never taller than a tenth of
        # the frame: a short word must not become a banner.
        size = max(8, frame_h // 10)
        font = self._font(size)
        left, top, right, bottom = font.getbbox(self._text)
        if right - left > target_w:
            size = max(8, int(size * target_w / (right - left)))
            font = self._font(size)
            left, top, right, bottom = font.getbbox(self._text)
        left, top, right, bottom = int(left), int(top), int(np.ceil(right)), int(np.ceil(bottom))
        shadow = max(1, size // 16)
        layer = PILImage.new("RGBA", (right - left + shadow + 2, bottom - top + shadow + 2), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        draw.text((1 - left + shadow, 1 - top + shadow), self._text, font=font, fill=(0, 0, 0, 160))
        draw.text((1 - left, 1 - top), self._text, font=font, fill=(*self._colour, 255))
        return layer

    def _place(self, width: int, height: int, overlay: NDArray[Any]) -> tuple[int, int]:
        oh, ow = overlay.shape[:2]
        margin = round(self._margin * height)
        xs = {"left": margin, "right": width - ow - margin, "center": (width - ow) // 2}
        ys = {"top": margin, "bottom": height - oh - margin, "center": (height - oh) // 2}
        if self._position == "center":
            return xs["center"], ys["center"]
        vertical, horizontal = self._position.split("-")
        return xs[horizontal], ys[vertical]


def _build(options: Mapping[str, Any], context: StageContext) -> Watermark:
    return Watermark(options)


EFFECT = EffectInfo.of(catalog.WATERMARK, _build)
