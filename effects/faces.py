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

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from effects.models import FACE_DETECTION, ModelStore
from effects.stage import Image
from effects.workers import INLINE, Helpers

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


class Tile(NamedTuple):
    """One square of the frame, as the network's input blob."""

    x0: int
    y0: int
    side: int
    blob: NDArray[np.float32]


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
        """Faces on ``image``, all in the caller's thread."""
        return self.infer(self.blobs(image))

    def blobs(self, image: Image) -> list[Tile]:
        """The network inputs for ``image``, at model size: cheap, and
        independent of the frame afterwards, so :meth:`infer` may run on
        another thread while later stages change the frame in place."""
        height, width = image.shape[:2]
        side = min(height, width)
        tiles: list[Tile] = []
        for x0, y0 in self._tiles(width, height, side):
            tile = image[y0:y0 + side, x0:x0 + side]
            blob = cv2.dnn.blobFromImage(tile, 1 / 127.5, (_INPUT, _INPUT), (127.5, 127.5, 127.5), swapRB=True)
            tiles.append(Tile(x0, y0, side, np.asarray(blob, np.float32)))
        return tiles

    def infer(self, tiles: list[Tile]) -> list[Face]:
        """Run the network on each tile and merge the faces (the costly
        part; one call at a time per detector)."""
        boxes: list[list[float]] = []
        scores: list[float] = []
        marks: list[NDArray[np.float32]] = []
        for x0, y0, side, blob in tiles:
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

    A detection runs on ``helpers`` (the chain's helper threads): started
    on frame N with that frame's blobs, collected on the next call and
    tracked from frame N to the current frame, so it lands where the face is
    now. Only the first frame (or the first after a size change) waits for
    a detection in the caller's thread, so no frame goes out before faces
    were looked for. Results do not depend on the number of threads.
    """

    def __init__(
        self, models: ModelStore, interval: int = 5, threshold: float = 0.6, helpers: Helpers = INLINE
    ) -> None:
        self._detector = FaceDetector(models, threshold=threshold)
        self._interval = max(1, interval)
        self._helpers = helpers
        self._count = 0
        self._faces: list[Face] = []
        self._prev_grey: NDArray[Any] | None = None
        self._pending: Future[list[Face]] | None = None
        self._scale = 1.0
        self.detections = 0

    def update(self, image: Image) -> list[Face]:
        """Faces on this frame (call once per frame, in order)."""
        return self._step(image, detect=True)

    def follow(self, image: Image) -> list[Face]:
        """Faces on this frame by tracking alone: no new detection starts
        (a running one is still collected). For frames the chain must make
        cheaper."""
        return self._step(image, detect=False)

    def _step(self, image: Image, detect: bool) -> list[Face]:
        height, width = image.shape[:2]
        scale = min(1.0, _TRACK_WIDTH / width)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        prev = self._prev_grey
        fresh = prev is None or prev.shape != grey.shape
        if self._pending is not None:
            # Faces found on the previous frame; moved on to this one below.
            pending, self._pending = self._pending, None
            self._faces = pending.result()
        if fresh:
            self._faces = self._detector.detect(image)
            self.detections += 1
        else:
            assert prev is not None
            if self._faces:
                self._faces = self._track(prev, grey, scale)
            if detect and self._count % self._interval == 0:
                self._pending = self._helpers.submit(self._detector.infer, self._detector.blobs(image))
                self.detections += 1
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
