"""The engine's one typed configuration object.

Loaded from a TOML file (``--config``) and environment variables named
``FANZ_<SECTION>_<KEY>`` (environment wins over the file; command-line flags
win over both). ``fanz-media config`` prints every setting with its
environment variable and default; the README's table is that output.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cluster.storage.config import StorageConfig
from control_api.config import ApiConfig
from drm.config import DrmConfig
from effects.config import EffectsSettings
from engine.errors import ConfigError, StreamNameError
from engine.media import check_stream_name
from engine.settings import SettingInfo, build, describe, doc
from ingest.rtmp.limits import RtmpLimits
from packager.hls.config import HlsConfig
from packager.recording.config import RecordingConfig
from transcode.config import TranscodeSettings
from webrtc.config import WebRtcConfig

ENV_PREFIX = "FANZ"
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_PROCESSES = 256


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = doc("Address every listener binds to.", "0.0.0.0")
    data_dir: Path = doc(
        "Where HLS output, recordings and the embedded database live; kept private (0700) to the engine's user.",
        Path("data"),
    )
    master_key_file: str = doc(
        "File holding the engine's master key (64 hex digits) that seals secrets at rest. "
        "Empty: generated once as DATA_DIR/master.key (mode 0600).",
        "",
    )
    dev: bool = doc(
        "Development mode: every stream key is accepted and doubles as the playback name. Never in production.",
        False,
    )
    log_level: str = doc("Logging level: debug, info, warning or error.", "info")
    use_uvloop: bool = doc("Run the event loop on uvloop when it is installed.", True)
    processes: int = doc(
        "Engine processes (event loops) on this node. 1: one process does everything. More: a supervisor "
        "starts that many complete engines sharing the RTMP and HTTP ports (SO_REUSEPORT), each owning the "
        "streams published to it; a request for a stream another process owns is passed to it over loopback.",
        1,
    )

    def __post_init__(self) -> None:
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise ConfigError(f"server.processes must be 1 to {MAX_PROCESSES}, not {self.processes}")
        if self.log_level.lower() not in LOG_LEVELS:
            allowed = ", ".join(repr(level) for level in LOG_LEVELS)
            raise ConfigError(f"server.log_level {self.log_level!r} is not one of {allowed}")


@dataclass(frozen=True, slots=True)
class RtmpConfig:
    enabled: bool = doc("Accept RTMP publishers.", True)
    port: int = doc("Plain RTMP port.", 1935)
    tls_port: int = doc("RTMPS port; used only when a certificate is configured.", 1936)
    tls_cert: str = doc("PEM certificate chain for RTMPS. Empty: RTMPS is off.", "")
    tls_key: str = doc("PEM private key for RTMPS.", "")
    apps: list[str] = doc("RTMP application names publishers may use (rtmp://HOST/APP/KEY).", factory=lambda: ["live"])
    limits: RtmpLimits = field(default_factory=RtmpLimits)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    port: int = doc("HTTP port for HLS, health, readiness, metrics and the API.", 8080)
    api: bool = doc(
        "Mount the control API (/api/v1) and let its store decide who publishes and who watches "
        "(unless --dev).",
        True,
    )
    metrics_stream_labels: bool = doc(
        "Label /metrics series with stream and rendition names. Off: those series are summed over streams, "
        "so the endpoint names no playback id (paid ones included) to whoever can reach it.",
        False,
    )


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    reconnect_grace_s: float = doc(
        "A publisher that drops and returns within this many seconds continues the same stream.", 10.0
    )
    fanout_buffer: int = doc("Packets each consumer of a stream may fall behind before it starts dropping.", 1024)
    gop_cache_packets: int = doc("Most packets kept of the current GOP for viewers that join mid-stream.", 2048)
    ended_retention_s: float = doc("How long an ended stream's HLS stays available.", 600.0)
    keys: dict[str, str] = doc(
        "Static stream keys when the control API is off: a table of secret key = playback name "
        "(playback names follow the stream name rule: 1-64 of A-Z a-z 0-9 _ -).",
        factory=dict,
    )

    def __post_init__(self) -> None:
        for name in self.keys.values():
            try:
                check_stream_name(name, "playback name")
            except StreamNameError as exc:
                raise ValueError(f"streams.keys: {exc}") from None


@dataclass(frozen=True, slots=True)
class EngineConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    rtmp: RtmpConfig = field(default_factory=RtmpConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    hls: HlsConfig = field(default_factory=HlsConfig)
    drm: DrmConfig = field(default_factory=DrmConfig)
    transcode: TranscodeSettings = field(default_factory=TranscodeSettings)
    effects: EffectsSettings = field(default_factory=EffectsSettings)
    api: ApiConfig = field(default_factory=ApiConfig)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)

    def with_overrides(self, **sections: Mapping[str, Any]) -> EngineConfig:
        """Return a copy with some fields of some sections replaced
        (command-line flags)."""
        changes: dict[str, Any] = {}
        for section, values in sections.items():
            if values:
                changes[section] = replace(getattr(self, section), **values)
        return replace(self, **changes)


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> EngineConfig:
    """Read the TOML file (if any) and the environment."""
    table: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                table = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    env = dict(os.environ if env is None else env)
    # The conventional variable for the database, as the platform's other services use it.
    if "DATABASE_URL" in env and "FANZ_API_DATABASE_URL" not in env:
        env["FANZ_API_DATABASE_URL"] = env["DATABASE_URL"]
    return build(EngineConfig, table, env, ENV_PREFIX)


def settings() -> Iterator[SettingInfo]:
    """Every setting, for ``fanz-media config`` and the README."""
    return describe(EngineConfig, ENV_PREFIX)


def settings_markdown() -> str:
    rows = ["| setting | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for s in settings():
        default = s.default.value if hasattr(s.default, "value") else s.default
        if isinstance(default, Path):
            default = str(default)
        if isinstance(default, dict) and default and all(hasattr(v, "__dataclass_fields__") for v in default.values()):
            default = ", ".join(default)
        shown = "(empty)" if default in ("", [], {}) else f"`{default}`"
        rows.append(f"| `{'.'.join(s.path)}` | `{s.env}` | {shown} | {s.doc} |")
    return "\n".join(rows) + "\n"
