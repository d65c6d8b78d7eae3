"""Ladder configuration and planning.

A :class:`LadderConfig` names the renditions an operator wants; a
:class:`LadderPlan` is what one particular source gets once its size, codec,
frame rate and bit rate are known. Planning is pure (no PyAV), so the rules
"never upscale" and "pass the source through only within limits" are cheap to
test and to show in the stream status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from engine.errors import StreamNameError
from engine.media import Codec, check_stream_name
from transcode.errors import SourceError, TranscodeConfigError

RATE_CONTROLS = ("vbr", "cbr")
X264_PROFILES = ("baseline", "main", "high")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
X264_PSY_TUNES = ("film", "animation", "grain", "stillimage", "psnr", "ssim")
X264_TUNES = (*X264_PSY_TUNES, "fastdecode", "zerolatency")
H264_LEVELS = (
    "1", "1.0", "1b", "1.1", "1.2", "1.3", "2", "2.0", "2.1", "2.2", "3", "3.0", "3.1", "3.2",
    "4", "4.0", "4.1", "4.2", "5", "5.0", "5.1", "5.2", "6", "6.0", "6.1", "6.2",
)  # fmt: skip
SOFTWARE_H264 = "libx264"
H264_ENCODERS = ("h264_nvenc", "h264_qsv", SOFTWARE_H264)
"""The H.264 encoders a rung can use, in the order ``auto`` tries them."""
NVENC_PRESETS = tuple(f"p{i}" for i in range(1, 8))
NVENC_TUNES = ("hq", "ll", "ull", "lossless")
TUNE_AUTO = "auto"
NO_TUNE = ("", "none")
"""How the config says "no x264 tune" (TOML has no null)."""


@dataclass(frozen=True, slots=True)
class EncodeUse:
    """Named encoder settings for one kind of job.

    ``file``: quality per bit (B-frames, the preset's lookahead, x264 frame
    threads, which use every core with whole frames per thread).
    ``live``: latency (``tune=zerolatency``: no B-frames, no lookahead, and
    sliced threads, which split each frame across threads so that no frame
    waits for a thread to come free). Both keep the keyframe rules: IDRs
    only on the grid, closed GOPs, no scene-cut keyframes.
    """

    name: str
    x264_tune: str | None
    bframes: int
    thread_type: str
    """PyAV ``thread_type``: ``FRAME`` or ``SLICE``. PyAV leaves a codec
    context at ``SLICE``, which puts libx264 into sliced-thread mode; the
    ffmpeg command line leaves it at frame+slice, which libx264 reads as
    frame threads. Set per use so neither default decides."""


ENCODE_USES = {
    "file": EncodeUse("file", None, 3, "FRAME"),
    "live": EncodeUse("live", "zerolatency", 0, "SLICE"),
}


def _check_choice(where: str, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise TranscodeConfigError(f"{where}: {key} {value!r} is not one of {', '.join(repr(a) for a in allowed)}")


def check_x264_tune(where: str, value: str) -> None:
    """``auto``, no tune (``""`` or ``"none"``), or x264 tunes joined by commas."""
    if value == TUNE_AUTO or value in NO_TUNE:
        return
    parts = value.split(",")
    for part in parts:
        if part not in X264_TUNES:
            allowed = ", ".join(repr(a) for a in (TUNE_AUTO, *NO_TUNE, *X264_TUNES))
            raise TranscodeConfigError(
                f"{where}: x264_tune {value!r} is not one of {allowed} (or several tunes joined by commas)"
            )
    psy = [p for p in parts if p in X264_PSY_TUNES]
    if len(psy) > 1:
        # x264 would only warn and drop all but one.
        raise TranscodeConfigError(f"{where}: x264_tune {value!r} names more than one of {', '.join(X264_PSY_TUNES)}")


@dataclass(frozen=True, slots=True)
class RungConfig:
    """One re-encoded rendition: its height (the width follows the source's
    aspect ratio), target bit rate and frame-rate cap.

    ``max_bitrate`` and ``buffer_size`` default to 1.5x and 2x the target, the
    usual VBV shape for HLS renditions; with ``rate_control="cbr"`` the
    maximum equals the target.
    """

    name: str
    height: int
    bitrate: int
    max_frame_rate: Fraction | None = Fraction(30)
    profile: str = "high"
    level: str | None = None
    max_bitrate: int | None = None
    buffer_size: int | None = None

    def __post_init__(self) -> None:
        _check_rendition_name(self.name)
        if self.height < 16 or self.height % 2:
            raise TranscodeConfigError(f"rung {self.name}: height must be even and at least 16")
        if self.bitrate <= 0:
            raise TranscodeConfigError(f"rung {self.name}: bitrate must be positive")
        if self.max_frame_rate is not None and self.max_frame_rate <= 0:
            raise TranscodeConfigError(f"rung {self.name}: max_frame_rate must be positive")
        _check_choice(f"rung {self.name}", "profile", self.profile, X264_PROFILES)
        if self.level is not None:
            _check_choice(f"rung {self.name}", "level", self.level, H264_LEVELS)


@dataclass(frozen=True, slots=True)
class PassthroughLimits:
    """The source is passed through unchanged only inside these limits."""

    max_width: int = 1920
    max_height: int = 1080
    max_frame_rate: Fraction = Fraction(60)
    max_bitrate: int | None = 8_000_000


@dataclass(frozen=True, slots=True)
class LadderConfig:
    """A named ladder, chosen per stream.

    ``segment_duration`` is the fixed keyframe grid used for files (live
    streams follow the source's keyframes instead). ``max_gop_duration`` only
    matters when the source sends no keyframe for that long.
    """

    name: str
    rungs: tuple[RungConfig, ...]
    passthrough: bool = True
    passthrough_name: str = "source"
    passthrough_limits: PassthroughLimits = field(default_factory=PassthroughLimits)
    rate_control: str = "vbr"
    x264_preset: str = "veryfast"
    x264_tune: str = TUNE_AUTO
    """libx264 tune: ``auto`` takes the job's :class:`EncodeUse` (none for
    files, ``zerolatency`` for live), ``""`` or ``"none"`` is no tune, else an
    x264 tune (several joined by commas)."""
    nvenc_preset: str = "p4"
    nvenc_tune: str = "ll"
    bframes: int | None = None
    """B-frames; ``None`` takes the job's :class:`EncodeUse` (3 for files, 0 live)."""
    encoder_threads: int = 0
    parallel_rungs: bool = True
    """Each rung scales and encodes on a thread of its own, fed decoded
    frames through a short queue, so decode and every rung overlap. False:
    decode, scale and encode one after another on one thread."""
    segment_duration: Fraction = Fraction(4)
    max_gop_duration: Fraction = Fraction(10)
    audio_bitrate: int = 128_000
    audio_sample_rate: int = 48_000
    audio_channels: int = 2

    def tune_for(self, use: EncodeUse) -> str | None:
        """The x264 tune to pass for ``use`` (``None``: no tune)."""
        if self.x264_tune == TUNE_AUTO:
            return use.x264_tune
        return None if self.x264_tune in NO_TUNE else self.x264_tune

    def bframes_for(self, use: EncodeUse) -> int:
        return use.bframes if self.bframes is None else self.bframes

    def __post_init__(self) -> None:
        _check_rendition_name(self.passthrough_name)
        names = [r.name for r in self.rungs]
        if self.passthrough:
            names.append(self.passthrough_name)
        if len(set(names)) != len(names):
            raise TranscodeConfigError(f"ladder {self.name}: rendition names must be unique: {names}")
        if not self.rungs and not self.passthrough:
            raise TranscodeConfigError(f"ladder {self.name}: has no renditions")
        where = f"ladder {self.name}"
        _check_choice(where, "rate_control", self.rate_control, RATE_CONTROLS)
        _check_choice(where, "x264_preset", self.x264_preset, X264_PRESETS)
        check_x264_tune(where, self.x264_tune)
        _check_choice(where, "nvenc_preset", self.nvenc_preset, NVENC_PRESETS)
        _check_choice(where, "nvenc_tune", self.nvenc_tune, NVENC_TUNES)
        if (self.bframes is not None and self.bframes < 0) or self.encoder_threads < 0:
            raise TranscodeConfigError(f"ladder {self.name}: bframes and encoder_threads must be >= 0")
        if self.segment_duration <= 0 or self.max_gop_duration <= 0:
            raise TranscodeConfigError(f"ladder {self.name}: durations must be positive")
        if self.audio_channels not in (1, 2):
            raise TranscodeConfigError(f"ladder {self.name}: audio_channels must be 1 or 2")


