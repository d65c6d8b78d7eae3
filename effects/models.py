"""Where the neural models come from, and loading them once.

The models are the TFLite files that the ``mediapipe`` 0.10.14 wheel ships
for its offline solutions (BlazeFace short-range face detection and the
landscape selfie segmentation). They are read by OpenCV's DNN module
(``cv2.dnn.readNetFromTFLite``), so neither mediapipe's own runtime nor its
heavy dependencies are needed: install the wheel with ``pip install
--no-deps mediapipe==0.10.14``. Nothing is ever downloaded at run time; a
missing file raises :class:`ModelNotFoundError` naming the package.

OpenCV networks keep per-inference state, so each stage gets its own
:class:`cv2.dnn.Net`; the store only resolves where the files are.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2

from effects.errors import ModelNotFoundError

FACE_DETECTION = "face_detection/face_detection_short_range.tflite"
SEGMENTATION = "selfie_segmentation/selfie_segmentation_landscape.tflite"
FACE_LANDMARKS = "face_landmark/face_landmark.tflite"

_INSTALL_HINT = "install it with: pip install --no-deps mediapipe==0.10.14"


def mediapipe_modules_dir() -> Path | None:
    """The ``mediapipe/modules`` folder of an installed wheel, found without
    importing mediapipe (whose import needs dependencies we do not
    install)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "modules"
        if candidate.is_dir():
            return candidate
    return None


class ModelStore:
    """Finds model files and builds a fresh network per caller.

    ``model_dir`` overrides the folder (laid out like ``mediapipe/modules``),
    for deployments that keep models elsewhere.
    """

    def __init__(self, model_dir: Path | None = None) -> None:
        self._model_dir = model_dir

    def path(self, name: str) -> Path:
        base = self._model_dir if self._model_dir is not None else mediapipe_modules_dir()
        if base is None:
            raise ModelNotFoundError(f"model {name} not found: the mediapipe wheel is not installed; {_INSTALL_HINT}")
        path = base / name
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} is missing; {_INSTALL_HINT}")
        return path

    def network(self, name: str) -> cv2.dnn.Net:
        """A new OpenCV network for model ``name``.

        The classic engine is asked for explicitly: OpenCV 5's new engine
        keeps only one output of multi-output TFLite graphs such as
        BlazeFace's (scores and boxes). It is loaded from the path because
        the in-memory overload of ``readNetFromTFLite`` ignores the engine.
        """
        path = self.path(name)
        engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
        try:
            if engine is not None:
                return cv2.dnn.readNetFromTFLite(str(path), engine=engine)
            return cv2.dnn.readNetFromTFLite(str(path))
        except cv2.error as exc:
            raise ModelNotFoundError(f"model {path} could not be loaded by OpenCV: {exc}") from exc
