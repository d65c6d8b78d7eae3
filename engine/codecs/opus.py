"""Opus: the ``OpusHead`` identification header some ingests carry as
extradata, and the ``dOps`` box body that fMP4 needs.

References: RFC 7845 §5.1 (OpusHead) and "Encapsulation of Opus in ISO Base
Media File Format" §4.3.2 (dOps).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from engine.codecs.errors import CodecError

#: Opus always decodes at 48 kHz; MP4 and MPEG-TS time it at that rate.
OPUS_RATE = 48000


@dataclass(frozen=True, slots=True)
class OpusHead:
    channels: int
    pre_skip: int
    input_sample_rate: int
    output_gain: int
    mapping_family: int
    stream_count: int = 1
    coupled_count: int = 0
    mapping: bytes = b""


def parse_opus_head(data: bytes) -> OpusHead:
    """Parse an ``OpusHead`` header (little-endian, magic ``OpusHead``)."""
    if len(data) < 19 or data[:8] != b"OpusHead":
        raise CodecError("not an OpusHead header")
    version, channels, pre_skip, rate, gain, family = struct.unpack_from("<BBHIhB", data, 8)
    if version >> 4 != 0:
        raise CodecError(f"OpusHead version {version} is not supported")
    if channels == 0:
        raise CodecError("OpusHead declares 0 channels")
    if family == 0:
        if channels > 2:
            raise CodecError(f"OpusHead mapping family 0 with {channels} channels")
        return OpusHead(channels, pre_skip, rate, gain, family, 1, channels - 1)
    if len(data) < 21 + channels:
        raise CodecError("OpusHead channel mapping table truncated")
    streams, coupled = data[19], data[20]
    if streams == 0 or coupled > streams:
        raise CodecError(f"OpusHead stream counts {streams}/{coupled} are invalid")
    return OpusHead(channels, pre_skip, rate, gain, family, streams, coupled, bytes(data[21 : 21 + channels]))


def default_opus_head(channels: int) -> OpusHead:
    """The header to assume when an ingest gave no extradata (WebRTC does
    not): mono or stereo, mapping family 0, no pre-skip."""
    if channels not in (1, 2):
        raise CodecError(f"Opus without a header must be mono or stereo, not {channels} channels")
    return OpusHead(channels, 0, OPUS_RATE, 0, 0, 1, channels - 1)


def dops_payload(head: OpusHead) -> bytes:
    """The ``dOps`` box body (big-endian, version 0)."""
    body = struct.pack(">BBHIhB", 0, head.channels, head.pre_skip, head.input_sample_rate, head.output_gain,
                       head.mapping_family)
    if head.mapping_family != 0:
        body += bytes((head.stream_count, head.coupled_count)) + head.mapping
    return body
