"""Face privacy: blur or pixelate every detected face.

Faces come from :class:`effects.faces.FaceTracker` (BlazeFace every
``interval`` frames, optical flow between). The stage is critical: the
chain never skips it when running late, because a skipped frame would show
the face it is meant to hide. ``grow`` enlarges each box so that hair and
chin are covered as well as the detector's tight box. When the chain must
save time it calls :meth:`FacePrivacy.reuse`: the faces are still tracked
and hidden on every frame, only no new detection is started.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2

from effects import catalog
from effects.faces import Face, FaceTracker
from effects.stage import EffectInfo, Image, StageContext


class FacePrivacy:
    """The face blur / pixelate stage."""

    def __init__(self, options: Mapping[str, Any], context: StageContext) -> None:
        self._mode: str = options["mode"]
        self._strength: float = options["strength"]
        self._grow: float = options["grow"]
        self._tracker = FaceTracker(
            context.models, interval=options["interval"], threshold=options["threshold"], helpers=context.helpers
        )

    def process(self, image: Image) -> Image:
        return self._hide(image, self._tracker.update(image))

    def reuse(self, image: Image) -> Image:
        """Hide the faces tracked from the last detection; no new detection
        starts (tracking is cheap and keeps the cover on a moving face)."""
        return self._hide(image, self._tracker.follow(image))

    def _hide(self, image: Image, faces: list[Face]) -> Image:
        height, width = image.shape[:2]
        for face in faces:
            x0, y0, x1, y1 = face.int_box(width, height, self._grow)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            roi = image[y0:y1, x0:x1]
            if self._mode == "pixelate":
                # strength 1 gives 6 blocks across the face, 0 gives 30.
                blocks = max(2, round(30 - 24 * self._strength))
                small = cv2.resize(roi, (blocks, max(1, round(blocks * roi.shape[0] / roi.shape[1]))),
                                   interpolation=cv2.INTER_AREA)
                roi[:] = cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_NEAREST)
            else:
                # A wide Gaussian costs with its radius; at a quarter of the
                # size it costs a sixteenth and looks the same once scaled up.
                sigma = max(1.0, self._strength * 0.25 * max(roi.shape[:2]))
                h, w = roi.shape[:2]
                small = cv2.resize(roi, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
                small = cv2.GaussianBlur(small, (0, 0), max(0.5, sigma / 4))
                roi[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        return image


def _build(options: Mapping[str, Any], context: StageContext) -> FacePrivacy:
    return FacePrivacy(options, context)


EFFECT = EffectInfo.of(catalog.FACE_PRIVACY, _build)
