"""AR face filters: artwork anchored to each face's eyes.

Landmarks come from BlazeFace (six points per face) through the tracker, so
the detector runs every ``interval`` frames and overlays follow the face by
optical flow in between. The artwork is procedural (see
:mod:`effects.artwork`), so nothing ships as a binary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from effects import catalog
from effects.artwork import anchor_matrix, make
from effects.blend import warp_bgra
from effects.catalog import ARTWORK_NAMES
from effects.errors import EffectOptionError
from effects.faces import FaceTracker
from effects.stage import EffectInfo, Image, StageContext


class FaceFilter:
    """The AR face filter stage."""

    def __init__(self, options: Mapping[str, Any], context: StageContext) -> None:
        names = [name.strip() for name in str(options["overlay"]).split("+") if name.strip()]
        self._art = [make(name) for name in names]
        self._tracker = FaceTracker(
            context.models, interval=options["interval"], threshold=options["threshold"], helpers=context.helpers
        )

    def process(self, image: Image) -> Image:
        for face in self._tracker.update(image):
            for art in self._art:
                warp_bgra(art.image, anchor_matrix(art, face.right_eye, face.left_eye), image)
        return image


def _check_overlay(options: Mapping[str, Any]) -> None:
    for name in str(options["overlay"]).split("+"):
        if name.strip() not in ARTWORK_NAMES:
            raise EffectOptionError(
                f"face_filter: option overlay: {name.strip()!r} is not one of {', '.join(ARTWORK_NAMES)}"
            )


def _build(options: Mapping[str, Any], context: StageContext) -> FaceFilter:
    _check_overlay(options)
    return FaceFilter(options, context)


EFFECT = EffectInfo.of(catalog.FACE_FILTER, _build)
