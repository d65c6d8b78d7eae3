"""Video decode and per-rung scale + encode.

One :class:`VideoDecoder` per stream; one :class:`RungEncoder` per rung, each
with a persistent :class:`~av.video.reformatter.VideoReformatter` (its
scaler context is built once and reused; ``VideoFrame.reformat()`` would
build one per frame, about three times slower here) and its own encoder.
Output packets are normalised to the media model's AVCC convention.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame
from av.video.reformatter import Interpolation, VideoReformatter

from engine.codecs import CodecError, avc_packet_from_annexb, extradata_to_avcc
from engine.media import Codec, Packet, Track
from transcode.config import SOFTWARE_DECODER
from transcode.decoders import DecoderUnavailable, open_hw_decoder
from transcode.encoders import open_encoder
from transcode.errors import EncoderError, SourceError
from transcode.keyframes import FrameRateCap
from transcode.ladder import EncodeUse, LadderConfig, PlannedRung

log = logging.getLogger(__name__)

DECODERS = {Codec.H264: "h264", Codec.HEVC: "hevc", Codec.AV1: "libdav1d", Codec.VP8: "vp8", Codec.VP9: "vp9"}


AVCOL_SPC_BT470BG = 5
AVCOL_SPC_SMPTE170M = 6
AVCOL_UNSPECIFIED = 2
"""``AVCOL_TRC_UNSPECIFIED`` and ``AVCOL_PRI_UNSPECIFIED``."""


def mark_frame(frame: VideoFrame, time_base: Fraction, boundary: bool) -> None:
    """Prepare a decoded frame, once, before every rung reads it.

    Sets what the encoders read: the time base, and I (forced IDR) on a
    segment boundary, else no type (a decoded frame says I on its own
    keyframes, and libx264 would make an IDR of every one).

    And makes the frame safe to scale from several threads at once:
    ``VideoReformatter.reformat`` writes the source frame's colour tags for
    the duration of the scale and writes them back after. Set here to the
    values it writes (transfer and primaries unspecified, BT.470BG as its
    equal SMPTE 170M; the same BT.601 matrix), those writes change nothing,
    so concurrent scales cannot see each other's. Encoders take their colour
    description from the codec context, not from frames.
    """
    frame.time_base = time_base
    frame.pict_type = PictureType.I if boundary else PictureType.NONE
    frame.color_trc = AVCOL_UNSPECIFIED
    frame.color_primaries = AVCOL_UNSPECIFIED
    if frame.colorspace == AVCOL_SPC_BT470BG:
        frame.colorspace = AVCOL_SPC_SMPTE170M


def open_decoder(track: Track, names: dict[Codec, str], kind: str) -> CodecContext:
    """A decoder for ``track``, with the track's extradata set.

    ``names`` maps a codec to the FFmpeg decoder preferred for it; when that
    one is not built in, FFmpeg's default decoder for the codec is used.
    A codec missing from ``names`` is a :class:`SourceError` (``kind`` names
    the media kind in its message)."""
    name = names.get(track.codec)
    if name is None:
        raise SourceError(f"no decoder for {kind} codec {track.codec.value}")
    try:
        ctx = av.CodecContext.create(name, "r")
    except av.FFmpegError:
        ctx = av.CodecContext.create(track.codec.value, "r")
    if track.extradata:
        ctx.extradata = track.extradata
    return ctx


def to_av_packet(packet: Packet | None) -> av.Packet | None:
    """``packet`` as a PyAV packet with its timing (``None`` stays ``None``,
    the decoders' flush signal)."""
    if packet is None:
        return None
    av_packet = av.Packet(packet.data)
    av_packet.pts = packet.pts
    av_packet.dts = packet.dts
    av_packet.time_base = packet.time_base
    return av_packet



class VideoDecoder:
    """Decodes a model video track (AVCC with an ``avcC`` extradata for
    H.264) into frames carrying the source's pts and time base.

    ``hwaccel`` names a hardware device type (``cuda``, ``qsv``) to decode
    on, as chosen by :func:`transcode.decoders.probe_decoders`. Its frames
    are downloaded to system memory (``nv12``), which the rung scalers take
    like any software frame. When the device cannot decode this particular
    track (codec or profile it lacks), the track is decoded in software and
    :attr:`name` says so.
    """

    def __init__(self, track: Track, hwaccel: str | None = None) -> None:
        self.name = SOFTWARE_DECODER
        ctx: VideoCodecContext | None = None
        if hwaccel is not None:
            try:
                hw = open_hw_decoder(track, hwaccel)
                assert isinstance(hw, VideoCodecContext)
                ctx = hw
                self.name = hwaccel
            except DecoderUnavailable as exc:
                log.info("%s; decoding in software", exc)
        self.ctx = ctx if ctx is not None else _software_decoder(track)
        self.track = track
        self.time_base = track.time_base
        self.errors = 0

    def decode(self, packet: Packet | None) -> list[VideoFrame]:
        """Frames for ``packet`` (``None`` flushes). A packet the decoder
        rejects is counted in :attr:`errors` and skipped: one corrupt access
        unit must not end a live stream."""
        av_packet = to_av_packet(packet)
        if av_packet is not None and packet is not None and packet.keyframe:
            av_packet.is_keyframe = True
        try:
            frames = self.ctx.decode(av_packet)
        except av.error.InvalidDataError as exc:
            self.errors += 1
            log.debug("video decode error %d: %s", self.errors, exc)
            return []
        except av.FFmpegError as exc:
            if self.name == SOFTWARE_DECODER:
                raise
            # The device opened but cannot decode this stream (a profile or
            # size NVDEC lacks): software from the next keyframe on.
            log.warning("%s decode failed (%s); decoding in software", self.name, exc)
            self.errors += 1
            self.name = SOFTWARE_DECODER
            self.ctx = _software_decoder(self.track)
            return []
        out = []
        for frame in frames:
            assert isinstance(frame, VideoFrame)
            if frame.pts is None:
                self.errors += 1
                continue
            frame.time_base = self.time_base
            out.append(frame)
        return out


def _software_decoder(track: Track) -> VideoCodecContext:
    ctx = open_decoder(track, DECODERS, "video")
    assert isinstance(ctx, VideoCodecContext)
    ctx.thread_type = "AUTO"
    return ctx


class RungEncoder:
    """Scales and encodes one rung. Call :meth:`encode` with every decoded
    frame and the shared boundary decision, then :meth:`flush` at the end."""

    def __init__(
        self,
        rung: PlannedRung,
        ladder: LadderConfig,
        encoder: str,
        time_base: Fraction,
        use: EncodeUse,
        scale_threads: int = 0,
    ) -> None:
        self.rung = rung
        self.scale_threads = scale_threads
        self.encoder_name = encoder
        self.time_base = time_base
        self.ctx = open_encoder(encoder, ladder, rung, time_base, use)
        extradata = self.ctx.extradata
        if not extradata:
            raise EncoderError(f"encoder {encoder} gave no global header for {rung.name}")
        # Encoders whose global header is Annex B emit Annex B packets too;
        # deciding once avoids guessing per packet (an AVCC length of
        # 256..511 starts with the bytes of a 3-byte start code).
        self._annexb = extradata[:1] != b"\x01"
        try:
            record = extradata_to_avcc(extradata)
        except CodecError as exc:
            raise EncoderError(f"encoder {encoder} gave an unusable global header for {rung.name}: {exc}") from exc
        self.track = Track(
            0,
            Codec.H264,
            time_base,
            record,
            width=rung.width,
            height=rung.height,
            frame_rate=rung.frame_rate,
            bitrate=rung.config.bitrate,
        )
        self._scaler = VideoReformatter()
        self._cap = FrameRateCap(rung.frame_rate_cap)
        self.frames_encoded = 0
        self.frames_skipped = 0
        self.idr_forced = 0

    def encode(self, frame: VideoFrame, boundary: bool) -> list[Packet]:
        """Encode ``frame`` (decoder output at source size) for this rung;
        ``boundary`` forces an IDR. The frame is not kept or changed, so
        several rungs may encode the same frame at once on their own threads."""
        assert frame.pts is not None
        if not self._cap.keep(frame.pts, self.time_base, boundary):
            self.frames_skipped += 1
            return []
        scaled = self._scaler.reformat(
            frame,
            self.rung.width,
            self.rung.height,
            "yuv420p",
            interpolation=Interpolation.BILINEAR,
            threads=self.scale_threads,
        )
        picture = PictureType.I if boundary else PictureType.NONE
        if scaled is frame:
            # Same size and format: the reformatter hands the frame itself
            # back, and other rungs may be reading it on their threads. The
            # fan-out set its fields before sharing it (see mark_frame);
            # check rather than write.
            assert frame.pict_type == picture, f"rung {self.rung.name}: frame shared without its keyframe mark"
        else:
            scaled.pts = frame.pts
            scaled.time_base = self.time_base
            # Decoded frames carry pict_type I; left as is, libx264 would
            # make every one of them an IDR.
            scaled.pict_type = picture
        self.idr_forced += boundary
        self.frames_encoded += 1
        return self._packets(scaled)

    def flush(self) -> list[Packet]:
        return self._packets(None)

    def _packets(self, frame: VideoFrame | None) -> list[Packet]:
        try:
            encoded = self.ctx.encode(frame)
        except av.FFmpegError as exc:
            raise EncoderError(f"{self.encoder_name} failed on rung {self.rung.name}: {exc}") from exc
        out = []
        for p in encoded:
            data = bytes(p)
            if self._annexb:
                try:
                    data = avc_packet_from_annexb(data)
                except CodecError as exc:
                    raise EncoderError(
                        f"{self.encoder_name} wrote malformed H.264 on rung {self.rung.name}: {exc}"
                    ) from exc
            if not data or p.pts is None:
                continue
            dts = p.dts if p.dts is not None else p.pts
            out.append(Packet(0, p.pts, dts, self.time_base, data, keyframe=p.is_keyframe, duration=p.duration or 0))
        return out
