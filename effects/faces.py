"""Faces and their landmarks on each frame: BlazeFace detection every few
frames, optical-flow tracking in between.

BlazeFace (short range) takes a 128x128 RGB square scaled to [-1, 1] and
scores 896 fixed anchors; each anchor regresses a box and six landmarks
(the subject's right eye, left eye, nose tip, mouth centre, right ear,
left ear; "right" is on the image's left). Wide frames are covered by
overlapping squares as tall as the frame, so a 16:9 face is not shrunk by
letterboxing. Tracking moves the last detection's landmarks with pyramidal
Lucas-Kanade flow on a small grey image, which costs a fraction of a
detection; a fresh detection replaces the tracks every ``interval``
frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from effects.models import FACE_DETECTION, ModelStore
from effects.stage import Image

_INPUT = 128
_TRACK_WIDTH = 320


def _anchors() -> NDArray[np.float32]:
    """BlazeFace short-range anchor centres, in [0, 1] input coordinates:
    two per cell of the 16x16 grid (stride 8), six per cell of the 8x8 grid
    (the three stride-16 layers share one grid)."""
    centres: list[NDArray[np.float32]] = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = _INPUT // stride
        ys, xs = np.mgrid[0:cells, 0:cells].astype(np.float32)
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Face:
    """One face in frame pixels: ``box`` is (x, y, width, height);
    ``landmarks`` is a (6, 2) array in BlazeFace's order."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: NDArray[np.float32]

    @property
    def right_eye(self) -> NDArray[np.float32]:
        return self.landmarks[0]

    @property
    def left_eye(self) -> NDArray[np.float32]:
        return self.landmarks[1]

    @property
    def nose(self) -> NDArray[np.float32]:
        return self.landmarks[2]

    @property
    def mouth(self) -> NDArray[np.float32]:
        return self.landmarks[3]

    def int_box(self, width: int, height: int, grow: float = 0.0) -> tuple[int, int, int, int]:
        """The box grown by ``grow`` of its size on each side and clipped to
        the frame, as integer (x0, y0, x1, y1)."""
        x, y, w, h = self.box
        x0 = max(0, int(x - grow * w))
        y0 = max(0, int(y - grow * h))
        x1 = min(width, int(np.ceil(x + w + grow * w)))
        y1 = min(height, int(np.ceil(y + h + grow * h)))
        return x0, y0, x1, y1


class FaceDetector:
    """BlazeFace on OpenCV's DNN module. Not thread-safe: one per stage."""

    def __init__(self, models: ModelStore, threshold: float = 0.6, nms: float = 0.3) -> None:
        self._net = models.network(FACE_DETECTION)
        self._anchors = _anchors()
        self._threshold = threshold
        self._nms = nms

    def detect(self, image: Image) -> list[Face]:
        height, width = image.shape[:2]
        side = min(height, width)
        boxes: list[list[float]] = []
        scores: list[float] = []
        marks: list[NDArray[np.float32]] = []
        for x0, y0 in self._tiles(width, height, side):
            tile = image[y0:y0 + side, x0:x0 + side]
            blob = cv2.dnn.blobFromImage(tile, 1 / 127.5, (_INPUT, _INPUT), (127.5, 127.5, 127.5), swapRB=True)
            self._net.setInput(blob)
            raw_scores, raw_boxes = self._net.forward(["classificators", "regressors"])
            logits = np.clip(raw_scores.reshape(-1), -80.0, 80.0)
            probability = 1.0 / (1.0 + np.exp(-logits))
            keep = np.flatnonzero(probability >= self._threshold)
            if keep.size == 0:
                continue
            regress = raw_boxes.reshape(-1, 16)[keep] / _INPUT
            anchor = self._anchors[keep]
            centre = regress[:, 0:2] + anchor
            size = regress[:, 2:4]
            points = regress[:, 4:16].reshape(-1, 6, 2) + anchor[:, None, :]
            scale = float(side)
            for i in range(keep.size):
                cx, cy = centre[i] * scale
                w, h = size[i] * scale
                boxes.append([float(x0 + cx - w / 2), float(y0 + cy - h / 2), float(w), float(h)])
                scores.append(float(probability[keep[i]]))
                marks.append((points[i] * scale + np.array([x0, y0], np.float32)).astype(np.float32))
        if not boxes:
            return []
        chosen = cv2.dnn.NMSBoxes(boxes, scores, self._threshold, self._nms)
        return [
            Face((boxes[i][0], boxes[i][1], boxes[i][2], boxes[i][3]), scores[i], marks[i])
            for i in np.asarray(chosen, dtype=np.int64).reshape(-1)
        ]

    @staticmethod
    def _tiles(width: int, height: int, side: int) -> list[tuple[int, int]]:
        """Top-left corners of overlapping squares that cover the frame."""
        def starts(length: int) -> list[int]:
            if length <= side:
                return [0]
            # One more square than strictly needed, so that a face on a seam
            # lies whole inside some square.
            count = int(np.ceil(length / side)) + 1
            return [round(i * (length - side) / (count - 1)) for i in range(count)]
        return [(x, y) for y in starts(height) for x in starts(width)]


