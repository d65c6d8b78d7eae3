"""Settings of DRM: the default protection, key rotation, where content
keys come from and how they are handed to players.

The section is ``[drm]``; every setting also reads from
``FANZ_DRM_<NAME>`` (``FANZ_DRM_PROTECTION``, ``FANZ_DRM_MASTER_KEY``...).
The control API's stream record can override :attr:`DrmConfig.protection`
per stream (``PublishGrant.protection``).
"""

from __future__ import annotations

import dataclasses
import enum
import re
import urllib.parse
from dataclasses import dataclass

from drm.model import Protection, SystemId
from engine.settings import doc

MASTER_KEY_HEX = re.compile(r"[0-9a-fA-F]{64}")
SYSTEM_NAMES = {"widevine": SystemId.WIDEVINE, "playready": SystemId.PLAYREADY, "fairplay": SystemId.FAIRPLAY,
                "clearkey": SystemId.CLEARKEY}
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")


class ProviderKind(enum.Enum):
    LOCAL = "local"
    """Keys made here and kept sealed in the data directory."""
    HTTP = "http"
    """Keys (and DRM system data) from an outside key service that speaks CPIX over HTTP."""


@dataclass(frozen=True, slots=True)
class DrmConfig:
    protection: Protection = doc(
        "Default encryption of streams and VOD assets: none, aes-128, sample-aes, cbcs or cenc (the control API's "
        "stream record may choose another per stream).",
        Protection.NONE,
    )
    rotate_every_segments: int = doc(
        "Live streams start a new content key every this many segments (and at every publisher reconnect). "
        "0: one key per broadcast, new only at reconnects.",
        150,
    )
    vod_rotate_every_segments: int = doc("VOD assets start a new content key every this many segments; 0: one key.", 0)
    provider: ProviderKind = doc(
        "Where content keys come from: local (made here, sealed in DATA_DIR/drm) or http (a CPIX key service at "
        "drm.key_service_url; its answers are kept sealed the same way).",
        ProviderKind.LOCAL,
    )
    key_service_url: str = doc("The CPIX key service's URL (http or https), for drm.provider = http.", "")
    key_service_headers: dict[str, str] = doc(
        "Extra HTTP headers sent to the key service, such as its API key (a table of name = value).", factory=dict
    )
    key_service_systems: list[str] = doc(
        "DRM systems whose data the key service is asked for: widevine, playready, fairplay, clearkey.",
        factory=lambda: ["widevine", "playready", "fairplay"],
    )
    key_service_connect_timeout_s: float = doc("Longest wait to connect to the key service, in seconds.", 3.0)
    key_service_timeout_s: float = doc("Longest wait for the key service's whole answer, in seconds.", 10.0)
    key_service_retries: int = doc(
        "Further tries after a key service request fails to connect, times out or answers 5xx.", 2
    )
    master_key: str = dataclasses.field(
        default="",
        repr=False,
        metadata={
            "doc": "Master key (64 hex digits) that seals content keys at rest. Empty: server.master_key_file, else "
            "DATA_DIR/master.key (generated once, mode 0600)."
        },
    )
    clear_key_delivery: bool = doc(
        "Hand content keys to authorised players at /keys/NAME/KID (AES-128, SAMPLE-AES) and /drm/clearkey/NAME "
        "(ClearKey). Off when a commercial DRM's licence server must be the only way keys reach players.",
        True,
    )
    key_requests_per_minute: int = doc(
        "Key and licence requests allowed per playback token (or per address without one) per minute.", 120
    )

    def __post_init__(self) -> None:
        # Messages never repeat the master key's value.
        if self.master_key and not MASTER_KEY_HEX.fullmatch(self.master_key.strip()):
            raise ValueError("drm.master_key must be 64 hex digits")
        if self.rotate_every_segments < 0 or self.vod_rotate_every_segments < 0:
            raise ValueError("drm.rotate_every_segments and drm.vod_rotate_every_segments must not be negative")
        if self.key_service_connect_timeout_s <= 0 or self.key_service_timeout_s <= 0:
            raise ValueError("drm.key_service_connect_timeout_s and drm.key_service_timeout_s must be positive")
        if self.key_service_retries < 0:
            raise ValueError("drm.key_service_retries must not be negative")
        if self.key_requests_per_minute < 1:
            raise ValueError("drm.key_requests_per_minute must be at least 1")
        unknown = [name for name in self.key_service_systems if name not in SYSTEM_NAMES]
        if unknown:
            raise ValueError(f"drm.key_service_systems: unknown DRM system(s) {', '.join(unknown)}; "
                             f"known: {', '.join(SYSTEM_NAMES)}")
        for name, value in self.key_service_headers.items():
            if not HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"drm.key_service_headers: {name!r} is not a valid header")
        if self.provider is ProviderKind.HTTP:
            url = urllib.parse.urlsplit(self.key_service_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError("drm.provider = http needs drm.key_service_url, an http or https URL")

    @property
    def master_key_bytes(self) -> bytes | None:
        return bytes.fromhex(self.master_key.strip()) if self.master_key else None

    @property
    def systems(self) -> tuple[SystemId, ...]:
        return tuple(SYSTEM_NAMES[name] for name in self.key_service_systems)
