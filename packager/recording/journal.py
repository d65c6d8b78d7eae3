"""The recording journal: what one recording holds, one line per event,
appended and fsynced locally as each segment is spooled.

A line is ``CRC32(hex, 8) SPACE JSON LF``. The playlists and the manifest of
a recording are rebuilt from its journal alone, so a crash at any moment
(``kill -9``, a power cut) loses nothing that was listed: every line that
was synced names a segment that was spooled (the spool keeps it until the
backend has it).

Records (``t`` is the type):

- ``start``: ``id``, ``stream``, ``at`` (wall clock), ``format`` (``fmp4`` or ``ts``); first line.
- ``init``: ``v`` (variant), ``file``, ``codecs``, ``res`` (``[w, h]`` or null).
- ``seg``: ``v``, ``file``, ``dur`` (exact, ``"num/den"``), ``disc`` (a discontinuity before it), ``size``.
- ``stop``: ``reason`` (the recording ended early: a limit, a full disk).
- ``close``: ``at``, ``interrupted`` (closed at start-up after a crash).
- ``reported``: the control plane has the record (``recording.ready`` sent).

Parsing is sans-I/O and total: a truncated or garbled line ends the
readable part (everything before it is kept; see ``damaged``); it never
raises for bad bytes.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from packager.recording.errors import JournalError, RecordingIdError
from packager.recording.ids import check_recording_id

MAX_LINE = 64 * 1024
"""Longest journal line accepted (a line is a few hundred bytes)."""


@dataclass(frozen=True, slots=True)
class SegmentLog:
    file: str
    duration: Fraction
    discontinuity: bool
    init: str | None
    """The init segment in force (``EXT-X-MAP``); ``None`` for TS."""
    size: int


@dataclass(slots=True)
class VariantLog:
    name: str
    codecs: tuple[str, ...] = ()
    resolution: tuple[int, int] | None = None
    init: str | None = None
    inits: list[str] = field(default_factory=list)
    segments: list[SegmentLog] = field(default_factory=list)

    @property
    def duration(self) -> Fraction:
        return sum((s.duration for s in self.segments), Fraction(0))

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self.segments)


@dataclass(slots=True)
class JournalState:
    """What a journal says about its recording."""

    recording_id: str
    stream: str
    started_at: float
    segment_format: str = "fmp4"
    variants: dict[str, VariantLog] = field(default_factory=dict)
    stop_reason: str | None = None
    closed_at: float | None = None
    interrupted: bool = False
    reported: bool = False
    valid_bytes: int = 0
    """Length of the readable part of the journal (what follows is dropped
    before anything is appended)."""
    damaged: bool = False
    """A line could not be read (the journal was cut or garbled): what
    follows it is ignored."""

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    @property
    def duration(self) -> Fraction:
        """The longest variant's duration (variants may start apart)."""
        return max((v.duration for v in self.variants.values()), default=Fraction(0))

    @property
    def segments(self) -> int:
        return sum(len(v.segments) for v in self.variants.values())

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.variants.values())

    def apply(self, record: dict[str, Any]) -> None:
        """Add one record (after ``start``); JournalError if it makes no sense."""
        kind = record.get("t")
        if kind == "init":
            variant = self.variants.setdefault(_name(record.get("v")), VariantLog(_name(record.get("v"))))
            file = _name(record.get("file"))
            codecs = record.get("codecs", [])
            if not isinstance(codecs, list) or not all(isinstance(c, str) and len(c) < 100 for c in codecs):
                raise JournalError("bad codecs")
            res = record.get("res")
            variant.codecs = tuple(codecs)
            if res is not None:
                if not (isinstance(res, list) and len(res) == 2 and all(type(n) is int and 0 < n < 65536
                                                                          for n in res)):
                    raise JournalError("bad resolution")
                variant.resolution = (res[0], res[1])
            variant.init = file
            variant.inits.append(file)
        elif kind == "seg":
            variant = self.variants.setdefault(_name(record.get("v")), VariantLog(_name(record.get("v"))))
            size = record.get("size")
            disc = record.get("disc")
            if type(size) is not int or size < 0 or not isinstance(disc, bool):
                raise JournalError("bad segment record")
            duration = _fraction(record.get("dur"))
            variant.segments.append(SegmentLog(_name(record.get("file")), duration, disc, variant.init, size))
        elif kind == "stop":
            reason = record.get("reason")
            if not isinstance(reason, str) or len(reason) > 64:
                raise JournalError("bad stop record")
            self.stop_reason = reason
        elif kind == "close":
            at, interrupted = record.get("at"), record.get("interrupted")
            if not isinstance(at, (int, float)) or isinstance(at, bool) or not isinstance(interrupted, bool):
                raise JournalError("bad close record")
            self.closed_at = float(at)
            self.interrupted = interrupted
        elif kind == "reported":
            self.reported = True
        else:
            raise JournalError(f"unknown record type {kind!r}")


