"""Choosing the video decoder: software, or a GPU through FFmpeg's hwaccel.

Like the encoder probe (transcode/encoders.py), :func:`probe_decoders`
really decodes a tiny H.264 frame on each hardware device type at start-up:
PyAV's FFmpeg lists ``cuda`` and ``qsv`` whether or not a GPU is present, so
being compiled in says nothing. ``auto`` then uses the first device that
decoded and otherwise software, with one log line saying why; a device named
explicitly that did not decode is a configuration error, because an operator
who asked for the GPU should not find the node's CPUs busy decoding instead.

Hardware frames are downloaded to system memory (``nv12``); the rung scalers
and the effects take them like any software frame. NVDEC saves CPU on decode
only: scaling and x264 stay on the CPU (H100/H200 class GPUs have NVDEC but
no NVENC).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.codec.hwaccel
from av.codec.context import CodecContext
from av.codec.hwaccel import HWAccel
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from engine.media import Codec, Track
from transcode.config import DECODER_CHOICES, HARDWARE_DECODERS, SOFTWARE_DECODER
from transcode.errors import TranscodeConfigError, TranscodeError

log = logging.getLogger(__name__)

HW_CODECS = {Codec.H264: "h264", Codec.HEVC: "hevc", Codec.AV1: "av1", Codec.VP8: "vp8", Codec.VP9: "vp9"}
"""FFmpeg's native decoders, the ones hwaccels attach to (libdav1d has none)."""
PROBE_SIZE = (256, 144)


class DecoderUnavailable(TranscodeError):
    """A hardware device cannot decode here (no device, no driver, or no
    support for the codec)."""


def open_hw_decoder(track: Track, device: str) -> CodecContext:
    """A decoder for ``track`` on ``device`` (``cuda``, ``qsv``) with no
    silent software fallback: FFmpeg's own fallback would report hardware
    decode while using the CPU."""
    name = HW_CODECS.get(track.codec)
    if name is None:
        raise DecoderUnavailable(f"{device} cannot decode {track.codec.value}")
    ctx = _hw_context(name, device)
    if track.extradata:
        ctx.extradata = track.extradata
    return ctx


def _hw_context(codec: str, device: str) -> CodecContext:
    try:
        ctx = av.CodecContext.create(codec, "r", hwaccel=HWAccel(device_type=device, allow_software_fallback=False))
    except (av.FFmpegError, OSError, ValueError, NotImplementedError) as exc:
        raise DecoderUnavailable(f"{device} device did not open: {exc}") from exc
    if not ctx.is_hwaccel:
        raise DecoderUnavailable(f"{device} has no {codec} decoder")
    return ctx


@dataclass(frozen=True, slots=True)
class DecoderProbe:
    """Which hardware decoders worked on this machine, and why the others did not."""

    available: tuple[str, ...]
    failures: dict[str, str] = field(default_factory=dict)

    def choose(self, requested: str = "auto") -> str:
        """The decoder for ``requested``: a device type or ``software``.

        Raises :class:`TranscodeConfigError` for an unknown name or a device
        that did not decode here.
        """
        if requested == "auto":
            if self.available:
                return self.available[0]
            why = "; ".join(f"{k}: {v}" for k, v in self.failures.items()) or "none probed"
            log.info("no hardware video decoder works here (%s); decoding in software", why)
            return SOFTWARE_DECODER
        if requested == SOFTWARE_DECODER:
            return SOFTWARE_DECODER
        if requested not in HARDWARE_DECODERS:
            raise TranscodeConfigError(f"unknown video decoder {requested!r}; known: {DECODER_CHOICES}")
        if requested not in self.available:
            why = self.failures.get(requested, "not probed")
            raise TranscodeConfigError(
                f"transcode.decoder = {requested}, but {requested} decoding does not work here ({why}); "
                "set it to auto or software"
            )
        return requested


def probe_clip() -> list[av.Packet]:
    """One tiny H.264 keyframe (Annex B), encoded by libx264."""
    width, height = PROBE_SIZE
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    enc.open()
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.pts = 0
    frame.pict_type = PictureType.I
    return list(enc.encode(frame)) + list(enc.encode(None))


def try_decoder(device: str, packets: list[av.Packet]) -> None:
    """Decode ``packets`` on ``device``; raises :class:`DecoderUnavailable`
    unless a frame comes out of the hardware."""
    ctx = _hw_context("h264", device)
    assert isinstance(ctx, VideoCodecContext)
    try:
        frames = [f for p in (*packets, None) for f in ctx.decode(p)]
    except (av.FFmpegError, OSError) as exc:
        raise DecoderUnavailable(f"{device} failed on a test frame: {exc}") from exc
    if not frames:
        raise DecoderUnavailable(f"{device} decoded nothing from a test frame")


def probe_decoders(candidates: tuple[str, ...] = HARDWARE_DECODERS) -> DecoderProbe:
    """Try each candidate device for real; call once at start-up."""
    try:
        compiled = set(av.codec.hwaccel.hwdevices_available())
    except av.FFmpegError:
        compiled = set()
    available: list[str] = []
    failures: dict[str, str] = {}
    packets = probe_clip() if candidates else []
    for device in candidates:
        if device not in compiled:
            failures[device] = "not built into this FFmpeg"
            continue
        try:
            try_decoder(device, packets)
        except DecoderUnavailable as exc:
            failures[device] = str(exc)
            log.debug("decoder probe: %s", exc)
        else:
            available.append(device)
    return DecoderProbe(tuple(available), failures)
