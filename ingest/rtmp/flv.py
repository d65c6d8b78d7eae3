"""FLV audio and video tag bodies, as carried in RTMP messages 8 and 9.

Both the legacy layout (a codec id nibble: AVC = 7, AAC = 10) and enhanced
RTMP (the ExHeader bit and a FourCC: ``avc1``, ``hvc1``, ``av01``, ``vp09``
for video; ``mp4a``, ``Opus`` for audio) are understood. Each body becomes a
:class:`MediaTag` whose role says whether it carries a decoder configuration,
a coded frame or an end-of-sequence marker. Bodies that carry nothing for the
media model (command frames, HDR metadata) parse to ``None``; codecs the
engine does not carry raise :class:`RtmpUnsupportedCodecError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from engine.media import Codec
from ingest.rtmp.errors import RtmpProtocolError, RtmpUnsupportedCodecError


class TagRole(enum.Enum):
    CONFIG = "config"  # sequence header: avcC / hvcC / av1C / vpcC / AudioSpecificConfig / OpusHead
    FRAME = "frame"  # one coded access unit
    END = "end"  # end of sequence


@dataclass(frozen=True, slots=True)
class MediaTag:
    """One parsed FLV tag body. ``cts`` is the composition time offset in
    milliseconds (pts - dts), signed."""

    codec: Codec
    role: TagRole
    data: bytes
    keyframe: bool = False
    cts: int = 0


# Legacy video codec ids (FLV spec E.4.3.1).
_LEGACY_VIDEO = {7: Codec.H264, 12: Codec.HEVC}  # 12 is the widespread unofficial HEVC id
_LEGACY_VIDEO_NAMES = {1: "JPEG", 2: "Sorenson H.263", 3: "Screen video", 4: "On2 VP6", 5: "On2 VP6 with alpha",
                       6: "Screen video v2"}
# Legacy sound formats (FLV spec E.4.2.1).
_LEGACY_AUDIO_NAMES = {0: "linear PCM", 1: "ADPCM", 2: "MP3", 3: "linear PCM little endian", 4: "Nellymoser 16 kHz",
                       5: "Nellymoser 8 kHz", 6: "Nellymoser", 7: "G.711 A-law", 8: "G.711 mu-law", 11: "Speex",
                       14: "MP3 8 kHz", 15: "device-specific sound"}
AAC_SOUND_FORMAT = 10
EX_AUDIO_SOUND_FORMAT = 9

_VIDEO_FOURCC = {b"avc1": Codec.H264, b"hvc1": Codec.HEVC, b"av01": Codec.AV1, b"vp09": Codec.VP9}
_AUDIO_FOURCC = {b"mp4a": Codec.AAC, b"Opus": Codec.OPUS}

# Enhanced RTMP packet types.
_SEQUENCE_START = 0
_CODED_FRAMES = 1
_SEQUENCE_END = 2
_CODED_FRAMES_X = 3
_METADATA = 4
_MPEG2TS_SEQUENCE_START = 5
_MULTITRACK = 6
_MODEX = 7
_AUDIO_MULTICHANNEL_CONFIG = 4
_AUDIO_MULTITRACK = 5

_FRAME_KEY = 1
_FRAME_GENERATED_KEY = 4
_FRAME_COMMAND = 5


def _si24(data: bytes, pos: int) -> int:
    value = int.from_bytes(data[pos : pos + 3], "big")
    return value - (1 << 24) if value & 0x800000 else value


def _need(body: bytes, n: int, what: str) -> None:
    if len(body) < n:
        raise RtmpProtocolError(f"{what} tag body of {len(body)} bytes is truncated")


def parse_video(body: bytes) -> MediaTag | None:
    """Parse a video message body."""
    if not body:
        return None
    b0 = body[0]
    if b0 & 0x80:
        return _parse_ex_video(body)
    frame_type = b0 >> 4
    codec_id = b0 & 0x0F
    if frame_type == _FRAME_COMMAND:
        return None
    codec = _LEGACY_VIDEO.get(codec_id)
    if codec is None:
        name = _LEGACY_VIDEO_NAMES.get(codec_id, f"codec id {codec_id}")
        raise RtmpUnsupportedCodecError(f"video codec {name} is not supported (publish H.264, HEVC or AV1)")
    _need(body, 5, "AVC video")
    packet_type = body[1]
    keyframe = frame_type in (_FRAME_KEY, _FRAME_GENERATED_KEY)
    if packet_type == 0:
        return MediaTag(codec, TagRole.CONFIG, bytes(body[5:]), keyframe)
    if packet_type == 1:
        return MediaTag(codec, TagRole.FRAME, bytes(body[5:]), keyframe, _si24(body, 2))
    if packet_type == 2:
        return MediaTag(codec, TagRole.END, b"", keyframe)
    raise RtmpProtocolError(f"unknown AVC packet type {packet_type}")


def _parse_ex_video(body: bytes) -> MediaTag | None:
    b0 = body[0]
    frame_type = (b0 >> 4) & 0x07
    packet_type = b0 & 0x0F
    if frame_type == _FRAME_COMMAND and packet_type != _METADATA:
        return None
    if packet_type in (_MULTITRACK, _MODEX):
        raise RtmpUnsupportedCodecError("enhanced RTMP multitrack and ModEx video are not supported")
    _need(body, 5, "enhanced video")
    fourcc = bytes(body[1:5])
    codec = _VIDEO_FOURCC.get(fourcc)
    if codec is None:
        raise RtmpUnsupportedCodecError(f"video FourCC {fourcc!r} is not supported")
    keyframe = frame_type in (_FRAME_KEY, _FRAME_GENERATED_KEY)
    if packet_type == _SEQUENCE_START:
        return MediaTag(codec, TagRole.CONFIG, bytes(body[5:]), keyframe)
    if packet_type == _CODED_FRAMES:
        if codec in (Codec.H264, Codec.HEVC):
            _need(body, 8, "enhanced video")
            return MediaTag(codec, TagRole.FRAME, bytes(body[8:]), keyframe, _si24(body, 5))
        return MediaTag(codec, TagRole.FRAME, bytes(body[5:]), keyframe)
    if packet_type == _CODED_FRAMES_X:
        return MediaTag(codec, TagRole.FRAME, bytes(body[5:]), keyframe)
    if packet_type == _SEQUENCE_END:
        return MediaTag(codec, TagRole.END, b"", keyframe)
    if packet_type == _METADATA:
        return None  # colour/HDR information in AMF; the bitstream carries what decoders need
    if packet_type == _MPEG2TS_SEQUENCE_START:
        raise RtmpUnsupportedCodecError("AV1 with an MPEG-2 TS sequence start is not supported (send av1C)")
    raise RtmpProtocolError(f"unknown enhanced video packet type {packet_type}")


def parse_audio(body: bytes) -> MediaTag | None:
    """Parse an audio message body."""
    if not body:
        return None
    sound_format = body[0] >> 4
    if sound_format == EX_AUDIO_SOUND_FORMAT:
        return _parse_ex_audio(body)
    if sound_format != AAC_SOUND_FORMAT:
        name = _LEGACY_AUDIO_NAMES.get(sound_format, f"sound format {sound_format}")
        raise RtmpUnsupportedCodecError(f"audio codec {name} is not supported (publish AAC or Opus)")
    _need(body, 2, "AAC audio")
    packet_type = body[1]
    if packet_type == 0:
        return MediaTag(Codec.AAC, TagRole.CONFIG, bytes(body[2:]), True)
    if packet_type == 1:
        return MediaTag(Codec.AAC, TagRole.FRAME, bytes(body[2:]), True)
    raise RtmpProtocolError(f"unknown AAC packet type {packet_type}")


def _parse_ex_audio(body: bytes) -> MediaTag | None:
    packet_type = body[0] & 0x0F
    if packet_type in (_AUDIO_MULTITRACK, _MODEX):
        raise RtmpUnsupportedCodecError("enhanced RTMP multitrack and ModEx audio are not supported")
    _need(body, 5, "enhanced audio")
    fourcc = bytes(body[1:5])
    codec = _AUDIO_FOURCC.get(fourcc)
    if codec is None:
        raise RtmpUnsupportedCodecError(f"audio FourCC {fourcc!r} is not supported")
    if packet_type == _SEQUENCE_START:
        return MediaTag(codec, TagRole.CONFIG, bytes(body[5:]), True)
    if packet_type == _CODED_FRAMES:
        return MediaTag(codec, TagRole.FRAME, bytes(body[5:]), True)
    if packet_type == _SEQUENCE_END:
        return MediaTag(codec, TagRole.END, b"", True)
    if packet_type == _AUDIO_MULTICHANNEL_CONFIG:
        return None  # channel layout; the codec configuration carries what decoders need
    raise RtmpProtocolError(f"unknown enhanced audio packet type {packet_type}")


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def aac_rate_and_channels(asc: bytes) -> tuple[int | None, int | None]:
    """Sampling rate and channel count from the first fields of an
    AudioSpecificConfig (ISO 14496-3 1.6.2.1), or ``None`` where absent.

    Only the fixed leading fields are read; a full parse (SBR, PS, program
    config elements) is left to the engine's codec description."""
    if len(asc) < 2:
        return None, None
    bits = int.from_bytes(asc[: min(len(asc), 6)], "big")
    nbits = 8 * min(len(asc), 6)
    pos = nbits

    def read(n: int) -> int | None:
        nonlocal pos
        if pos < n:
            return None
        pos -= n
        return (bits >> pos) & ((1 << n) - 1)

    object_type = read(5)
    if object_type == 31:
        read(6)
    index = read(4)
    if index is None:
        return None, None
    rate = read(24) if index == 15 else (_AAC_RATES[index] if index < len(_AAC_RATES) else None)
    channel_config = read(4)
    channels = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8}.get(channel_config or 0)
    return rate or None, channels