def _name(value: object) -> str:
    """A variant or file name: one storage key segment."""
    if (not isinstance(value, str) or not 0 < len(value) <= 128 or value.startswith(".")
            or not all(c.isascii() and (c.isalnum() or c in "_-.") for c in value)):
        raise JournalError(f"bad name {value!r}")
    return value


def _fraction(value: object) -> Fraction:
    if not isinstance(value, str) or len(value) > 40:
        raise JournalError("bad duration")
    try:
        result = Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise JournalError("bad duration") from None
    if not 0 < result < 3600:
        raise JournalError("bad duration")
    return result


def encode_line(record: dict[str, Any]) -> bytes:
    """One journal line for ``record`` (a JSON object)."""
    body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_line(line: bytes) -> dict[str, Any]:
    """The record of one line (without its LF); JournalError when the line
    is cut, garbled or not an object."""
    if len(line) > MAX_LINE or len(line) < 10 or line[8:9] != b" ":
        raise JournalError("malformed journal line")
    try:
        crc = int(line[:8], 16)
    except ValueError:
        raise JournalError("malformed checksum") from None
    body = line[9:]
    if zlib.crc32(body) != crc:
        raise JournalError("checksum mismatch")
    try:
        record = json.loads(body)
    except (ValueError, RecursionError):
        raise JournalError("not JSON") from None
    if not isinstance(record, dict):
        raise JournalError("not an object")
    return record


def parse_journal(data: bytes) -> JournalState | None:
    """The state ``data`` describes, read up to its first bad line; ``None``
    when not even the ``start`` line can be read (nothing was recorded)."""
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    if not complete:
        return None
    try:
        first = decode_line(complete[0])
        if first.get("t") != "start":
            return None
        state = JournalState(
            recording_id=check_recording_id(first.get("id")),
            stream=_name(first.get("stream")),
            started_at=_number(first.get("at")),
            segment_format="ts" if first.get("format") == "ts" else "fmp4",
        )
    except (JournalError, RecordingIdError):
        return None
    state.valid_bytes = len(complete[0]) + 1
    for line in complete[1:]:
        try:
            state.apply(decode_line(line))
        except JournalError:
            state.damaged = True
            return state
        state.valid_bytes += len(line) + 1
    if tail:
        state.damaged = True
    return state


def _number(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise JournalError("bad number")
    return float(value)


def start_record(recording_id: str, stream: str, at: float, segment_format: str) -> dict[str, Any]:
    return {"t": "start", "id": recording_id, "stream": stream, "at": at, "format": segment_format}


def init_record(variant: str, file: str, codecs: list[str], resolution: tuple[int, int] | None) -> dict[str, Any]:
    return {"t": "init", "v": variant, "file": file, "codecs": codecs,
            "res": list(resolution) if resolution else None}


def segment_record(variant: str, file: str, duration: Fraction, discontinuity: bool, size: int) -> dict[str, Any]:
    return {"t": "seg", "v": variant, "file": file, "dur": str(duration), "disc": discontinuity, "size": size}
