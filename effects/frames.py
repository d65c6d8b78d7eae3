"""PyAV frames to NumPy arrays and back, keeping timestamps.

Video stages work on BGR24; the chain converts once per frame in each
direction with persistent swscale contexts (a new context per call costs
several times more) and gives the result the input's pixel format, size,
``pts`` and ``time_base``, so the encoder after the chain sees the same
stream it would have seen without effects. Audio stages work on float32
``(channels, samples)``; any PyAV sample format is converted to that and
back, with the same sample count, ``pts`` and ``time_base``.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from effects.errors import MediaFormatError
from effects.stage import Image, Samples

_INT_SCALE = {"s16": 32768.0, "s32": 2147483648.0, "u8": 128.0}


class VideoConverter:
    """Converts frames of one stream; not thread-safe (one per chain)."""

    def __init__(self) -> None:
        self._to_bgr = VideoReformatter()
        self._from_bgr = VideoReformatter()

    def to_image(self, frame: av.VideoFrame) -> Image:
        if frame.format.name == "bgr24":
            image: Image = frame.to_ndarray()
        else:
            image = self._to_bgr.reformat(frame, format="bgr24").to_ndarray()
        return np.ascontiguousarray(image)

    def to_frame(self, image: Image, like: av.VideoFrame) -> av.VideoFrame:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise MediaFormatError(f"a video stage returned {image.dtype} {image.shape}, not BGR uint8")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        if like.format.name != "bgr24":
            frame = self._from_bgr.reformat(frame, format=like.format.name)
        frame.pts = like.pts
        if like.time_base is not None:
            frame.time_base = like.time_base
        return frame


def audio_to_samples(frame: av.AudioFrame) -> Samples:
    """The frame's samples as float32 ``(channels, samples)`` in [-1, 1]."""
    fmt = frame.format
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if not fmt.is_planar:
        data = data.reshape(-1, channels).T
    base = fmt.name.rstrip("p")
    if base in ("flt", "dbl"):
        return np.ascontiguousarray(data, dtype=np.float32)
    if base in _INT_SCALE:
        offset = 128.0 if base == "u8" else 0.0
        return ((data.astype(np.float32) - offset) / _INT_SCALE[base]).astype(np.float32)
    raise MediaFormatError(f"unsupported audio sample format {fmt.name}")


def samples_to_audio(samples: Samples, like: av.AudioFrame) -> av.AudioFrame:
    """A frame in ``like``'s format, layout, rate and timestamps."""
    fmt = like.format
    channels = len(like.layout.channels)
    if samples.ndim != 2 or samples.shape[0] != channels or samples.shape[1] != like.samples:
        raise MediaFormatError(
            f"an audio stage returned shape {samples.shape}, expected ({channels}, {like.samples})"
        )
    base = fmt.name.rstrip("p")
    if base == "flt":
        data = samples.astype(np.float32, copy=False)
    elif base == "dbl":
        data = samples.astype(np.float64)
    elif base in _INT_SCALE:
        scale = _INT_SCALE[base]
        offset = 128.0 if base == "u8" else 0.0
        dtype = {"s16": np.int16, "s32": np.int32, "u8": np.uint8}[base]
        limit_low, limit_high = -scale + offset, scale - 1 + offset
        data = np.clip(np.rint(samples.astype(np.float64) * scale + offset), limit_low, limit_high).astype(dtype)
    else:
        raise MediaFormatError(f"unsupported audio sample format {fmt.name}")
    if not fmt.is_planar:
        data = data.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt.name, layout=like.layout.name)
    frame.sample_rate = like.sample_rate
    frame.pts = like.pts
    if like.time_base is not None:
        frame.time_base = like.time_base
    return frame
