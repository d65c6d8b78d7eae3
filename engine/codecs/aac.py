"""AAC: the AudioSpecificConfig and the ADTS header that MPEG-TS needs.

References: ISO/IEC 14496-3 §1.6.2.1 (AudioSpecificConfig, including the
explicit SBR/PS signalling of HE-AAC) and §1.A.2.2 (ADTS).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.codecs.bits import BitReader
from engine.codecs.errors import CodecError

SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
#: channelConfiguration -> channel count (0 means a program config element).
_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}

AOT_LC = 2
AOT_SBR = 5
AOT_PS = 29
ADTS_HEADER_SIZE = 7
MAX_ADTS_FRAME = (1 << 13) - 1


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    """``object_type`` is the first (signalled) audio object type: 5 or 29 for
    HE-AAC with explicit signalling, as HLS ``CODECS`` wants it.
    ``core_object_type`` and ``sample_rate`` describe the AAC core;
    ``output_sample_rate`` is the rate after SBR. ``channels`` is ``None``
    when the config defers to a program config element."""

    object_type: int
    core_object_type: int
    sample_rate_index: int | None
    sample_rate: int
    output_sample_rate: int
    channel_config: int
    channels: int | None
    sbr: bool
    ps: bool


def _object_type(r: BitReader) -> int:
    aot = r.u(5)
    return 32 + r.u(6) if aot == 31 else aot


def _sample_rate(r: BitReader) -> tuple[int | None, int]:
    index = r.u(4)
    if index == 0x0F:
        rate = r.u(24)
        if rate == 0:
            raise CodecError("AudioSpecificConfig has an explicit sample rate of 0")
        return None, rate
    if index >= len(SAMPLE_RATES):
        raise CodecError(f"AudioSpecificConfig sampling frequency index {index} is reserved")
    return index, SAMPLE_RATES[index]


def parse_asc(data: bytes) -> AudioSpecificConfig:
    """Parse an AudioSpecificConfig (the AAC track's extradata)."""
    if len(data) < 2:
        raise CodecError(f"AudioSpecificConfig too short ({len(data)} bytes)")
    r = BitReader(data)
    aot = _object_type(r)
    if aot == 0:
        raise CodecError("AudioSpecificConfig audio object type 0 is invalid")
    index, rate = _sample_rate(r)
    channel_config = r.u(4)
    core = aot
    output_rate = rate
    sbr = ps = False
    if aot in (AOT_SBR, AOT_PS):
        sbr = True
        ps = aot == AOT_PS
        _, output_rate = _sample_rate(r)
        core = _object_type(r)
        if core == 22:
            r.skip(4)  # extensionChannelConfiguration (ER BSAC)
    channels = _CHANNELS.get(channel_config)
    if ps and channel_config == 1:
        channels = 2  # parametric stereo upmixes mono to stereo
    return AudioSpecificConfig(aot, core, index, rate, output_rate, channel_config, channels, sbr, ps)


def adts_header(asc: bytes, payload_len: int) -> bytes:
    """The 7-byte ADTS header (no CRC) for one raw AAC access unit of
    ``payload_len`` bytes. HE-AAC is written with implicit signalling (the
    AAC-LC core in the header), which is what ADTS can express."""
    config = parse_asc(asc)
    profile = config.core_object_type - 1
    if not 0 <= profile <= 3:
        raise CodecError(f"audio object type {config.core_object_type} cannot be carried in ADTS")
    if config.sample_rate_index is None:
        try:
            index = SAMPLE_RATES.index(config.sample_rate)
        except ValueError:
            raise CodecError(f"sample rate {config.sample_rate} has no ADTS index") from None
    else:
        index = config.sample_rate_index
    if config.channel_config > 7:
        raise CodecError(f"channel configuration {config.channel_config} cannot be carried in ADTS")
    length = payload_len + ADTS_HEADER_SIZE
    if payload_len < 0 or length > MAX_ADTS_FRAME:
        raise CodecError(f"AAC frame of {payload_len} bytes does not fit an ADTS frame")
    fullness = 0x7FF  # variable bit rate
    bits = (
        (0xFFF << 44)
        | (1 << 40)  # MPEG-4, layer 0, protection_absent
        | (profile << 38)
        | (index << 34)
        | (config.channel_config << 30)
        | (length << 13)
        | (fullness << 2)
    )
    return bits.to_bytes(ADTS_HEADER_SIZE, "big")


def aac_codec_string(config: AudioSpecificConfig) -> str:
    """RFC 6381 ``mp4a.40.<object type>``."""
    return f"mp4a.40.{config.object_type}"
