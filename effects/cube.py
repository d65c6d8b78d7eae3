"""Adobe/Resolve ``.cube`` LUT files: parsing and applying.

A ``.cube`` file is text: keywords (``TITLE``, ``LUT_1D_SIZE`` or
``LUT_3D_SIZE``, ``DOMAIN_MIN``, ``DOMAIN_MAX``), then one ``R G B`` line
per table entry, red varying fastest. Comments start with ``#``. The
parser takes text, not a path, so it is pure and fuzzable; sizes are
bounded (``LUT_3D_SIZE`` at most 256, ``LUT_1D_SIZE`` at most 65536) so a
hostile file cannot ask for gigabytes.

Applying: :func:`apply_3d` is exact trilinear interpolation in NumPy.
:class:`BakedLut` bakes the LUT once into a 128^3 table by that same
trilinear interpolation and then maps each pixel with one table lookup,
which is what a live stage can afford at 720p30.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from effects.errors import CubeParseError

MAX_3D_SIZE = 256
MAX_1D_SIZE = 65536
MAX_TEXT = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CubeLut:
    """A parsed LUT. ``table`` is ``(N, N, N, 3)`` indexed ``[b, g, r]`` for
    3D (red fastest in the file, so it is the last axis) or ``(N, 3)`` for
    1D; values are floats in the file's output range."""

    title: str
    dimensions: int
    size: int
    domain_min: tuple[float, float, float]
    domain_max: tuple[float, float, float]
    table: NDArray[np.float32]


def parse_cube(text: str) -> CubeLut:
    """Parse ``.cube`` text. Raises :class:`CubeParseError` with the line
    number on any malformed input."""
    if len(text) > MAX_TEXT:
        raise CubeParseError(f"cube file larger than {MAX_TEXT} characters")
    title = ""
    dimensions = 0
    size = 0
    domain_min = (0.0, 0.0, 0.0)
    domain_max = (1.0, 1.0, 1.0)
    rows: list[tuple[float, float, float]] = []
    expected = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        head = line.split(None, 1)[0]
        if head[0].isalpha():
            if rows:
                raise CubeParseError(f"line {number}: keyword {head} after table data")
            rest = line[len(head):].strip()
            if head == "TITLE":
                title = rest.strip('"')
            elif head in ("LUT_1D_SIZE", "LUT_3D_SIZE"):
                if dimensions:
                    raise CubeParseError(f"line {number}: more than one LUT size")
                dimensions = 1 if head == "LUT_1D_SIZE" else 3
                size = _int(rest, number)
                limit = MAX_1D_SIZE if dimensions == 1 else MAX_3D_SIZE
                if not 2 <= size <= limit:
                    raise CubeParseError(f"line {number}: {head} {size} outside 2..{limit}")
                expected = size if dimensions == 1 else size ** 3
            elif head == "DOMAIN_MIN":
                domain_min = _triple(rest, number)
            elif head == "DOMAIN_MAX":
                domain_max = _triple(rest, number)
            elif head in ("LUT_1D_INPUT_RANGE", "LUT_3D_INPUT_RANGE"):
                low, high = _pair(rest, number)
                domain_min, domain_max = (low, low, low), (high, high, high)
            else:
                raise CubeParseError(f"line {number}: unknown keyword {head}")
            continue
        if not dimensions:
            raise CubeParseError(f"line {number}: table data before LUT_1D_SIZE or LUT_3D_SIZE")
        if len(rows) >= expected:
            raise CubeParseError(f"line {number}: more than {expected} table entries")
        rows.append(_triple(line, number))
    if not dimensions:
        raise CubeParseError("no LUT_1D_SIZE or LUT_3D_SIZE")
    if len(rows) != expected:
        raise CubeParseError(f"expected {expected} table entries, found {len(rows)}")
    if any(high <= low for low, high in zip(domain_min, domain_max, strict=True)):
        raise CubeParseError("DOMAIN_MAX must exceed DOMAIN_MIN on every channel")
    table = np.asarray(rows, dtype=np.float32)
    if dimensions == 3:
        table = table.reshape(size, size, size, 3)
    return CubeLut(title, dimensions, size, domain_min, domain_max, table)


def _floats(text: str, count: int, number: int) -> list[float]:
    parts = text.split()
    if len(parts) != count:
        raise CubeParseError(f"line {number}: expected {count} numbers, got {text!r}")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise CubeParseError(f"line {number}: not a number in {text!r}") from None
    if not all(np.isfinite(values)):
        raise CubeParseError(f"line {number}: non-finite number in {text!r}")
    return values


def _triple(text: str, number: int) -> tuple[float, float, float]:
    a, b, c = _floats(text, 3, number)
    return a, b, c


def _pair(text: str, number: int) -> tuple[float, float]:
    a, b = _floats(text, 2, number)
    return a, b


