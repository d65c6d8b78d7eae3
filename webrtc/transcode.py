"""The few conversions WebRTC needs, each once per stream, on PyAV.

* :class:`OpusToAac`: a WHIP publisher's Opus becomes AAC in the registry
  stream, because the HLS packager carries AAC only (through
  :mod:`transcode.audio`).
* :class:`AacToOpus`: an RTMP publisher's AAC becomes Opus for WHEP viewers
  (browsers take no AAC over WebRTC); it runs only while viewers exist.
* :class:`VideoToH264`: VP8 from a WHIP publisher becomes H.264 for HLS, and
  a source with B-frames is re-encoded for WHEP viewers (WebRTC carries one
  timestamp per frame, so frames must arrive in display order). It runs
  the transcoder's own decoder and rung encoder (:mod:`transcode.video`),
  libx264 ``ultrafast`` with ``zerolatency``: no B-frames, no lookahead.

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

from engine.codecs import CodecError, nal_length_size, parameter_sets
from engine.media import Codec, Packet, Track, rescale
from transcode.audio import AudioTranscoder
from transcode.encoders import SOFTWARE_H264
from transcode.errors import SourceError, TranscodeError
from transcode.ladder import ENCODE_USES, LadderConfig, PlannedRung, RungConfig
from transcode.video import RungEncoder, VideoDecoder, mark_frame
from webrtc.errors import BitstreamError
from webrtc.h264 import avcc_to_annexb_keyframe

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
    decoder: AudioCodecContext, data: bytes, pts: int, time_base: Fraction
) -> list[av.AudioFrame]:
    packet = av.Packet(data)
    packet.pts = pts
    packet.dts = pts
    packet.time_base = time_base
    try:
        return list(decoder.decode(packet))
    except av.error.FFmpegError as exc:
        raise BitstreamError(f"{decoder.name} decode failed: {exc}") from exc


class OpusToAac:
    """Raw Opus packets (48 kHz clock) in, raw AAC-LC access units out,
    through the transcoder's own audio path
    (:class:`transcode.audio.AudioTranscoder`, the one every rendition's
    AAC comes from); timestamps stay on the publisher's clock, gaps
    included.

    :attr:`extradata` is the AudioSpecificConfig of the output track.
    """

    def __init__(self, bitrate: int = 128_000, channels: int = 2) -> None:
        ladder = LadderConfig(
            "webrtc-audio", (), audio_bitrate=bitrate, audio_sample_rate=AUDIO_RATE, audio_channels=channels
        )
        source = Track(0, Codec.OPUS, AUDIO_TIME_BASE, b"", sample_rate=AUDIO_RATE, channels=channels)
        try:
            self._audio = AudioTranscoder(source, ladder, index=0)
        except TranscodeError as exc:
            raise BitstreamError(f"Opus to AAC: {exc}") from exc
        self.channels = channels
        self.extradata = self._audio.track.extradata

    def push(self, data: bytes | None, pts: int = 0) -> list[Coded]:
        """Convert one Opus packet with ``pts`` in 1/48000 (``None``
        flushes the encoder)."""
        packet = None if data is None else Packet(0, pts, pts, AUDIO_TIME_BASE, data, True)
        errors = self._audio.errors
        try:
            packets = self._audio.push(packet)
        except (TranscodeError, av.error.FFmpegError) as exc:
            raise BitstreamError(f"Opus to AAC failed: {exc}") from exc
        if not packets and self._audio.errors > errors:
            raise BitstreamError("Opus decode failed: the decoder refused the packet")
        return [Coded(p.data, p.pts, True, p.duration or 1024) for p in packets]


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
    """Encoded video of ``codec`` in (``extradata`` its record), Annex B
    H.264 out with the SPS and PPS before every keyframe, timestamps in
    1/90000.

    Decoding and encoding are the transcoder's own
    (:class:`transcode.video.VideoDecoder` and
    :class:`transcode.video.RungEncoder` with libx264 ``ultrafast`` and
    ``zerolatency``, no B-frames); this class only decides the keyframes
    and converts the output for a WebRTC packetiser. ``gop_frames`` bounds
    the keyframe interval; :meth:`request_keyframe` makes the next output
    frame a keyframe (a new viewer joins). ``bitrate`` 0 picks one from the
    picture size.
    """

    def __init__(
        self, codec: Codec, time_base: Fraction, extradata: bytes = b"", gop_frames: int = 30, bitrate: int = 0
    ) -> None:
        try:
            self._decoder = VideoDecoder(Track(0, codec, time_base, extradata))
        except (SourceError, av.error.FFmpegError) as exc:
            raise BitstreamError(f"no decoder for {codec.value}: {exc}") from exc
        # One frame in, one frame out, without frame threading: its delay of
        # a frame per thread matters to WebRTC, and after a corrupt VP8
        # packet FFmpeg's frame threads can hang when the context closes.
        self._decoder.ctx.thread_type = "NONE"
        self._in_tb = time_base
        self._gop = max(1, gop_frames)
        self._bitrate = bitrate
        self._encoder: RungEncoder | None = None
        self._param_sets: list[bytes] = []
        self._length_size = 4
        self._size: tuple[int, int] | None = None
        self._since_key = 0
        self._force_key = False

    def request_keyframe(self) -> None:
        self._force_key = True

    def _open(self, width: int, height: int) -> RungEncoder:
        bitrate = self._bitrate or max(300_000, width * height * 3)
        profile = "baseline" if width * height <= 1920 * 1080 else "main"
        rung = RungConfig("webrtc", height, bitrate, max_frame_rate=None, profile=profile)
        ladder = LadderConfig(
            "webrtc", (rung,), passthrough=False, x264_preset="ultrafast", x264_tune="zerolatency", bframes=0
        )
        try:
            encoder = RungEncoder(
                PlannedRung(rung, width, height, None, None), ladder, SOFTWARE_H264, self._in_tb, ENCODE_USES["live"]
            )
            self._param_sets = parameter_sets(encoder.track)
            self._length_size = nal_length_size(encoder.track)
        except (TranscodeError, CodecError) as exc:
            raise BitstreamError(f"H.264 encoder for {width}x{height}: {exc}") from exc
        self._since_key = 0
        return encoder

    def push(self, data: bytes | None, pts: int = 0) -> list[Coded]:
        """Convert one packet with ``pts`` in the source time base (``None``
        flushes)."""
        out: list[Coded] = []
        errors = self._decoder.errors
        try:
            frames = self._decoder.decode(None if data is None else Packet(0, pts, pts, self._in_tb, data))
        except av.error.FFmpegError as exc:
            raise BitstreamError(f"video decode failed: {exc}") from exc
        if not frames and self._decoder.errors > errors:
            raise BitstreamError("video decode failed: the decoder refused the packet")
        for frame in frames:
            size = (frame.width - frame.width % 2, frame.height - frame.height % 2)
            if self._encoder is None or size != self._size:
                if self._encoder is not None:
                    out.extend(self._coded(self._flush()))
                self._encoder = self._open(*size)
                self._size = size
            boundary = self._force_key or self._since_key == 0 or self._since_key >= self._gop
            self._force_key = False
            self._since_key = 1 if boundary else self._since_key + 1
            mark_frame(frame, self._in_tb, boundary)
            try:
                packets = self._encoder.encode(frame, boundary)
            except TranscodeError as exc:
                raise BitstreamError(f"H.264 encode failed: {exc}") from exc
            out.extend(self._coded(packets))
        if data is None and self._encoder is not None:
            out.extend(self._coded(self._flush()))
        return out

    def _flush(self) -> list[Packet]:
        assert self._encoder is not None
        try:
            return self._encoder.flush()
        except TranscodeError as exc:
            raise BitstreamError(f"H.264 encode failed: {exc}") from exc

    def _coded(self, packets: list[Packet]) -> list[Coded]:
        return [
            Coded(
                avcc_to_annexb_keyframe(p.data, p.keyframe, self._param_sets, self._length_size),
                rescale(p.pts, p.time_base, VIDEO_TIME_BASE),
                p.keyframe,
            )
            for p in packets
        ]
