"""Settings of the live transcoder (the ``[transcode]`` section)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings import doc
from transcode.errors import TranscodeConfigError
from transcode.ladder import H264_ENCODERS, LadderConfig, builtin_ladders

ENCODER_CHOICES = ("auto", *H264_ENCODERS)

SOFTWARE_DECODER = "software"
HARDWARE_DECODERS = ("cuda", "qsv")
"""Device types probed for ``auto``, in this order of preference."""
DECODER_CHOICES = ("auto", SOFTWARE_DECODER, *HARDWARE_DECODERS)


@dataclass(frozen=True, slots=True)
class TranscodeSettings:
    enabled: bool = doc(
        "Transcode every live stream into its ladder. Off: the source is packaged as it arrives.", True
    )
    ladder: str = doc("The ladder a stream gets when it names none.", "default")
    encoder: str = doc(
        "H.264 encoder: auto (the first hardware encoder that opens, else libx264) or a name "
        "(h264_nvenc, h264_qsv, libx264).",
        "auto",
    )
    decoder: str = doc(
        "Video decoder of live transcodes: auto (a GPU decoder, cuda then qsv, if one decodes a test "
        "frame at start-up, else software, logged with the reason), software, cuda (NVDEC) or qsv. "
        "Naming a GPU decoder that does not work here stops the engine at start-up.",
        "auto",
    )
    queue_frames: int = doc("Frames a stream's transcoder may fall behind before it drops (counted).", 256)
    ladders: dict[str, LadderConfig] = doc(
        "Named ladders, added to the built-in ones (default, transcode-only, passthrough, mobile): "
        "[transcode.ladders.NAME] with rungs = [{name, height, bitrate, max_frame_rate, profile, level}, ...] "
        "and passthrough, x264_preset, x264_tune (auto: none for files, zerolatency live; \"\" or none: no tune), "
        "rate_control, bframes (empty: 3 for files, 0 live), parallel_rungs, audio_bitrate.",
        factory=dict,
    )

    def __post_init__(self) -> None:
        if self.ladder not in self.all_ladders():
            known = ", ".join(sorted(self.all_ladders()))
            raise TranscodeConfigError(f"transcode.ladder {self.ladder!r} is not a known ladder; known: {known}")
        if self.encoder not in ENCODER_CHOICES:
            allowed = ", ".join(repr(e) for e in ENCODER_CHOICES)
            raise TranscodeConfigError(f"transcode.encoder {self.encoder!r} is not one of {allowed}")
        if self.decoder not in DECODER_CHOICES:
            allowed = ", ".join(repr(d) for d in DECODER_CHOICES)
            raise TranscodeConfigError(f"transcode.decoder {self.decoder!r} is not one of {allowed}")
        if self.queue_frames < 2:
            raise TranscodeConfigError("transcode.queue_frames must be at least 2")

    def all_ladders(self) -> dict[str, LadderConfig]:
        return {**builtin_ladders(), **self.ladders}
