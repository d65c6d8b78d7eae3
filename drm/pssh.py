"""``pssh`` boxes (ISO/IEC 23001-7 section 8.1): what DRM system data look
like inside CMAF init segments and DASH manifests.

:func:`clearkey_pssh` writes the W3C common system's box (version 1, the
key IDs listed, no data) for keys this engine hands out itself;
:func:`check_pssh` reads boxes a key service supplies, so a malformed one
is refused when it arrives rather than written into every init segment.
"""

from __future__ import annotations

import struct
import uuid

from drm.model import KEY_BYTES, SystemId

_HEADER = struct.Struct(">I4sB3x16s")


def clearkey_pssh(kids: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The ClearKey ``pssh`` box naming ``kids``."""
    for kid in kids:
        if len(kid) != KEY_BYTES:
            raise ValueError(f"a key ID is {KEY_BYTES} bytes")
    body = struct.pack(">I", len(kids)) + b"".join(kids) + struct.pack(">I", 0)
    return _HEADER.pack(_HEADER.size + len(body), b"pssh", 1, SystemId.CLEARKEY.value.bytes) + body


def check_pssh(data: bytes, system_id: uuid.UUID) -> None:
    """Raise ``ValueError`` unless ``data`` is one or more whole ``pssh``
    boxes of ``system_id``."""
    if not data:
        raise ValueError("an empty pssh")
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise ValueError("a pssh box shorter than its header")
        size, kind, version, system = _HEADER.unpack_from(data, offset)
        if kind != b"pssh":
            raise ValueError(f"not a pssh box but {kind!r}")
        if size < _HEADER.size + 4 or offset + size > len(data):
            raise ValueError("a pssh box whose size does not fit")
        if version > 1:
            raise ValueError(f"pssh version {version} is unknown")
        if uuid.UUID(bytes=system) != system_id:
            raise ValueError("a pssh box of another DRM system")
        offset += size
