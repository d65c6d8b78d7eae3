"""AMF0 encoding and decoding (the value format of RTMP commands and metadata).

Python values map to AMF0 markers as follows, both ways:

=====================  =========================================
Python                 AMF0
=====================  =========================================
``float`` / ``int``    number (0x00); decoding always gives float
``bool``               boolean (0x01)
``str``                string (0x02), long string (0x0C) past 65535 bytes
``dict``               object (0x03) with string keys
:class:`EcmaArray`     ECMA array (0x08)
``list``               strict array (0x0A)
``None``               null (0x05)
:data:`UNDEFINED`      undefined (0x06)
:class:`AmfDate`       date (0x0B)
=====================  =========================================

Decoding is bounded by an :class:`AmfLimits` (nesting depth and total number
of values) so that a hostile message cannot exhaust the stack or memory.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.rtmp.errors import RtmpLimitError, RtmpProtocolError, RtmpUsageError

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C


class _Undefined(enum.Enum):
    UNDEFINED = "undefined"

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined.UNDEFINED
"""The AMF0 ``undefined`` value (distinct from ``None``, which is ``null``)."""


class EcmaArray(dict[str, "AmfValue"]):
    """An AMF0 ECMA array: an associative array, as ``onMetaData`` uses."""


@dataclass(frozen=True, slots=True)
class AmfDate:
    """An AMF0 date: milliseconds since the Unix epoch and a time zone offset
    in minutes (which the format carries but says to ignore)."""

    ms: float
    tz: int = 0


AmfValue = float | int | bool | str | None | _Undefined | AmfDate | dict[str, "AmfValue"] | list["AmfValue"]


@dataclass(frozen=True, slots=True)
class AmfLimits:
    """Bounds for decoding one AMF0 payload."""

    max_depth: int = 16
    max_items: int = 4096


_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE_TZ = struct.Struct(">h")


# -- decoding -------------------------------------------------------------
class _Reader:
    """A bounded cursor over one payload; every read checks the length."""

    __slots__ = ("data", "items", "limits", "pos")

    def __init__(self, data: bytes, limits: AmfLimits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.items = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise RtmpProtocolError(f"AMF0 value truncated: need {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def utf8(self, n: int) -> str:
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Publishers in the wild send Latin-1 in metadata; keep the value.
            return raw.decode("latin-1")

    def count(self) -> None:
        self.items += 1
        if self.items > self.limits.max_items:
            raise RtmpLimitError(f"AMF0 payload has more than {self.limits.max_items} values")


def _read_value(r: _Reader, depth: int) -> AmfValue:
    r.count()
    marker = r.u8()
    if marker == NUMBER:
        value: float = _DOUBLE.unpack(r.take(8))[0]
        return value
    if marker == BOOLEAN:
        return r.u8() != 0
    if marker == STRING:
        return r.utf8(r.u16())
    if marker == LONG_STRING:
        return r.utf8(r.u32())
    if marker == NULL:
        return None
    if marker == UNDEFINED_MARKER:
        return UNDEFINED
    if marker == DATE:
        ms: float = _DOUBLE.unpack(r.take(8))[0]
        tz: int = _DATE_TZ.unpack(r.take(2))[0]
        return AmfDate(ms, tz)
    if marker in (OBJECT, ECMA_ARRAY, STRICT_ARRAY):
        if depth >= r.limits.max_depth:
            raise RtmpLimitError(f"AMF0 nesting deeper than {r.limits.max_depth}")
        if marker == STRICT_ARRAY:
            n = r.u32()
            # Each element takes at least one byte: reject absurd counts early.
            if n > len(r.data) - r.pos:
                raise RtmpProtocolError(f"AMF0 strict array claims {n} elements in {len(r.data) - r.pos} bytes")
            return [_read_value(r, depth + 1) for _ in range(n)]
        if marker == ECMA_ARRAY:
            r.take(4)  # the count is only a hint; the object end marker is authoritative
            return EcmaArray(_read_properties(r, depth + 1))
        return dict(_read_properties(r, depth + 1))
    if marker == REFERENCE:
        raise RtmpProtocolError("AMF0 references are not supported")
    raise RtmpProtocolError(f"unknown AMF0 marker 0x{marker:02x}")


def _read_properties(r: _Reader, depth: int) -> Iterator[tuple[str, AmfValue]]:
    while True:
        key = r.utf8(r.u16())
        if key == "":
            if r.u8() != OBJECT_END:
                raise RtmpProtocolError("AMF0 object has an empty key without an object end marker")
            return
        yield key, _read_value(r, depth)


def decode(data: bytes, limits: AmfLimits | None = None) -> list[AmfValue]:
    """Decode every value in ``data`` (a command or data message body).

    Raises :class:`RtmpProtocolError` for malformed input and
    :class:`RtmpLimitError` when a bound is exceeded.
    """
    r = _Reader(bytes(data), limits or AmfLimits())
    values: list[AmfValue] = []
    while r.pos < len(r.data):
        values.append(_read_value(r, 0))
    return values


# -- encoding -------------------------------------------------------------
def _encode_str_body(s: str, out: bytearray) -> None:
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise RtmpUsageError("AMF0 property names must be shorter than 65536 bytes")
    out += _U16.pack(len(raw))
    out += raw


def _encode_value(value: AmfValue, out: bytearray) -> None:
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out.append(BOOLEAN)
        out.append(1 if value else 0)
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        else:
            out.append(STRING)
            out += _U16.pack(len(raw))
        out += raw
    elif isinstance(value, AmfDate):
        out.append(DATE)
        out += _DOUBLE.pack(value.ms)
        out += _DATE_TZ.pack(value.tz)
    elif isinstance(value, list):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_value(item, out)
    elif isinstance(value, dict):
        if isinstance(value, EcmaArray):
            out.append(ECMA_ARRAY)
            out += _U32.pack(len(value))
        else:
            out.append(OBJECT)
        for key, item in value.items():
            if not isinstance(key, str) or key == "":
                raise RtmpUsageError(f"AMF0 property names must be non-empty strings, not {key!r}")
            _encode_str_body(key, out)
            _encode_value(item, out)
        out += b"\x00\x00"
        out.append(OBJECT_END)
    else:
        raise RtmpUsageError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values: AmfValue) -> bytes:
    """Encode ``values`` one after another (a command: name, transaction id,
    command object, arguments)."""
    out = bytearray()
    for value in values:
        _encode_value(value, out)
    return bytes(out)


def as_number(value: AmfValue) -> float | None:
    """``value`` as a finite number, or ``None`` (metadata fields are loosely
    typed: some encoders send numbers as strings or booleans)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
