"""ISO BMFF box primitives (ISO/IEC 14496-12 §4.2).

Boxes are built bottom-up as byte strings: a child is serialized before its
parent, which only needs the children's total size. Every writer module uses
these two functions so that size fields are computed in one place.
"""

from __future__ import annotations

import struct

from packager.fmp4.errors import Fmp4UsageError

#: The unity transformation matrix of mvhd/tkhd (16.16 and 2.30 fixed point).
UNITY_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def box(kind: bytes, *payload: bytes) -> bytes:
    """A plain box: 32-bit size, four-character type, payload."""
    if len(kind) != 4:
        raise Fmp4UsageError(f"box type {kind!r} is not four characters")
    body = b"".join(payload)
    size = 8 + len(body)
    if size > 0xFFFFFFFF:
        raise Fmp4UsageError(f"{kind.decode('latin-1')} box of {size} bytes needs a 64-bit size")
    return struct.pack(">I4s", size, kind) + body


def box_header(kind: bytes, payload_size: int) -> bytes:
    """The 8-byte header of a plain box whose payload of ``payload_size``
    bytes the caller writes after it (large payloads are not copied twice)."""
    if len(kind) != 4:
        raise Fmp4UsageError(f"box type {kind!r} is not four characters")
    size = 8 + payload_size
    if size > 0xFFFFFFFF:
        raise Fmp4UsageError(f"{kind.decode('latin-1')} box of {size} bytes needs a 64-bit size")
    return struct.pack(">I4s", size, kind)


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A full box: a plain box whose payload starts with version and flags."""
    return box(kind, struct.pack(">I", (version << 24) | (flags & 0xFFFFFF)), *payload)
