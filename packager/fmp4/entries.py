"""Sample entries for the ``stsd`` box: one per codec the engine packages.

The decoder configuration boxes carry the track's extradata as it is
(``avcC``, ``hvcC``, ``av1C``) after checking that it parses, so a broken
record fails here and not in a viewer's decoder. AAC gets an ``esds`` built
from the AudioSpecificConfig, Opus a ``dOps`` built from its OpusHead (or the
mono/stereo default when the ingest had none).
"""

from __future__ import annotations

import struct

from engine.codecs import CodecError, aac, av1, avc, hevc, opus
from engine.media import Codec, Track
from packager.fmp4.boxes import box, full_box
from packager.fmp4.errors import Fmp4TrackError

_OBJECT_TYPE_AAC = 0x40  # ISO/IEC 14496-3 Audio
_STREAM_TYPE_AUDIO = 0x05


def sample_entry(track: Track) -> bytes:
    """The sample entry box for ``track`` (already filled by
    :func:`engine.codecs.describe_track`)."""
    try:
        if track.codec is Codec.H264:
            avc.parse_avcc(track.extradata)
            return _visual(b"avc1", track, box(b"avcC", track.extradata))
        if track.codec is Codec.HEVC:
            hevc.parse_hvcc(track.extradata)
            return _visual(b"hvc1", track, box(b"hvcC", track.extradata))
        if track.codec is Codec.AV1:
            av1.parse_av1c(track.extradata)
            return _visual(b"av01", track, box(b"av1C", track.extradata))
        if track.codec is Codec.AAC:
            config = aac.parse_asc(track.extradata)
            channels = config.channels or track.channels or 2
            rate = track.sample_rate or config.output_sample_rate
            return _audio(b"mp4a", channels, rate, esds(track))
        if track.codec is Codec.OPUS:
            head = opus.parse_opus_head(track.extradata) if track.extradata else None
            if head is None:
                head = opus.default_opus_head(track.channels or 2)
            return _audio(b"Opus", head.channels, opus.OPUS_RATE, box(b"dOps", opus.dops_payload(head)))
    except CodecError as exc:
        raise Fmp4TrackError(f"track {track.index} ({track.codec.value}): {exc}") from exc
    raise Fmp4TrackError(f"track {track.index}: {track.codec.value} is not packaged in fMP4")


def _visual(kind: bytes, track: Track, config: bytes) -> bytes:
    if not track.width or not track.height:
        raise Fmp4TrackError(f"track {track.index}: picture size unknown (no SPS in the record)")
    if track.width > 0xFFFF or track.height > 0xFFFF:
        raise Fmp4TrackError(f"track {track.index}: picture size {track.width}x{track.height} too large")
    fields = struct.pack(
        ">6xH2x2x12xHHIIIH32sHh",
        1,  # data_reference_index
        track.width,
        track.height,
        0x00480000,  # 72 dpi
        0x00480000,
        0,
        1,  # frame_count
        b"",  # compressorname
        0x0018,  # depth
        -1,
    )
    return box(kind, fields, config)


def _audio(kind: bytes, channels: int, rate: int, config: bytes) -> bytes:
    # The 16.16 rate field cannot hold rates above 65535; 0 then tells readers
    # to use the media timescale (ISO/IEC 14496-12 §12.2.3).
    rate_field = rate << 16 if rate <= 0xFFFF else 0
    fields = struct.pack(">6xH8xHH4xI", 1, channels, 16, rate_field)
    return box(kind, fields, config)


def _descriptor(tag: int, payload: bytes) -> bytes:
    """An MPEG-4 descriptor with its expandable size field (§8.3.3 of
    ISO/IEC 14496-1)."""
    size = len(payload)
    length = bytearray([size & 0x7F])
    size >>= 7
    while size:
        length.insert(0, 0x80 | (size & 0x7F))
        size >>= 7
    return bytes([tag]) + bytes(length) + payload


def esds(track: Track) -> bytes:
    """The ``esds`` box: ES_Descriptor > DecoderConfigDescriptor >
    DecoderSpecificInfo (the ASC), plus the mandatory SLConfigDescriptor."""
    bitrate = track.bitrate or 0
    decoder_config = _descriptor(
        0x04,
        struct.pack(">BBBHII", _OBJECT_TYPE_AAC, (_STREAM_TYPE_AUDIO << 2) | 1, 0, 0, bitrate, bitrate)
        + _descriptor(0x05, track.extradata),
    )
    es = _descriptor(0x03, struct.pack(">HB", 0, 0) + decoder_config + _descriptor(0x06, b"\x02"))
    return full_box(b"esds", 0, 0, es)
