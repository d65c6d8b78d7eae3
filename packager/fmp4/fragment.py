"""Movie fragments: ``moof`` (``mfhd``, then per track ``traf`` with
``tfhd``, ``tfdt`` and a version 1 ``trun``) followed by one ``mdat``
(ISO/IEC 14496-12 §8.8).

Every fragment is self-contained: ``tfhd`` sets default-base-is-moof, so the
``trun`` data offsets count from the fragment's own ``moof``, and ``tfdt``
gives the absolute decode time. A fragment can therefore be served alone
(an LL-HLS part) or concatenated with others (a full segment).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from engine.media import MediaKind, Packet, rescale
from packager.fmp4.boxes import box, box_header, full_box
from packager.fmp4.errors import Fmp4UsageError
from packager.fmp4.init import TrackSlot
from packager.fmp4.protection import TrafProtection

_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200
_TRUN_FLAGS = 0x000400
_TRUN_CTS = 0x000800

_VIDEO_ROW = struct.Struct(">IIIi")
_AUDIO_ROW = struct.Struct(">III")

#: sample_flags (§8.8.3.1): depends_on=2 (an I picture) and sync.
SYNC_SAMPLE_FLAGS = 0x02000000
#: depends_on=1 and sample_is_non_sync_sample.
NON_SYNC_SAMPLE_FLAGS = 0x01010000


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample in the track's timescale."""

    decode_time: int
    duration: int
    composition_offset: int
    flags: int
    data: bytes


def samples_for(slot: TrackSlot, packets: Sequence[Packet]) -> list[Sample]:
    """Turn one track's packets (in decode order) into samples.

    Timestamps are rescaled exactly to the track's timescale. A sample's
    duration is ``Packet.duration`` when set, measured as the distance
    between the rescaled start and end times so that rounding never
    accumulates; otherwise it is the distance to the next packet's decode
    time. The last packet of the call, without a duration of its own,
    repeats the previous sample's duration (or gets 0 when it is alone):
    callers that know better set ``Packet.duration``.
    """
    tb = Fraction(1, slot.timescale)
    video = slot.track.kind is MediaKind.VIDEO
    times: list[tuple[int, int, int | None]] = []
    # Time bases that divide the timescale (1/1000 into 90 kHz, a track's own
    # rate) rescale by one integer product; others go through rescale().
    source: Fraction | None = None
    factor = 0
    for p in packets:
        if p.time_base is not source:
            source = p.time_base
            scaled = source.numerator * slot.timescale
            factor = scaled // source.denominator if scaled % source.denominator == 0 else 0
        if factor:
            dts = p.dts * factor
            pts = p.pts * factor
        else:
            dts = rescale(p.dts, p.time_base, tb)
            pts = rescale(p.pts, p.time_base, tb)
        if dts < 0:
            raise Fmp4UsageError(
                f"track {slot.track.index}: decode time {p.dts} x {p.time_base} is negative; "
                "shift timestamps so that the first decode time is 0 or more"
            )
        if times and dts < times[-1][0]:
            raise Fmp4UsageError(f"track {slot.track.index}: decode times go backwards ({p.dts} after a later one)")
        if p.duration <= 0:
            end = None
        elif factor:
            end = (p.dts + p.duration) * factor
        else:
            end = rescale(p.dts + p.duration, p.time_base, tb)
        times.append((dts, pts, end))
    out = []
    previous = 0
    for i, (p, (dts, pts, end)) in enumerate(zip(packets, times, strict=True)):
        if end is not None:
            duration = end - dts
        elif i + 1 < len(times):
            duration = times[i + 1][0] - dts
        else:
            duration = previous
        previous = duration
        if video:
            flags = SYNC_SAMPLE_FLAGS if p.keyframe else NON_SYNC_SAMPLE_FLAGS
        else:
            flags = SYNC_SAMPLE_FLAGS
        offset = pts - dts
        if not -(1 << 31) <= offset < (1 << 31) or duration > 0xFFFFFFFF:
            raise Fmp4UsageError(f"track {slot.track.index}: timestamps out of range for a trun")
        out.append(Sample(dts, duration, offset, flags, p.data))
    return out


def _traf(
    slot: TrackSlot, samples: Sequence[Sample], data_offset: int,
    protection: TrafProtection | None = None, traf_offset: int = 0,
) -> bytes:
    video = slot.track.kind is MediaKind.VIDEO
    trun_flags = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS
    if video:
        trun_flags |= _TRUN_CTS
        row = _VIDEO_ROW.pack
        rows = b"".join([row(s.duration, len(s.data), s.flags, s.composition_offset) for s in samples])
    else:
        row = _AUDIO_ROW.pack
        rows = b"".join([row(s.duration, len(s.data), s.flags) for s in samples])
    head = (
        full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", slot.track_id))
        + full_box(b"tfdt", 1, 0, struct.pack(">Q", samples[0].decode_time))
        + full_box(b"trun", 1, trun_flags, struct.pack(">Ii", len(samples), data_offset), rows)
    )
    if protection is None:
        return box(b"traf", head)
    return box(b"traf", head, protection.boxes(traf_offset + 8 + len(head)))


def fragment(
    runs: Sequence[tuple[TrackSlot, Sequence[Sample]]],
    sequence_number: int,
    protections: Mapping[int, TrafProtection] | None = None,
    moof_boxes: Sequence[bytes] = (),
) -> bytes:
    """``moof`` + ``mdat`` for the given per-track sample runs (tracks with
    no samples are left out). The mdat holds each track's samples in turn.

    ``protections`` maps a track ID to the encryption boxes of its traf
    (the samples already hold the encrypted data); ``moof_boxes`` (``pssh``
    boxes of a new key period) go between ``mfhd`` and the first traf."""
    if not 0 <= sequence_number <= 0xFFFFFFFF:
        raise Fmp4UsageError(f"sequence number {sequence_number} does not fit 32 bits")
    runs = [(slot, samples) for slot, samples in runs if samples]
    if not runs:
        raise Fmp4UsageError("a fragment needs at least one sample")
    protections = protections or {}
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number)) + b"".join(moof_boxes)
    # No box size depends on the offsets, so measure the moof first.
    sizes = [len(_traf(slot, samples, 0, protections.get(slot.track_id))) for slot, samples in runs]
    offset = 8 + len(mfhd) + sum(sizes) + 8  # first byte of the mdat payload
    traf_offset = 8 + len(mfhd)
    trafs = []
    for (slot, samples), size in zip(runs, sizes, strict=True):
        if offset > 0x7FFFFFFF:
            raise Fmp4UsageError("fragment too large for 32-bit trun data offsets")
        trafs.append(_traf(slot, samples, offset, protections.get(slot.track_id), traf_offset))
        offset += sum(len(s.data) for s in samples)
        traf_offset += size
    # One copy of the sample data: the mdat is joined with the moof directly.
    datas = [s.data for _, samples in runs for s in samples]
    moof = box(b"moof", mfhd, *trafs)
    return b"".join([moof, box_header(b"mdat", sum(map(len, datas))), *datas])