def _check_rendition_name(name: str) -> None:
    """Rendition names become URL path segments and folders: the stream
    name rule applies to them too."""
    try:
        check_stream_name(name, "rendition name")
    except StreamNameError as exc:
        raise TranscodeConfigError(str(exc)) from None


def builtin_ladders() -> dict[str, LadderConfig]:
    """The ladders available by name when the configuration adds none."""
    rungs = (
        RungConfig("1080p", 1080, 5_000_000, level="4.1"),
        RungConfig("720p", 720, 2_800_000, level="3.1"),
        RungConfig("480p", 480, 1_400_000, level="3.0"),
        RungConfig("360p", 360, 800_000, profile="main", level="3.0"),
    )
    return {
        "default": LadderConfig("default", rungs),
        "transcode-only": LadderConfig("transcode-only", rungs, passthrough=False),
        "passthrough": LadderConfig("passthrough", ()),
        "mobile": LadderConfig("mobile", rungs[2:]),
    }


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What planning needs to know about the source's video track."""

    codec: Codec
    width: int
    height: int
    frame_rate: Fraction | None = None
    bitrate: int | None = None


@dataclass(frozen=True, slots=True)
class PlannedRung:
    """A rung resolved against one source: exact output size and rate."""

    config: RungConfig
    width: int
    height: int
    frame_rate: Fraction | None
    """The output frame rate when known (source rate capped by the rung)."""
    frame_rate_cap: Fraction | None
    """The cap that decimation enforces, or ``None`` when the source is at or below it."""

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True, slots=True)
class LadderPlan:
    ladder: LadderConfig
    source: SourceInfo
    passthrough: bool
    passthrough_reason: str
    rungs: tuple[PlannedRung, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """Rungs left out for this source, each with the reason (for the log and status)."""

    @property
    def rendition_names(self) -> tuple[str, ...]:
        names = tuple(r.name for r in self.rungs)
        return ((self.ladder.passthrough_name,) if self.passthrough else ()) + names


def scaled_width(src_width: int, src_height: int, height: int) -> int:
    """The even width that keeps the source's display aspect at ``height``."""
    width = round(Fraction(src_width * height, src_height) / 2) * 2
    return max(2, int(width))


def passthrough_verdict(ladder: LadderConfig, source: SourceInfo) -> tuple[bool, str]:
    """Whether the source may be passed through, and why (for the status)."""
    limits = ladder.passthrough_limits
    if not ladder.passthrough:
        return False, "ladder has no passthrough"
    if source.codec is not Codec.H264:
        return False, f"source codec {source.codec.value} is not h264"
    if source.width > limits.max_width or source.height > limits.max_height:
        return False, f"source {source.width}x{source.height} exceeds {limits.max_width}x{limits.max_height}"
    if source.frame_rate is not None and source.frame_rate > limits.max_frame_rate:
        return False, f"source frame rate {float(source.frame_rate):.2f} exceeds {limits.max_frame_rate}"
    if limits.max_bitrate is not None and source.bitrate is not None and source.bitrate > limits.max_bitrate:
        return False, f"source bitrate {source.bitrate} exceeds {limits.max_bitrate}"
    return True, "within limits"


def long_gop_reason(target: Fraction) -> str:
    """Why a live source whose keyframes are further apart than the segment
    target is not passed through (for the log and the stream status)."""
    secs = f"{float(target):g} s"
    return (
        f"source keyframes are more than {secs} (the segment target) apart: "
        f"the rungs place their own keyframes every {secs} and the source is not passed through"
    )


def plan_ladder(ladder: LadderConfig, source: SourceInfo) -> LadderPlan:
    """Resolve ``ladder`` for ``source``.

    Rungs taller than the source are left out (never upscale). When the
    source is passed through, a rung as tall as it or with a higher bit rate
    than it is left out too: the passthrough already offers that picture,
    and a re-encode cannot add quality the source does not have. When that
    leaves nothing to play and the source cannot be passed through, the
    smallest rung is kept at the source's own size so the stream still has
    one playable rendition. A ladder with no rungs that cannot pass the
    source through raises :class:`SourceError`.
    """
    if source.width < 2 or source.height < 2:
        raise TranscodeConfigError(f"source size {source.width}x{source.height} is too small")
    passthrough, reason = passthrough_verdict(ladder, source)
    kept: list[RungConfig] = []
    skipped: list[tuple[str, str]] = []
    for r in ladder.rungs:
        if r.height > source.height:
            skipped.append((r.name, f"taller than the source's {source.height}"))
        elif passthrough and r.height >= source.height:
            skipped.append((r.name, f"the passthrough is already {source.height} high"))
        elif passthrough and source.bitrate is not None and r.bitrate > source.bitrate:
            skipped.append((r.name, f"{r.bitrate} bit/s is above the source's {source.bitrate}"))
        else:
            kept.append(r)
    if not kept and not passthrough and ladder.rungs:
        smallest = min(ladder.rungs, key=lambda r: r.height)
        kept = [smallest]
        skipped = [s for s in skipped if s[0] != smallest.name]
    planned = []
    for cfg in sorted(kept, key=lambda r: -r.height):
        height = min(cfg.height, source.height - source.height % 2)
        width = min(scaled_width(source.width, source.height, height), source.width - source.width % 2 or 2)
        cap = cfg.max_frame_rate
        if cap is not None and source.frame_rate is not None and source.frame_rate <= cap:
            cap = None
        rate = source.frame_rate if cap is None else cap
        planned.append(PlannedRung(cfg, width, max(2, height), rate, cap))
    if not planned and not passthrough:
        raise SourceError(f"ladder {ladder.name} has nothing for this source: {reason}")
    return LadderPlan(ladder, source, passthrough, reason, tuple(planned), tuple(skipped))
