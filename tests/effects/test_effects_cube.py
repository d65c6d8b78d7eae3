"""``.cube`` parsing (valid, malformed, truncated, hostile) and LUT
application on decoded frames."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effects.chain import EffectChain
from effects.cube import BakedLut, apply_1d, apply_3d, parse_cube
from effects.errors import CubeParseError, EffectOptionError


def cube_text(size: int, fn, title: str = "t") -> str:  # type: ignore[no-untyped-def]
    grid = np.linspace(0.0, 1.0, size)
    lines = [f'TITLE "{title}"', "# a comment", f"LUT_3D_SIZE {size}", "DOMAIN_MIN 0 0 0", "DOMAIN_MAX 1 1 1"]
    for b in grid:
        for g in grid:
            for r in grid:
                lines.append("{:.6f} {:.6f} {:.6f}".format(*fn(r, g, b)))
    return "\n".join(lines) + "\n"


def test_parse_3d_red_fastest() -> None:
    lut = parse_cube(cube_text(2, lambda r, g, b: (r, g, b)))
    assert lut.dimensions == 3 and lut.size == 2 and lut.title == "t"
    # table[b, g, r]: the second entry of the file is r=1, g=0, b=0.
    assert lut.table[0, 0, 1].tolist() == [1.0, 0.0, 0.0]
    assert lut.table[1, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_identity_lut_keeps_frame(face_frames: list[av.VideoFrame]) -> None:
    image = face_frames[0].to_ndarray(format="bgr24")
    lut = parse_cube(cube_text(17, lambda r, g, b: (r, g, b)))
    assert np.abs(apply_3d(image, lut).astype(int) - image).max() <= 1
    assert np.abs(BakedLut(lut).apply(image).astype(int) - image).max() <= 1


def test_trilinear_exact_on_a_linear_lut() -> None:
    # A LUT that is linear in r, g, b is reproduced exactly by trilinear
    # interpolation at any point, not just on grid nodes.
    lut = parse_cube(cube_text(5, lambda r, g, b: (g, b, 0.5 * r + 0.25)))
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (31, 47, 3), dtype=np.uint8)
    out = apply_3d(image, lut).astype(int)
    b, g, r = (image[..., i].astype(float) for i in range(3))
    assert np.abs(out[..., 2] - g).max() <= 1
    assert np.abs(out[..., 1] - b).max() <= 1
    assert np.abs(out[..., 0] - np.rint((0.5 * r / 255 + 0.25) * 255)).max() <= 1


def test_baked_matches_exact_on_a_curved_lut() -> None:
    lut = parse_cube(cube_text(33, lambda r, g, b: (r ** 0.7, g * (1 - 0.3 * b), b ** 1.4)))
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.abs(BakedLut(lut).apply(image).astype(int) - apply_3d(image, lut)).max() <= 3


def test_1d_lut() -> None:
    text = "LUT_1D_SIZE 2\n1 1 1\n0 0 0\n"  # invert
    lut = parse_cube(text)
    image = np.array([[[0, 100, 255]]], np.uint8)
    assert apply_1d(image, lut).tolist() == [[[255, 155, 0]]]
    assert BakedLut(lut).apply(image).tolist() == [[[255, 155, 0]]]


def test_lut_file_through_the_chain(tmp_path: Path, face_frames: list[av.VideoFrame]) -> None:
    path = tmp_path / "swap.cube"
    path.write_text(cube_text(9, lambda r, g, b: (b, g, r)))
    frame = face_frames[0]
    out = EffectChain([f"color:lut={path}"]).process_video(frame).to_ndarray(format="bgr24").astype(int)
    image = frame.to_ndarray(format="bgr24").astype(int)
    # Red and blue swapped (up to chroma subsampling of the yuv420p round trip).
    assert np.abs(out[..., 0] - image[..., 2]).mean() < 4
    assert np.abs(out[..., 2] - image[..., 0]).mean() < 4


def test_bad_lut_file_is_an_option_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.cube"
    path.write_text("LUT_3D_SIZE 2\n0 0 0\n")
    with pytest.raises(EffectOptionError, match="expected 8 table entries"):
        EffectChain([f"color:lut={path}"])
    with pytest.raises(EffectOptionError, match="cannot read"):
        EffectChain([f"color:lut={tmp_path / 'missing.cube'}"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no LUT_1D_SIZE"),
        ("LUT_3D_SIZE 1\n", "outside"),
        ("LUT_3D_SIZE 100000\n", "outside"),
        ("LUT_3D_SIZE x\n", "integer"),
        ("0 0 0\n", "before LUT"),
        ("LUT_1D_SIZE 2\n0 0 0\n1 1\n", "expected 3 numbers"),
        ("LUT_1D_SIZE 2\n0 0 0\n1 1 nan\n", "non-finite"),
        ("LUT_1D_SIZE 2\n0 0 0\n1 1 1\n1 1 1\n", "more than 2"),
        ("LUT_1D_SIZE 2\n0 0 0\nLUT_3D_SIZE 2\n", "after table"),
        ("LUT_1D_SIZE 2\nLUT_3D_SIZE 2\n", "more than one"),
        ("LUT_1D_SIZE 2\nFOO 1\n", "unknown keyword"),
        ("LUT_1D_SIZE 2\nDOMAIN_MIN 1 1 1\nDOMAIN_MAX 0 0 0\n0 0 0\n1 1 1\n", "DOMAIN_MAX"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(CubeParseError, match=message):
        parse_cube(text)


def test_truncated_at_every_line() -> None:
    text = cube_text(3, lambda r, g, b: (r, g, b))
    lines = text.splitlines()
    for cut in range(len(lines) - 1):
        partial = "\n".join(lines[:cut])
        with pytest.raises(CubeParseError):
            parse_cube(partial)


@settings(max_examples=200)
@given(st.text(alphabet=st.sampled_from(list("LUT_3D1SIZE DOMAIN_MX0.5e-9#\n\t\"")), max_size=300))
def test_hostile_text_never_crashes(text: str) -> None:
    try:
        lut = parse_cube(text)
    except CubeParseError:
        return
    assert lut.table.shape[-1] == 3


@given(st.binary(max_size=200))
def test_hostile_bytes_never_crash(data: bytes) -> None:
    try:
        parse_cube(data.decode("latin-1"))
    except CubeParseError:
        pass