def _int(text: str, number: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise CubeParseError(f"line {number}: expected an integer, got {text!r}") from None


def _normalise(image: NDArray[Any], lut: CubeLut) -> NDArray[np.float32]:
    """BGR uint8 pixels as RGB coordinates in [0, 1] of the LUT's domain."""
    rgb = image[..., ::-1].astype(np.float32) / 255.0
    low = np.asarray(lut.domain_min, np.float32)
    high = np.asarray(lut.domain_max, np.float32)
    return np.clip((rgb - low) / (high - low), 0.0, 1.0)


def _to_bgr8(rgb: NDArray[np.float32]) -> NDArray[Any]:
    return np.clip(np.rint(rgb[..., ::-1] * 255.0), 0, 255).astype(np.uint8)


def apply_1d(image: NDArray[Any], lut: CubeLut) -> NDArray[Any]:
    """Apply a 1D LUT (per channel, linear interpolation)."""
    coords = _normalise(image, lut) * (lut.size - 1)
    out = np.empty(coords.shape, np.float32)
    grid = np.arange(lut.size, dtype=np.float32)
    for channel in range(3):
        out[..., channel] = np.interp(coords[..., channel], grid, lut.table[:, channel])
    return _to_bgr8(out)


def trilinear(coords: NDArray[np.float32], table: NDArray[np.float32]) -> NDArray[np.float32]:
    """Sample a ``(N, N, N, 3)`` table indexed ``[b, g, r]`` at RGB
    coordinates in [0, N-1] (shape ``(..., 3)``), by trilinear
    interpolation over the eight surrounding entries."""
    size = table.shape[0]
    flat = table.reshape(-1, 3)
    base = np.minimum(np.floor(coords).astype(np.int64), size - 2)
    frac = (coords - base).astype(np.float32)
    r0, g0, b0 = base[..., 0], base[..., 1], base[..., 2]
    fr, fg, fb = frac[..., 0:1], frac[..., 1:2], frac[..., 2:3]
    index = (b0 * size + g0) * size + r0
    step_r, step_g, step_b = 1, size, size * size

    def at(offset: int) -> NDArray[np.float32]:
        return flat[index + offset]

    c00 = at(0) * (1 - fr) + at(step_r) * fr
    c10 = at(step_g) * (1 - fr) + at(step_g + step_r) * fr
    c01 = at(step_b) * (1 - fr) + at(step_b + step_r) * fr
    c11 = at(step_b + step_g) * (1 - fr) + at(step_b + step_g + step_r) * fr
    c0 = c00 * (1 - fg) + c10 * fg
    c1 = c01 * (1 - fg) + c11 * fg
    result: NDArray[np.float32] = (c0 * (1 - fb) + c1 * fb).astype(np.float32)
    return result


def apply_3d(image: NDArray[Any], lut: CubeLut) -> NDArray[Any]:
    """Apply a 3D LUT to a BGR image by exact trilinear interpolation."""
    if lut.dimensions != 3:
        raise ValueError("apply_3d needs a 3D LUT")
    coords = _normalise(image, lut) * (lut.size - 1)
    return _to_bgr8(trilinear(coords, lut.table))


class BakedLut:
    """A LUT baked for fast per-frame use.

    3D LUTs are sampled by trilinear interpolation at the centres of 128
    bins per channel, giving a 128^3 BGR uint8 table (6 MiB); a pixel then
    costs one lookup at ``(b >> 1, g >> 1, r >> 1)``. The error against
    exact trilinear is at most the LUT's slope over one input level. 1D
    LUTs become a 256-entry ``cv2.LUT`` table, which is exact.
    """

    BINS = 128

    def __init__(self, lut: CubeLut) -> None:
        self.dimensions = lut.dimensions
        self.table: NDArray[Any]
        if lut.dimensions == 1:
            levels = np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, axis=2)
            self.table = apply_1d(levels, lut).reshape(256, 3)
            return
        centres = (np.arange(self.BINS, dtype=np.float32) * 2 + 0.5) / 255.0
        b, g, r = np.meshgrid(centres, centres, centres, indexing="ij")
        rgb = np.stack([r, g, b], axis=-1)
        low = np.asarray(lut.domain_min, np.float32)
        high = np.asarray(lut.domain_max, np.float32)
        coords = np.clip((rgb - low) / (high - low), 0.0, 1.0) * (lut.size - 1)
        bgr = _to_bgr8(trilinear(coords, lut.table)).reshape(-1, 3)
        # Stored as one uint32 per entry (B, G, R, 0): gathering scalars is
        # several times faster than gathering 3-byte rows.
        packed = np.zeros((bgr.shape[0], 4), np.uint8)
        packed[:, :3] = bgr
        self.table = packed.view(np.uint32).reshape(-1)

    def apply(self, image: NDArray[Any]) -> NDArray[Any]:
        if self.dimensions == 1:
            return cv2.LUT(image, self.table.reshape(1, 256, 3))
        halved = (image >> 1).astype(np.uint32)
        index = (halved[..., 0] << 14) | (halved[..., 1] << 7) | halved[..., 2]
        packed = np.take(self.table, index)
        result: NDArray[Any] = cv2.cvtColor(packed.view(np.uint8).reshape(*image.shape[:2], 4),
                                                 cv2.COLOR_BGRA2BGR)
        return result
