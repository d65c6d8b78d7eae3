"""What the rest of the engine knows of DRM: schemes, keys, key periods and
the provider that hands them out.

The packager encrypts with a :class:`KeyPeriod`'s key, the playlists and
manifests announce the period's key ID and DRM systems, and the key and
licence endpoints look keys up by ID. Where keys come from (the local
store, an outside key service) is behind :class:`KeyProvider`, so none of
those callers changes when an operator plugs in a commercial DRM service.

This module imports nothing else of the project.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Protocol

KEY_BYTES = 16
"""Content keys, key IDs and IVs are all 128 bits."""


class Protection(enum.Enum):
    """How a stream's or asset's media is encrypted."""

    NONE = "none"
    AES_128 = "aes-128"
    """HLS whole-segment AES-128-CBC (MPEG-TS or fMP4), ``EXT-X-KEY METHOD=AES-128``."""
    SAMPLE_AES = "sample-aes"
    """HLS SAMPLE-AES: MPEG-TS elementary streams encrypted per sample (fMP4 segments get ``cbcs``)."""
    CBCS = "cbcs"
    """Common encryption, AES-CBC with a 1:9 pattern (ISO/IEC 23001-7 ``cbcs``): HLS and DASH, FairPlay-ready."""
    CENC = "cenc"
    """Common encryption, AES-CTR (ISO/IEC 23001-7 ``cenc``): DASH, Widevine and PlayReady."""

    @property
    def encrypted(self) -> bool:
        return self is not Protection.NONE

    @property
    def common_encryption(self) -> bool:
        """Whether samples are encrypted inside CMAF (``cbcs`` or ``cenc``)."""
        return self in (Protection.CBCS, Protection.CENC)


class SystemId(enum.Enum):
    """DRM system IDs (dashif.org/identifiers/content_protection)."""

    CLEARKEY = uuid.UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b")
    """The W3C common system: ``pssh`` version 1 listing key IDs, licences from the ClearKey endpoint."""
    WIDEVINE = uuid.UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed")
    PLAYREADY = uuid.UUID("9a04f079-9840-4286-ab92-e65be0885f95")
    FAIRPLAY = uuid.UUID("94ce86fb-07ff-4f43-adb8-93d2fa968ca2")


@dataclass(frozen=True, slots=True)
class ContentKey:
    """One content key. ``iv`` is the period's IV: the constant IV of
    ``cbcs``, the base of per-sample IVs of ``cenc``, and the first
    segment's IV of AES-128 (later segments derive theirs from it)."""

    kid: bytes
    key: bytes
    iv: bytes

    def __post_init__(self) -> None:
        for name in ("kid", "key", "iv"):
            if len(getattr(self, name)) != KEY_BYTES:
                raise ValueError(f"a content key's {name} is {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        # A key must never reach a log line through a repr.
        return f"ContentKey(kid={self.kid.hex()})"

    @property
    def kid_uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.kid)


@dataclass(frozen=True, slots=True)
class DrmSystemData:
    """What one DRM system needs beside the key, as the key service gave it:
    a ready ``pssh`` box for CMAF init segments and DASH, and for HLS the
    ``EXT-X-KEY`` ``KEYFORMAT`` and ``URI`` (FairPlay's ``skd://``)."""

    system_id: uuid.UUID
    pssh: bytes | None = None
    hls_key_format: str | None = None
    hls_key_uri: str | None = None


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    """The key of one stretch of a stream or asset. Periods are numbered
    from 0; a new one starts every N segments and at every publisher
    reconnect (see :class:`drm.rotation.KeyRotation`)."""

    content_id: str
    index: int
    key: ContentKey
    systems: tuple[DrmSystemData, ...] = ()


class KeyProvider(Protocol):
    """Where content keys come from. Calls may block (a key service over
    HTTP, the disk): callers run them off the event loop."""

    def key_period(self, content_id: str, index: int) -> KeyPeriod:
        """The key of period ``index`` of ``content_id``: created on first
        use, the same on every later call (and after a restart)."""
        ...

    def find_key(self, content_id: str, kid: bytes) -> ContentKey | None:
        """The key with ID ``kid`` if it belongs to ``content_id``; ``None``
        otherwise (a key of another stream is never returned)."""
        ...

    def highest_period(self, content_id: str) -> int | None:
        """The highest period index of ``content_id`` known so far (``None``
        for a new one): a new broadcast under an old name starts after it."""
        ...
