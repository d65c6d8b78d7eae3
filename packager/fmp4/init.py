"""The initialization segment: ``ftyp`` + ``moov`` with one ``trak`` per
track and an ``mvex`` that announces fragments (ISO/IEC 14496-12 §8, CMAF
ISO/IEC 23000-19 §7.3). Sample tables are empty: every sample lives in a
fragment.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.media import MediaKind, Track
from packager.fmp4.boxes import UNITY_MATRIX, box, full_box
from packager.fmp4.entries import sample_entry

#: ``ftyp`` brands: ISO BMFF v6 (CMAF's base) and the CMAF track brand.
INIT_MAJOR_BRAND = b"iso6"
INIT_COMPATIBLE_BRANDS = (b"iso6", b"cmfc", b"mp41")
_MOVIE_TIMESCALE = 1000
_LANGUAGE_UND = 0x55C4  # "und" packed as three 5-bit letters


@dataclass(frozen=True, slots=True)
class TrackSlot:
    """A track as the writer holds it: its MP4 track_ID and timescale."""

    track: Track
    track_id: int
    timescale: int


def ftyp(major: bytes = INIT_MAJOR_BRAND, compatible: Sequence[bytes] = INIT_COMPATIBLE_BRANDS) -> bytes:
    return box(b"ftyp", major, struct.pack(">I", 0), *compatible)


def init_segment(
    slots: Sequence[TrackSlot], entries: Mapping[int, bytes] | None = None, moov_boxes: Sequence[bytes] = ()
) -> bytes:
    """``ftyp`` + ``moov`` for ``slots``. ``entries`` replaces the sample
    entry of the track with that ID (a protected ``encv``/``enca``);
    ``moov_boxes`` (``pssh``) end the ``moov``."""
    entries = entries or {}
    next_id = max(s.track_id for s in slots) + 1
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, _MOVIE_TIMESCALE, 0),
        struct.pack(">IH10x", 0x00010000, 0x0100),
        UNITY_MATRIX,
        bytes(24),
        struct.pack(">I", next_id),
    )
    traks = [_trak(s, entries.get(s.track_id)) for s in slots]
    trexes = [full_box(b"trex", 0, 0, struct.pack(">IIIII", s.track_id, 1, 0, 0, 0)) for s in slots]
    return ftyp() + box(b"moov", mvhd, *traks, box(b"mvex", *trexes), *moov_boxes)


def _trak(slot: TrackSlot, entry: bytes | None = None) -> bytes:
    track = slot.track
    video = track.kind is MediaKind.VIDEO
    width = (track.width or 0) << 16 if video else 0
    height = (track.height or 0) << 16 if video else 0
    tkhd = full_box(
        b"tkhd", 0, 0x000003,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, slot.track_id, 0, 0),
        struct.pack(">8xhhH2x", 0, 0, 0 if video else 0x0100),
        UNITY_MATRIX,
        struct.pack(">II", width, height),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, slot.timescale, 0, _LANGUAGE_UND, 0))
    handler, name = (b"vide", b"VideoHandler\x00") if video else (b"soun", b"SoundHandler\x00")
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler), name)
    media_header = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry if entry is not None else sample_entry(track)),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))
