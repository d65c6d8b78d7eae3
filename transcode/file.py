"""File transcode: a media file in, per-rendition tracks and packets out.

:func:`transcode_file` demuxes with PyAV, turns the file's streams into the
engine's media model and runs the same :class:`StreamTranscoder` as live
streams, on a fixed keyframe grid (``ladder.segment_duration``) so every
rendition's segments start at the same times. When the source is passed
through, its own keyframes are the grid instead: they cannot be moved.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.container import InputContainer

from engine.media import Codec, Packet, Track
from transcode.core import AudioFilter, FrameFilter, StreamTranscoder, TranscodeEvent
from transcode.encoders import SOFTWARE_H264, EncoderProbe, probe_encoders
from transcode.errors import SourceError
from transcode.keyframes import FixedKeyframeGrid, KeyframeGrid, SourceKeyframeGrid
from transcode.ladder import LadderConfig, SourceInfo, plan_ladder

log = logging.getLogger(__name__)

CODECS = {
    "h264": Codec.H264,
    "hevc": Codec.HEVC,
    "av1": Codec.AV1,
    "libdav1d": Codec.AV1,
    "vp8": Codec.VP8,
    "vp9": Codec.VP9,
    "aac": Codec.AAC,
    "opus": Codec.OPUS,
    "libopus": Codec.OPUS,
}


@dataclass(frozen=True, slots=True)
class TranscodeProgress:
    """How far a file transcode has read; ``duration`` is ``None`` when the
    container does not say."""

    position: Fraction
    duration: Fraction | None

    @property
    def fraction(self) -> float | None:
        if not self.duration:
            return None
        return min(1.0, max(0.0, float(self.position / self.duration)))


ProgressCallback = Callable[[TranscodeProgress], None]


def _tracks(container: InputContainer) -> tuple[tuple[Track, ...], dict[int, int], bool]:
    """Model tracks for the first video and first audio stream, the map from
    stream index to track index, and whether the video is AVCC."""
    tracks: list[Track] = []
    mapping: dict[int, int] = {}
    avcc = True
    video = next(iter(container.streams.video), None)
    audio = next(iter(container.streams.audio), None)
    if video is None:
        raise SourceError("the file has no video stream")
    vcodec = CODECS.get(video.codec_context.name)
    if vcodec is None:
        raise SourceError(f"video codec {video.codec_context.name} is not supported")
    extradata = bytes(video.codec_context.extradata or b"")
    if vcodec is Codec.H264 and extradata[:1] != b"\x01":
        avcc = False  # Annex B (MPEG-TS): decodable, but not passed through
    rate = video.average_rate or video.guessed_rate
    tracks.append(
        Track(
            len(tracks),
            vcodec,
            Fraction(video.time_base or Fraction(1, 90000)),
            extradata,
            width=video.codec_context.width,
            height=video.codec_context.height,
            frame_rate=Fraction(rate) if rate else None,
            bitrate=video.codec_context.bit_rate or video.bit_rate or None,
        )
    )
    mapping[video.index] = 0
    if audio is not None and audio.codec_context.name in CODECS:
        tracks.append(
            Track(
                len(tracks),
                CODECS[audio.codec_context.name],
                Fraction(audio.time_base or Fraction(1, audio.codec_context.sample_rate)),
                bytes(audio.codec_context.extradata or b""),
                sample_rate=audio.codec_context.sample_rate,
                channels=audio.codec_context.channels,
            )
        )
        mapping[audio.index] = 1
    elif audio is not None:
        log.warning("audio codec %s is not supported; transcoding video only", audio.codec_context.name)
    return tuple(tracks), mapping, avcc


def transcode_file(
    input_path: str | Path,
    ladder: LadderConfig,
    encoder: str = "auto",
    progress: ProgressCallback | None = None,
    probe: EncoderProbe | None = None,
    frame_filter: FrameFilter | None = None,
    audio_filter: AudioFilter | None = None,
    use: str = "file",
) -> Iterator[TranscodeEvent]:
    """Transcode ``input_path`` along ``ladder``; yields each rendition's
    :class:`~transcode.core.RenditionStarted` before its packets.

    ``encoder`` is ``auto`` (first hardware encoder that opens, else
    libx264) or an encoder name. Pass ``probe`` to reuse a start-up probe.
    Packets of each rendition come in decode order; renditions interleave.
    ``use`` names the encoder settings: ``file`` (quality per bit: B-frames,
    lookahead, frame threads) unless the caller wants ``live`` ones.
    """
    if probe is None:
        if encoder == "auto":
            probe = probe_encoders()
        else:
            probe = probe_encoders(() if encoder == SOFTWARE_H264 else (encoder,))
    name = probe.choose(encoder)
    try:
        container = av.open(str(input_path))
    except av.FFmpegError as exc:
        raise SourceError(f"cannot open {input_path}: {exc}") from exc
    with container:
        tracks, mapping, avcc = _tracks(container)
        if not avcc and ladder.passthrough:
            log.info("%s: H.264 without an avcC record cannot be passed through", input_path)
            ladder = dataclasses.replace(ladder, passthrough=False)
        video = tracks[0]
        grid: KeyframeGrid = FixedKeyframeGrid(ladder.segment_duration)
        if video.width and video.height:
            info = SourceInfo(video.codec, video.width, video.height, video.frame_rate, video.bitrate)
            if plan_ladder(ladder, info).passthrough:
                grid = SourceKeyframeGrid()
        tx = StreamTranscoder(ladder, name, grid, frame_filter=frame_filter, audio_filter=audio_filter, use=use)
        try:
            yield from _run(tx, container, tracks, mapping, progress)
        finally:
            tx.close()  # a consumer that stops early leaves no rung threads behind


def _run(
    tx: StreamTranscoder,
    container: InputContainer,
    tracks: tuple[Track, ...],
    mapping: dict[int, int],
    progress: ProgressCallback | None,
) -> Iterator[TranscodeEvent]:
    """Feed ``container``'s packets through ``tx``, yielding its events."""
    yield from tx.start(tracks)
    duration = Fraction(container.duration, av.time_base) if container.duration else None
    origin: Fraction | None = None
    streams = [s for s in container.streams if s.index in mapping]
    for av_packet in container.demux(streams):
        if av_packet.size == 0 or (av_packet.pts is None and av_packet.dts is None):
            continue
        index = mapping[av_packet.stream.index]
        tb = tracks[index].time_base
        pts = av_packet.pts if av_packet.pts is not None else av_packet.dts
        dts = av_packet.dts if av_packet.dts is not None else pts
        assert pts is not None and dts is not None
        packet = Packet(index, pts, dts, tb, bytes(av_packet), bool(av_packet.is_keyframe), av_packet.duration or 0)
        yield from tx.push(packet)
        if progress is not None and index == 0:
            t = pts * tb
            origin = t if origin is None else min(origin, t)
            progress(TranscodeProgress(t - origin, duration))
    yield from tx.flush()
    if progress is not None and duration is not None:
        progress(TranscodeProgress(duration, duration))
