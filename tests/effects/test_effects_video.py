"""Each video effect on real decoded frames of an ffmpeg-made clip."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from effects.background import Background
from effects.chain import EffectChain
from effects.faces import FaceDetector, FaceTracker
from effects.models import ModelStore
from effects.registry import default_registry
from effects.stage import StageContext


def bgr(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="bgr24")


def detail(image: np.ndarray) -> float:
    """Variance of the Laplacian: high for sharp detail, low for blur."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def flatness(image: np.ndarray) -> float:
    """Share of horizontal neighbours with (nearly) equal luma."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(int)
    return float((np.abs(np.diff(grey, axis=1)) <= 1).mean())


def _stage(spec: str, models: ModelStore):  # type: ignore[no-untyped-def]
    registry = default_registry()
    parsed = registry.parse(spec)
    return registry.get(parsed.name).factory(parsed.options(), StageContext(models))


def test_detector_finds_the_face(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    image = bgr(face_frames[0])
    faces = FaceDetector(models).detect(image)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    # The astronaut's face: in the 360x360 photo centred in 640x360, around
    # x 160..195 of the photo's 512 px, scaled by 360/512 and shifted by 140.
    assert 240 < x + w / 2 < 330 and 50 < y + h / 2 < 140
    eyes_y = (faces[0].right_eye[1] + faces[0].left_eye[1]) / 2
    assert faces[0].right_eye[0] < faces[0].left_eye[0]
    assert y < eyes_y < faces[0].mouth[1] < y + h


def test_tracker_follows_between_detections(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    tracker = FaceTracker(models, interval=5)
    detector = FaceDetector(models)
    for frame in face_frames[:5]:
        tracked = tracker.update(bgr(frame))
    assert tracker.detections == 1
    truth = detector.detect(bgr(face_frames[4]))
    # The pad moves the face 2 px per frame; tracking keeps it within a few px.
    assert abs(tracked[0].box[0] - truth[0].box[0]) < 6
    assert abs(tracked[0].nose[0] - truth[0].nose[0]) < 6


def test_watermark_text_pixels_at_position(face_frames: list[av.VideoFrame]) -> None:
    chain = EffectChain(["watermark:text=FANZ,position=bottom-right,opacity=1,colour=#ff0000"])
    frame = face_frames[3]
    out = chain.process_video(frame)
    before, after = bgr(frame), bgr(out)
    changed = np.abs(after.astype(int) - before.astype(int)).sum(axis=2) > 60
    ys, xs = np.nonzero(changed)
    assert ys.size > 200
    # Only the bottom-right corner changed, and there the red text shows.
    assert xs.min() > 640 * 0.6 and ys.min() > 360 * 0.7
    red = after[changed]
    assert (red[:, 2].astype(int) - red[:, 1]).mean() > 80
    assert out.pts == frame.pts and out.time_base == frame.time_base
    assert out.format.name == frame.format.name and (out.width, out.height) == (frame.width, frame.height)


def test_watermark_image_with_alpha(tmp_path: Path, face_frames: list[av.VideoFrame]) -> None:
    logo = np.zeros((40, 80, 4), np.uint8)
    logo[:, :40] = (0, 255, 0, 255)  # opaque green left half, transparent right half
    path = tmp_path / "logo.png"
    cv2.imwrite(str(path), logo)
    chain = EffectChain([f"watermark:image={path},position=top-left,scale=0.25,margin=0,opacity=1"])
    frame = face_frames[0]
    before, after = bgr(frame), bgr(chain.process_video(frame))
    # Logo 160x80 at the top-left corner: green on its left half, untouched on its right.
    assert after[40, 40, 1] > 200 and after[40, 40, 2] < 60
    assert np.abs(after[10:70, 100:150].astype(int) - before[10:70, 100:150]).mean() < 4


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_face_privacy_lowers_detail(face_frames: list[av.VideoFrame], models: ModelStore, mode: str) -> None:
    frame = face_frames[0]
    image = bgr(frame)
    face = FaceDetector(models).detect(image)[0]
    x0, y0, x1, y1 = face.int_box(image.shape[1], image.shape[0])
    out = bgr(EffectChain([f"face_privacy:mode={mode},strength=0.8"], models=models).process_video(frame))
    if mode == "blur":
        assert detail(out[y0:y1, x0:x1]) < 0.3 * detail(image[y0:y1, x0:x1])
    else:
        # Pixelated: the face is flat blocks, so most neighbours are equal.
        assert flatness(out[y0:y1, x0:x1]) > 0.7 > 0.4 > flatness(image[y0:y1, x0:x1])
    # Away from the face the frame is unchanged (up to colour conversion).
    assert np.abs(out[250:, 480:].astype(int) - image[250:, 480:]).mean() < 2


def test_background_colour_where_mask_says(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    stage = _stage("background:mode=colour,colour=#00ff00,softness=0,smoothing=0", models)
    assert isinstance(stage, Background)
    image = bgr(face_frames[0])
    out = stage.process(image.copy())
    weights = stage.last_weights
    assert weights is not None
    background = weights == 0
    person = weights == 1
    assert background.mean() > 0.2 and person.mean() > 0.05
    assert np.all(out[background] == (0, 255, 0))
    assert np.array_equal(out[person], image[person])
    # The person is where the face is.
    face = FaceDetector(models).detect(image)[0]
    cx, cy = int(face.box[0] + face.box[2] / 2), int(face.box[1] + face.box[3] / 2)
    assert person[cy, cx]


def test_background_image_and_blur(tmp_path: Path, face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    backdrop = np.zeros((100, 100, 3), np.uint8)
    backdrop[:] = (200, 30, 30)
    path = tmp_path / "backdrop.png"
    cv2.imwrite(str(path), backdrop)
    image = bgr(face_frames[0])
    stage = _stage(f"background:mode=image,image={path},softness=0", models)
    out = stage.process(image.copy())
    assert np.all(out[stage.last_weights == 0] == (200, 30, 30))
    blur = _stage("background:mode=blur,blur=1,softness=0", models)
    blurred = blur.process(image.copy())
    # The photo's own background (right of the astronaut) loses its detail.
    hidden = np.zeros(image.shape[:2], bool)
    hidden[10:350, 170:470] = blur.last_weights[10:350, 170:470] == 0
    # Away from the mask's edge, where the sharp person meets the blur.
    hidden = cv2.erode(hidden.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
    def masked_detail(picture: np.ndarray) -> float:
        grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(grey, cv2.CV_64F)[hidden].var())
    assert hidden.sum() > 5000
    assert masked_detail(blurred) < 0.3 * masked_detail(image)


def test_face_filter_draws_at_the_eyes(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    frame = face_frames[0]
    image = bgr(frame)
    face = FaceDetector(models).detect(image)[0]
    out = bgr(EffectChain(["face_filter:overlay=glasses"], models=models).process_video(frame))
    changed = np.abs(out.astype(int) - image.astype(int)).sum(axis=2) > 40
    ys, xs = np.nonzero(changed)
    assert xs.size > 100
    centre = (face.right_eye + face.left_eye) / 2
    assert abs(np.median(xs) - centre[0]) < 15 and abs(np.median(ys) - centre[1]) < 15
    assert not changed[300:, :].any()


def test_beauty_smooths_skin_and_brightens(face_frames: list[av.VideoFrame], models: ModelStore) -> None:
    image = bgr(face_frames[0])
    face = FaceDetector(models).detect(image)[0]
    x0, y0, x1, y1 = face.int_box(image.shape[1], image.shape[0])
    smooth = _stage("beauty:smooth=1", models).process(image.copy())
    assert detail(smooth[y0:y1, x0:x1]) < detail(image[y0:y1, x0:x1])
    bright = _stage("beauty:smooth=0,brightness=0.5,warmth=0.5", models).process(image.copy())
    assert bright.mean() > image.mean() + 5
    assert bright[..., 2].mean() - image[..., 2].mean() > bright[..., 0].mean() - image[..., 0].mean()


@pytest.mark.parametrize("preset", ["warm", "cool", "mono", "vintage"])
def test_colour_presets(face_frames: list[av.VideoFrame], models: ModelStore, preset: str) -> None:
    image = bgr(face_frames[0])
    out = _stage(f"color:preset={preset}", models).process(image.copy())
    blue_minus_red = float(out[..., 0].mean() - out[..., 2].mean()) - float(image[..., 0].mean() - image[..., 2].mean())
    if preset == "warm":
        assert blue_minus_red < -5
    elif preset == "cool":
        assert blue_minus_red > 5
    elif preset == "mono":
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    else:
        assert out[..., 2].mean() > out[..., 0].mean() + 20 and out.min() >= 24
