"""Track-level answers built from the track's extradata: the fields HLS
needs (size, frame rate, sample rate, channels), the RFC 6381 codec string,
and the parameter sets an Annex B output repeats before keyframes.
"""

from __future__ import annotations

from typing import Any

from engine.codecs import aac, av1, avc, hevc, opus
from engine.codecs.errors import CodecError
from engine.media import Codec, Track


def describe_track(track: Track) -> Track:
    """Return a copy of ``track`` with width/height/frame_rate (video) or
    sample_rate/channels (audio) filled from its extradata.

    Fields the record cannot tell keep their existing values, and an empty
    extradata leaves the track unchanged. A malformed record raises
    :class:`CodecError`: outputs cannot package a track they cannot describe.
    """
    changes: dict[str, Any] = {}
    data = track.extradata
    if track.codec is Codec.OPUS:
        head = opus.parse_opus_head(data) if data else None
        changes["sample_rate"] = opus.OPUS_RATE
        if head is not None:
            changes["channels"] = head.channels
    elif not data:
        return track
    elif track.codec is Codec.H264:
        config = avc.parse_avcc(data)
        if config.sps:
            sps = avc.parse_sps(config.sps[0])
            changes.update(width=sps.width, height=sps.height, frame_rate=sps.frame_rate)
    elif track.codec is Codec.HEVC:
        hconfig = hevc.parse_hvcc(data)
        sps_units = hconfig.units(hevc.NAL_SPS)
        if sps_units:
            hsps = hevc.parse_sps(sps_units[0])
            changes.update(width=hsps.width, height=hsps.height, frame_rate=hsps.frame_rate)
        vps_units = hconfig.units(hevc.NAL_VPS)
        if changes.get("frame_rate") is None and vps_units:
            changes["frame_rate"] = hevc.parse_vps_frame_rate(vps_units[0])
        if changes.get("frame_rate") is None:
            changes["frame_rate"] = hconfig.frame_rate
    elif track.codec is Codec.AV1:
        header = av1.sequence_header(av1.parse_av1c(data))
        if header is not None:
            changes.update(width=header.width, height=header.height, frame_rate=header.frame_rate)
    elif track.codec is Codec.AAC:
        config_a = aac.parse_asc(data)
        changes.update(sample_rate=config_a.output_sample_rate, channels=config_a.channels)
    changes = {k: v for k, v in changes.items() if v is not None}
    return track.with_changes(**changes) if changes else track


def codec_string(track: Track) -> str:
    """The RFC 6381 string for HLS ``CODECS`` (and MSE ``isTypeSupported``).

    Raises :class:`CodecError` when the track has no record to build it from
    or the codec has no string in the engine's outputs.
    """
    if track.codec is Codec.OPUS:
        return "opus"
    if not track.extradata:
        raise CodecError(f"{track.codec.value} track {track.index} has no extradata to build a codec string from")
    if track.codec is Codec.H264:
        return avc.avc_codec_string(avc.parse_avcc(track.extradata))
    if track.codec is Codec.HEVC:
        return hevc.hevc_codec_string(hevc.parse_hvcc(track.extradata))
    if track.codec is Codec.AV1:
        return av1.av1_codec_string(av1.parse_av1c(track.extradata))
    if track.codec is Codec.AAC:
        return aac.aac_codec_string(aac.parse_asc(track.extradata))
    raise CodecError(f"no codec string for {track.codec.value}")


def nal_length_size(track: Track) -> int:
    """The NAL length field size of an H.264/HEVC track's packets (4 when the
    track has no record yet, the engine's convention)."""
    if not track.extradata:
        return 4
    if track.codec is Codec.H264:
        return avc.parse_avcc(track.extradata).nal_length_size
    if track.codec is Codec.HEVC:
        return hevc.parse_hvcc(track.extradata).nal_length_size
    raise CodecError(f"{track.codec.value} has no NAL units")


def parameter_sets(track: Track) -> list[bytes]:
    """The NAL units of the track's record in decoding order: SPS then PPS
    for H.264; VPS, SPS, PPS (then any SEI kept in the record) for HEVC.
    Other codecs, and tracks without a record, have none."""
    if not track.extradata:
        return []
    if track.codec is Codec.H264:
        config = avc.parse_avcc(track.extradata)
        return [*config.sps, *config.pps]
    if track.codec is Codec.HEVC:
        hconfig = hevc.parse_hvcc(track.extradata)
        order = [hevc.NAL_VPS, hevc.NAL_SPS, hevc.NAL_PPS]
        units = [u for t in order for u in hconfig.units(t)]
        return units + [u for t, us in hconfig.arrays if t not in order for u in us]
    return []
