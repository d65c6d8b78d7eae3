"""Choosing and opening H.264 encoders.

At start-up :func:`probe_encoders` really opens each hardware encoder that
PyAV's FFmpeg carries on a tiny frame: being compiled in says nothing about a
GPU being present. ``auto`` then uses the first H.264 encoder that opened and
falls back to libx264 with a log line. The option sets for each encoder live
here, so that keyframe forcing and rate control mean the same on every one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.codec.hwaccel
from av.codec.context import Flags
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from engine.media import Codec
from transcode.errors import EncoderError, TranscodeConfigError
from transcode.ladder import (
    ENCODE_USES,
    H264_ENCODERS,
    SOFTWARE_H264,
    EncodeUse,
    LadderConfig,
    PlannedRung,
    RungConfig,
    SourceInfo,
    plan_ladder,
    scaled_width,
)

log = logging.getLogger(__name__)

HARDWARE_CANDIDATES = ("h264_nvenc", "hevc_nvenc", "av1_nvenc", "h264_qsv")
"""Probed in this order; only the H.264 ones can serve a rung today, the rest
are reported for the status and /metrics."""
PROBE_SIZE = (256, 144)


@dataclass(frozen=True, slots=True)
class EncoderProbe:
    """Which encoders opened on this machine, and why the others did not."""

    available: tuple[str, ...]
    failures: dict[str, str] = field(default_factory=dict)
    hw_devices: tuple[str, ...] = ()

    def choose(self, requested: str = "auto") -> str:
        """The H.264 encoder to use for ``requested`` (``auto`` or a name).

        Raises :class:`TranscodeConfigError` for an encoder that is unknown or
        did not open here.
        """
        if requested == "auto":
            for name in H264_ENCODERS:
                if name in self.available:
                    if name == SOFTWARE_H264:
                        tried = ", ".join(self.failures) or "none"
                        log.info("no hardware H.264 encoder opened (tried: %s); falling back to libx264", tried)
                    return name
            raise EncoderError("no H.264 encoder opened, not even libx264")
        if requested not in H264_ENCODERS:
            raise TranscodeConfigError(f"unknown H.264 encoder {requested!r}; known: {H264_ENCODERS}")
        if requested not in self.available:
            why = self.failures.get(requested, "not probed")
            raise TranscodeConfigError(f"encoder {requested} is not usable here: {why}")
        return requested


def encoder_options(name: str, ladder: LadderConfig, rung: PlannedRung, use: EncodeUse) -> dict[str, str]:
    """AVOptions for ``name`` encoding ``rung`` for ``use`` (file or live).

    Every encoder gets: no scene-cut keyframes, IDR when a frame is forced to
    I (the segment grid), closed GOPs, and the ladder's rate control.
    """
    cfg = rung.config
    maxrate = cfg.bitrate if ladder.rate_control == "cbr" else (cfg.max_bitrate or cfg.bitrate * 3 // 2)
    bufsize = cfg.buffer_size or cfg.bitrate * 2
    opts = {"maxrate": str(maxrate), "bufsize": str(bufsize)}
    if name == SOFTWARE_H264:
        params = ["scenecut=0", "open-gop=0"]
        if ladder.rate_control == "cbr":
            params.append("nal-hrd=cbr")
        opts |= {"preset": ladder.x264_preset, "profile": cfg.profile, "forced-idr": "1"}
        opts["x264-params"] = ":".join(params)
        tune = ladder.tune_for(use)
        if tune:
            opts["tune"] = tune
        if cfg.level:
            opts["level"] = cfg.level
    elif name.endswith("_nvenc"):
        opts |= {
            "preset": ladder.nvenc_preset,
            "tune": ladder.nvenc_tune,
            "rc": ladder.rate_control,
            "forced-idr": "1",
            "no-scenecut": "1",
            "strict_gop": "1",
            "rc-lookahead": "0",
            "profile": cfg.profile if name == "h264_nvenc" else "main",
        }
        if ladder.nvenc_tune in ("ll", "ull"):
            opts["zerolatency"] = "1"
        if cfg.level and name == "h264_nvenc":
            opts["level"] = cfg.level
    elif name == "h264_qsv":
        opts |= {"preset": "veryfast", "forced_idr": "1", "look_ahead": "0", "profile": cfg.profile}
    else:
        raise TranscodeConfigError(f"no option set for encoder {name!r}")
    return opts


def open_encoder(
    name: str,
    ladder: LadderConfig,
    rung: PlannedRung,
    time_base: Fraction,
    use: EncodeUse,
) -> VideoCodecContext:
    """Open ``name`` for ``rung`` with a global header (parameter sets in
    ``extradata``) and keyframes only where the caller forces them, up to the
    ladder's ``max_gop_duration`` when the source sends none. ``use`` picks
    the B-frames, tune and thread type (see :class:`EncodeUse`)."""
    try:
        ctx = av.CodecContext.create(name, "w")
    except av.FFmpegError as exc:
        raise EncoderError(f"encoder {name} is not available: {exc}") from exc
    assert isinstance(ctx, VideoCodecContext)
    ctx.width = rung.width
    ctx.height = rung.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = time_base
    rate = rung.frame_rate or Fraction(30)
    ctx.framerate = rate
    ctx.bit_rate = rung.config.bitrate
    ctx.gop_size = max(1, int(rate * ladder.max_gop_duration))
    ctx.max_b_frames = ladder.bframes_for(use)
    ctx.flags |= Flags.global_header | Flags.closed_gop
    ctx.thread_type = use.thread_type
    if ladder.encoder_threads:
        ctx.thread_count = ladder.encoder_threads
    ctx.options = encoder_options(name, ladder, rung, use)
    try:
        ctx.open()
    except av.FFmpegError as exc:
        raise EncoderError(f"encoder {name} did not open for {rung.name}: {exc}") from exc
    return ctx


def _try_encoder(name: str) -> None:
    """Open ``name`` on a tiny frame and encode it; raises on any failure."""
    width, height = PROBE_SIZE
    ladder = LadderConfig("probe", (RungConfig("probe", height, 200_000, profile="main"),), passthrough=False)
    rung = plan_ladder(ladder, SourceInfo(Codec.H264, width, height, Fraction(30))).rungs[0]
    ctx = open_encoder(name, ladder, rung, Fraction(1, 30), ENCODE_USES["live"])
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.pts = 0
    frame.pict_type = PictureType.I
    try:
        packets = ctx.encode(frame) + ctx.encode(None)
    except av.FFmpegError as exc:
        raise EncoderError(f"encoder {name} failed on a test frame: {exc}") from exc
    if not packets:
        raise EncoderError(f"encoder {name} produced nothing for a test frame")


def check_ladder(ladder: LadderConfig, encoder: str = SOFTWARE_H264) -> list[str]:
    """Open ``encoder`` with each rung's settings, for files and for live, at
    the rung's 16:9 size and 30 fps; the reasons it refused (empty when every
    one opened).

    Catches what names alone cannot: option combinations the encoder
    refuses (two psychovisual x264 tunes, say).
    """
    problems: list[str] = []
    rate = Fraction(30)
    rungs = [PlannedRung(cfg, scaled_width(16, 9, cfg.height), cfg.height, rate, None) for cfg in ladder.rungs]
    for use in ENCODE_USES.values():
        for rung in rungs:
            try:
                open_encoder(encoder, ladder, rung, Fraction(1, 90_000), use)
            except (EncoderError, TranscodeConfigError) as exc:
                problems.append(f"ladder {ladder.name}, rung {rung.name}, {use.name} settings: {exc}")
    return problems


def probe_encoders(candidates: tuple[str, ...] = HARDWARE_CANDIDATES) -> EncoderProbe:
    """Open each candidate (and libx264) for real; call once at start-up and
    pass the result to every transcoder."""
    available: list[str] = []
    failures: dict[str, str] = {}
    for name in (*candidates, SOFTWARE_H264):
        try:
            _try_encoder(name)
        except (EncoderError, TranscodeConfigError) as exc:
            failures[name] = str(exc)
            log.debug("encoder probe: %s", exc)
        else:
            available.append(name)
    try:
        devices = tuple(av.codec.hwaccel.hwdevices_available())
    except av.FFmpegError:
        devices = ()
    log.info("encoders that opened: %s", ", ".join(available) or "none")
    return EncoderProbe(tuple(available), failures, devices)
