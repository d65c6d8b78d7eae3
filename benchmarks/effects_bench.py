"""Milliseconds per 720p frame for each effect, and for all together.

The budget is 33 ms for the whole chain on one core (30 fps), so OpenCV is
limited to one thread. The frame is a real photo with a face (scikit-image's
astronaut, when installed) on a 1280x720 canvas, moving a little each
frame so tracking and detection both run. Run briefly:
``python -m benchmarks.effects_bench --frames 60``.
"""

from __future__ import annotations

import argparse
import time

import av
import cv2
import numpy as np

from effects.chain import EffectChain
from effects.models import ModelStore
from effects.registry import default_registry
from effects.voice import VoiceChanger

EFFECTS = [
    "watermark:text=FANZ,position=bottom-right",
    "face_privacy:mode=blur",
    "face_filter:overlay=glasses",
    "background:mode=blur",
    "background:mode=colour,colour=green",
    "beauty:smooth=0.6,brightness=0.2,warmth=0.3",
    "color:preset=vintage",
]
ALL = [
    "background:mode=blur",
    "face_privacy:mode=pixelate",
    "beauty:smooth=0.6,brightness=0.2,warmth=0.3",
    "color:preset=warm",
    "face_filter:overlay=glasses",
    "watermark:text=FANZ,position=bottom-right",
]


def _canvas() -> np.ndarray:
    canvas = np.full((720, 1280, 3), (96, 80, 64), np.uint8)
    try:
        from skimage import data

        photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
        canvas[104:616, 384:896] = photo
    except ImportError:
        cv2.circle(canvas, (640, 360), 150, (150, 180, 220), -1)
    return canvas


def _frames(count: int) -> list[av.VideoFrame]:
    base = _canvas()
    frames = []
    for i in range(count):
        shift = np.float32([[1, 0, 3 * (i % 20)], [0, 1, 0]])
        image = cv2.warpAffine(base, shift, (1280, 720), borderMode=cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        frames.append(frame)
    return frames


def _time(specs: list[str], frames: list[av.VideoFrame], models: ModelStore) -> float:
    chain = EffectChain(specs, models=models)
    chain.process_video(frames[0])  # warm-up: first inference allocates
    started = time.perf_counter()
    for frame in frames:
        chain.process_video(frame)
    return 1000.0 * (time.perf_counter() - started) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (1 = one core)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    models = ModelStore()
    frames = _frames(args.frames)
    print(f"720p, {args.frames} frames, OpenCV threads {args.threads}; ms per frame, conversions included")
    baseline = _time(["watermark:text=.,opacity=0"], frames, models)
    print(f"{'(conversion only: an invisible watermark)':48s} {baseline:7.2f}")
    for spec in EFFECTS:
        print(f"{spec:48s} {_time([spec], frames, models):7.2f}")
    print(f"{'all together: ' + ' + '.join(s.split(':')[0] for s in ALL):48s} {_time(ALL, frames, models):7.2f}")
    rate = 48000
    voice = VoiceChanger(default_registry().parse("voice:pitch=1.5,robot=true").options())
    block = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 1024)).astype(np.float32)
    started = time.perf_counter()
    blocks = 200
    for _ in range(blocks):
        voice.process(block, rate)
    per_block = 1000.0 * (time.perf_counter() - started) / blocks
    print(f"{'voice:pitch=1.5,robot=true (1024 stereo samples)':48s} {per_block:7.2f}  (block lasts 21.3 ms)")


if __name__ == "__main__":
    main()
