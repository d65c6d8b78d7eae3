"""Codec descriptions and bitstream helpers: pure functions on bytes.

Outputs use these to turn a :class:`~engine.media.Track`'s extradata into what
their formats need (picture size and codec strings for HLS, parameter sets and
ADTS headers for MPEG-TS, sample entries for fMP4); ingests and stages whose
sources speak Annex B (WebRTC publishers, encoders) use them to build the
engine's AVCC packets and ``avcC`` records. This package is the one home of
that bitstream code. Nothing here does I/O; malformed input raises
:class:`CodecError`.
"""

from engine.codecs.aac import AudioSpecificConfig, adts_header, parse_asc
from engine.codecs.av1 import Av1Config, parse_av1c
from engine.codecs.avc import AvcConfig, AvcSps, avc_packet_from_annexb, build_avcc, extradata_to_avcc, parse_avcc
from engine.codecs.avc import parse_sps as parse_avc_sps
from engine.codecs.describe import codec_string, describe_track, nal_length_size, parameter_sets
from engine.codecs.errors import CodecError
from engine.codecs.hevc import HevcConfig, HevcSps, parse_hvcc
from engine.codecs.hevc import parse_sps as parse_hevc_sps
from engine.codecs.nal import (
    annexb_to_avcc,
    avcc_to_annexb,
    is_disposable,
    is_random_access,
    iter_avcc,
    join_avcc,
    nal_unit_types,
    split_annexb,
)
from engine.codecs.opus import OpusHead, parse_opus_head

__all__ = [
    "AudioSpecificConfig",
    "Av1Config",
    "AvcConfig",
    "AvcSps",
    "CodecError",
    "HevcConfig",
    "HevcSps",
    "OpusHead",
    "adts_header",
    "annexb_to_avcc",
    "avc_packet_from_annexb",
    "avcc_to_annexb",
    "build_avcc",
    "codec_string",
    "describe_track",
    "extradata_to_avcc",
    "is_disposable",
    "is_random_access",
    "iter_avcc",
    "join_avcc",
    "nal_length_size",
    "nal_unit_types",
    "parameter_sets",
    "parse_asc",
    "parse_av1c",
    "parse_avc_sps",
    "parse_avcc",
    "parse_hevc_sps",
    "parse_hvcc",
    "parse_opus_head",
    "split_annexb",
]
