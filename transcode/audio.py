"""Audio: decoded once, encoded once to AAC, shared by every rendition.

Whatever the source carries (AAC from RTMP, Opus from WHIP), every rendition
gets the same AAC track at the ladder's sample rate and channel count, so a
player switching renditions hears no jump and the work is done once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction

import av
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.codec.context import Flags

from engine.media import Codec, Packet, Track
from transcode.errors import EncoderError
from transcode.ladder import LadderConfig
from transcode.video import open_decoder, to_av_packet

log = logging.getLogger(__name__)

AUDIO_DECODERS = {Codec.AAC: "aac", Codec.OPUS: "libopus"}


class AudioTranscoder:
    """Turns source audio packets into AAC packets for track index ``index``
    of each rendition. Call :meth:`push` per packet and :meth:`flush` once."""

    def __init__(
        self,
        source: Track,
        ladder: LadderConfig,
        index: int = 1,
        audio_filter: Callable[[AudioFrame], AudioFrame] | None = None,
    ) -> None:
        self.audio_filter = audio_filter
        decoder = open_decoder(source, AUDIO_DECODERS, "audio")
        assert isinstance(decoder, AudioCodecContext)
        self.decoder = decoder
        if source.codec is Codec.OPUS:
            self.decoder.sample_rate = source.sample_rate or 48_000
        rate = ladder.audio_sample_rate
        layout = "stereo" if ladder.audio_channels == 2 else "mono"
        try:
            encoder = av.CodecContext.create("aac", "w")
            assert isinstance(encoder, AudioCodecContext)
            self.encoder = encoder
            self.encoder.sample_rate = rate
            self.encoder.layout = layout
            self.encoder.format = "fltp"
            self.encoder.bit_rate = ladder.audio_bitrate
            self.encoder.time_base = Fraction(1, rate)
            self.encoder.flags |= Flags.global_header
            self.encoder.open()
        except av.FFmpegError as exc:
            raise EncoderError(f"AAC encoder did not open: {exc}") from exc
        self.time_base = Fraction(1, rate)
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=self.encoder.frame_size)
        self.track = Track(
            index,
            Codec.AAC,
            self.time_base,
            bytes(self.encoder.extradata or b""),
            sample_rate=rate,
            channels=ladder.audio_channels,
            bitrate=ladder.audio_bitrate,
        )
        self.index = index
        self.source_time_base = source.time_base
        self.errors = 0
        self.frames_encoded = 0

    def push(self, packet: Packet | None) -> list[Packet]:
        """AAC packets for one source packet (``None`` flushes everything)."""
        try:
            frames = self.decoder.decode(to_av_packet(packet))
        except av.error.InvalidDataError as exc:
            self.errors += 1
            log.debug("audio decode error %d: %s", self.errors, exc)
            return []
        out: list[Packet] = []
        for frame in frames:
            assert isinstance(frame, AudioFrame)
            frame.time_base = self.source_time_base
            out += self._encode_all(self._resampler.resample(frame))
        if packet is None:
            out += self._encode_all(self._resampler.resample(None))
            out += self._encode(None)
        return out

    def _encode_all(self, frames: list[AudioFrame]) -> list[Packet]:
        out: list[Packet] = []
        for frame in frames:
            if self.audio_filter is not None:
                # Effects (the voice changer) run once, on the shared audio,
                # before the one AAC encode every rendition carries.
                frame = self.audio_filter(frame)
            out += self._encode(frame)
        return out

    def _encode(self, frame: AudioFrame | None) -> list[Packet]:
        try:
            encoded = self.encoder.encode(frame)
        except av.FFmpegError as exc:
            raise EncoderError(f"AAC encode failed: {exc}") from exc
        if frame is not None:
            self.frames_encoded += 1
        out = []
        for p in encoded:
            if p.pts is not None:
                dts = p.pts if p.dts is None else p.dts
                out.append(Packet(self.index, p.pts, dts, self.time_base, bytes(p), True, p.duration or 0))
        return out
