"""Helper threads: model inference leaves the caller's thread, and the
output is the same whatever the number of threads."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from effects.chain import EffectChain
from effects.faces import FaceTracker
from effects.models import ModelStore
from effects.workers import Helpers

HEAVY = [
    "background:mode=blur",
    "face_privacy:mode=pixelate",
    "beauty:smooth=0.6,brightness=0.2,warmth=0.3",
    "color:preset=warm",
    "face_filter:overlay=glasses",
    "watermark:text=FANZ,position=bottom-right",
]


def test_helpers_run_jobs_on_another_thread_or_inline() -> None:
    here = threading.get_ident()
    two = Helpers(2)
    try:
        assert two.submit(threading.get_ident).result(timeout=10) != here
    finally:
        two.close()
    one = Helpers(1)
    assert one.submit(threading.get_ident).result(timeout=0) == here
    failed = one.submit(lambda: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        failed.result(timeout=0)
    for bad in (0, 99):
        with pytest.raises(ValueError):
            Helpers(bad)


def test_output_does_not_depend_on_threads(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    outputs = []
    for threads in (1, 2, 3):
        chain = EffectChain(HEAVY, models=models, threads=threads)
        assert chain.threads == threads
        try:
            outputs.append([chain.process_video(frame).to_ndarray() for frame in face_frames])
        finally:
            chain.close()
    for other in outputs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(outputs[0], other, strict=True))


def test_detection_on_a_helper_lands_on_the_face(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    # Detection started on frame 2 is collected on frame 3 and tracked to it:
    # the faces stay on the moving face through later detections.
    helpers = Helpers(2)
    try:
        tracker = FaceTracker(models, interval=2, helpers=helpers)
        centres = []
        for frame in face_frames:
            faces = tracker.update(frame.to_ndarray(format="bgr24"))
            assert len(faces) == 1
            x, _, w, _ = faces[0].box
            centres.append(x + w / 2)
        assert tracker.detections == 1 + (len(face_frames) - 1) // 2
        # The photo pans right by 2 px per frame.
        assert 0 < centres[-1] - centres[0] < 40
    finally:
        helpers.close()
