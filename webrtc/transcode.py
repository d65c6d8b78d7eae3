"""The few conversions WebRTC needs, each once per stream, on PyAV.

* :class:`OpusToAac`: a WHIP publisher's Opus becomes AAC in the registry
  stream, because the HLS packager carries AAC only.
* :class:`AacToOpus`: an RTMP publisher's AAC becomes Opus for WHEP viewers
  (browsers take no AAC over WebRTC); it runs only while viewers exist.
* :class:`VideoToH264`: VP8 from a WHIP publisher becomes H.264 for HLS, and
  a source with B-frames is re-encoded for WHEP viewers (WebRTC carries one
  timestamp per frame, so frames must arrive in display order). libx264
  ``ultrafast`` with ``zerolatency``: no B-frames, no lookahead.

Each object is "packet in, list of packets out" and is called off the event
loop (``loop.run_in_executor``); PyAV releases the GIL inside FFmpeg. One
object must only ever be used from one thread at a time. A broken input
packet raises :class:`BitstreamError`; the caller decides whether to skip it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from webrtc.errors import BitstreamError

AUDIO_RATE = 48_000
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
VIDEO_TIME_BASE = Fraction(1, 90_000)


@dataclass(frozen=True, slots=True)
class Coded:
    """One encoded packet: data and its timestamp in the converter's
    output time base."""

    data: bytes
    pts: int
    keyframe: bool = False
    duration: int = 0


def _decode(
    decoder: AudioCodecContext | VideoCodecContext, data: bytes, pts: int, time_base: Fraction
) -> list[av.frame.Frame]:
    packet = av.Packet(data)
    packet.pts = pts
    packet.dts = pts
    packet.time_base = time_base
    try:
        return list(decoder.decode(packet))
    except av.error.FFmpegError as exc:
        raise BitstreamError(f"{decoder.name} decode failed: {exc}") from exc


class OpusToAac:
    """Raw Opus packets (48 kHz clock) in, raw AAC-LC access units out.

    :attr:`extradata` is the AudioSpecificConfig of the output track.
    """

    def __init__(self, bitrate: int = 128_000, channels: int = 2) -> None:
        self._decoder: AudioCodecContext = av.CodecContext.create("opus", "r")
        self._decoder.sample_rate = AUDIO_RATE
        self._decoder.layout = "stereo" if channels == 2 else "mono"
        self._encoder: AudioCodecContext = av.CodecContext.create("aac", "w")
        self._encoder.sample_rate = AUDIO_RATE
        self._encoder.layout = "stereo" if channels == 2 else "mono"
        self._encoder.format = "fltp"
        self._encoder.bit_rate = bitrate
        self._encoder.time_base = AUDIO_TIME_BASE
        self._encoder.flags |= av.codec.context.Flags.global_header
        self._encoder.open()
        self.channels = channels
        self.extradata = bytes(self._encoder.extradata or b"")
        self._next_pts: int | None = None

    def push(self, data: bytes | None, pts: int = 0) -> list[Coded]:
        """Convert one Opus packet with ``pts`` in 1/48000 (``None``
        flushes the encoder)."""
        frames: list[av.AudioFrame | None]
        if data is None:
            frames = [None]
        else:
            frames = [f for f in _decode(self._decoder, data, pts, AUDIO_TIME_BASE) if isinstance(f, av.AudioFrame)]
        out: list[Coded] = []
        for frame in frames:
            if frame is not None:
                # Timestamps follow the publisher's clock; the encoder's own
                # 1024-sample framing is re-timed from the first one.
                if self._next_pts is None or frame.pts is None or abs(frame.pts - self._next_pts) > AUDIO_RATE // 10:
                    self._next_pts = frame.pts if frame.pts is not None else 0
                frame.pts = self._next_pts
                frame.time_base = AUDIO_TIME_BASE
                self._next_pts += frame.samples
            try:
                packets = self._encoder.encode(frame)
            except av.error.FFmpegError as exc:
                raise BitstreamError(f"AAC encode failed: {exc}") from exc
            for p in packets:
                out.append(Coded(bytes(p), int(p.pts or 0), True, int(p.duration or 1024)))
        return out


class AacToOpus:
    """Raw AAC access units in (``asc`` is the AudioSpecificConfig), raw Opus
    packets of 20 ms out, timestamps in 1/48000."""

    def __init__(self, asc: bytes, sample_rate: int, time_base: Fraction, bitrate: int = 96_000) -> None:
        self._decoder: AudioCodecContext = av.CodecContext.create("aac", "r")
        self._decoder.extradata = asc
        self._in_tb = time_base
        self._encoder: AudioCodecContext = av.CodecContext.create("libopus", "w")
        self._encoder.sample_rate = AUDIO_RATE
        self._encoder.layout = "stereo"
        self._encoder.format = "s16"
        self._encoder.bit_rate = bitrate
        self._encoder.time_base = AUDIO_TIME_BASE
        self._encoder.options = {"application": "lowdelay", "frame_duration": "20"}
        self._encoder.open()
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE)
        self._next_pts: int | None = None
        self.source_rate = sample_rate

    def push(self, data: bytes | None, pts: int = 0) -> list[Coded]:
        """Convert one AAC access unit with ``pts`` in the source time base."""
        out: list[Coded] = []
        frames: list[av.AudioFrame | None] = []
        if data is None:
            frames.append(None)
        else:
            for decoded in _decode(self._decoder, data, pts, self._in_tb):
                if not isinstance(decoded, av.AudioFrame):
                    continue
                start = int(pts * self._in_tb * AUDIO_RATE)
                for frame in self._resampler.resample(decoded):
                    if self._next_pts is None or abs(start - self._next_pts) > AUDIO_RATE // 10:
                        self._next_pts = start
                    frame.pts = self._next_pts
                    frame.time_base = AUDIO_TIME_BASE
                    self._next_pts += frame.samples
                    start += frame.samples
                    frames.append(frame)
        for pending in frames:
            try:
                packets = self._encoder.encode(pending)
            except av.error.FFmpegError as exc:
                raise BitstreamError(f"Opus encode failed: {exc}") from exc
            out.extend(Coded(bytes(p), int(p.pts or 0), True, int(p.duration or 960)) for p in packets)
        return out


class VideoToH264:
    """Encoded video in (``decoder_name`` is an FFmpeg decoder: ``vp8``,
    ``h264``, ``hevc``; ``extradata`` its record), Annex B H.264 out with the
    SPS and PPS repeated before every keyframe, timestamps in 1/90000.

    ``gop_frames`` bounds the keyframe interval; :meth:`request_keyframe`
    makes the next output frame a keyframe (a new viewer joins).
    """

    def __init__(
        self, decoder_name: str, time_base: Fraction, extradata: bytes = b"", gop_frames: int = 30, bitrate: int = 0
    ) -> None:
        self._decoder: VideoCodecContext = av.CodecContext.create(decoder_name, "r")  # type: ignore[assignment]
        if extradata:
            self._decoder.extradata = extradata
        self._in_tb = time_base
        self._gop = gop_frames
        self._bitrate = bitrate
        self._encoder: VideoCodecContext | None = None
        self._size: tuple[int, int] | None = None
        self._force_key = False

    def request_keyframe(self) -> None:
        self._force_key = True

    def _open(self, width: int, height: int) -> VideoCodecContext:
        enc: VideoCodecContext = av.CodecContext.create("libx264", "w")
        enc.width = width
        enc.height = height
        enc.pix_fmt = "yuv420p"
        enc.time_base = VIDEO_TIME_BASE
        enc.framerate = Fraction(30)
        enc.gop_size = self._gop
        enc.max_b_frames = 0
        if self._bitrate:
            enc.bit_rate = self._bitrate
        enc.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline" if width * height <= 1920 * 1080 else "main",
            "x264-params": f"repeat-headers=1:keyint={self._gop}:min-keyint={max(1, self._gop // 2)}:scenecut=0",
        }
        enc.open()
        return enc

    def push(self, data: bytes | None, pts: int = 0) -> list[Coded]:
        """Convert one packet with ``pts`` in the source time base (``None``
        flushes)."""
        frames: list[av.VideoFrame | None] = []
        if data is None:
            frames.append(None)
        else:
            frames.extend(f for f in _decode(self._decoder, data, pts, self._in_tb) if isinstance(f, av.VideoFrame))
        out: list[Coded] = []
        for frame in frames:
            if frame is not None:
                size = (frame.width - frame.width % 2, frame.height - frame.height % 2)
                if self._encoder is None or size != self._size:
                    if self._encoder is not None:
                        out.extend(self._drain(None))
                    self._encoder = self._open(*size)
                    self._size = size
                if frame.format.name != "yuv420p" or (frame.width, frame.height) != size:
                    frame = frame.reformat(width=size[0], height=size[1], format="yuv420p")
                src_pts = frame.pts if frame.pts is not None else pts
                frame.pts = int(src_pts * self._in_tb / VIDEO_TIME_BASE)
                frame.time_base = VIDEO_TIME_BASE
                frame.pict_type = PictureType.I if self._force_key else PictureType.NONE
                self._force_key = False
            out.extend(self._drain(frame))
        return out

    def _drain(self, frame: av.VideoFrame | None) -> list[Coded]:
        if self._encoder is None:
            return []
        try:
            packets = self._encoder.encode(frame)
        except av.error.FFmpegError as exc:
            raise BitstreamError(f"H.264 encode failed: {exc}") from exc
        return [Coded(bytes(p), int(p.pts or 0), bool(p.is_keyframe)) for p in packets]