class FaceTracker:
    """Detect every ``interval`` frames and track landmarks between.

    Between detections each face's landmarks and box corners move with the
    median optical flow, and the box scales with the landmarks' spread, so
    overlays stay anchored to a moving head at a fraction of a detection's
    cost.
    """

    def __init__(self, models: ModelStore, interval: int = 5, threshold: float = 0.6) -> None:
        self._detector = FaceDetector(models, threshold=threshold)
        self._interval = max(1, interval)
        self._count = 0
        self._faces: list[Face] = []
        self._prev_grey: NDArray[Any] | None = None
        self._scale = 1.0
        self.detections = 0

    def update(self, image: Image) -> list[Face]:
        """Faces on this frame (call once per frame, in order)."""
        height, width = image.shape[:2]
        scale = min(1.0, _TRACK_WIDTH / width)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        prev = self._prev_grey
        if self._count % self._interval == 0 or prev is None or prev.shape != grey.shape:
            self._faces = self._detector.detect(image)
            self.detections += 1
        elif self._faces:
            self._faces = self._track(prev, grey, scale)
        self._count += 1
        self._prev_grey = grey
        self._scale = scale
        return self._faces

    def _track(self, prev: NDArray[Any], grey: NDArray[Any], scale: float) -> list[Face]:
        moved: list[Face] = []
        for face in self._faces:
            points = (face.landmarks * scale).reshape(-1, 1, 2).astype(np.float32)
            new, status, _ = cv2.calcOpticalFlowPyrLK(
                prev, grey, points, None, winSize=(15, 15), maxLevel=2  # type: ignore[call-overload]
            )
            ok = status.reshape(-1).astype(bool)
            if ok.sum() < 3:
                moved.append(face)
                continue
            old_pts = points.reshape(-1, 2)[ok] / scale
            new_pts = new.reshape(-1, 2)[ok] / scale
            shift = np.median(new_pts - old_pts, axis=0)
            spread_old = float(np.linalg.norm(old_pts - old_pts.mean(axis=0), axis=1).mean())
            spread_new = float(np.linalg.norm(new_pts - new_pts.mean(axis=0), axis=1).mean())
            grow = spread_new / spread_old if spread_old > 1e-3 else 1.0
            grow = float(np.clip(grow, 0.8, 1.25))
            x, y, w, h = face.box
            cx, cy = x + w / 2 + float(shift[0]), y + h / 2 + float(shift[1])
            w, h = w * grow, h * grow
            landmarks = face.landmarks.copy()
            landmarks[ok] = new.reshape(-1, 2)[ok] / scale
            landmarks[~ok] += shift
            moved.append(Face((cx - w / 2, cy - h / 2, w, h), face.score, landmarks.astype(np.float32)))
        return moved
