"""Configuration of the control API.

One dataclass with safe defaults: an embedded SQLite file in the data
directory, a JWT secret generated once and kept beside it, and no webhook
host allowed until an operator names one (so a webhook can never be aimed at
an arbitrary internal address by default).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from control_api.errors import ApiConfigError

SECRET_FILE = "control_api.secret"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Settings of the control API; every field has a default.

    ``database_url`` is ``sqlite:///<path>`` or ``postgresql://...``; ``None``
    means ``sqlite:///<data_dir>/fanz.db``. ``jwt_secret`` ``None`` means a
    secret generated on first start and persisted in ``data_dir`` (so tokens
    survive restarts). ``public_base_url`` is where viewers reach the engine's
    HTTP server; playback URLs handed out by ``join`` start with it.
    """

    data_dir: Path = Path("data")
    database_url: str | None = None
    jwt_secret: str | None = None
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    playback_token_ttl_s: int = 2 * 3600
    public_base_url: str = "http://127.0.0.1:8080"
    webhook_allowed_hosts: tuple[str, ...] = ()
    webhook_max_attempts: int = 6
    webhook_backoff_base_s: float = 2.0
    webhook_backoff_cap_s: float = 300.0
    webhook_timeout_s: float = 10.0
    auth_rate_per_minute_per_ip: int = 30
    auth_rate_per_minute_per_user: int = 10
    scrypt_n: int = 2**14
    subscription_period_days: int = 30
    totp_issuer: str = "Fanz"
    postgres_pool_size: int = 10

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'fanz.db').resolve()}"

    def check(self) -> None:
        """Refuse settings that cannot work; called by :func:`create_app`."""
        url = self.resolved_database_url()
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ApiConfigError(f"database_url must be sqlite:/// or postgresql://, not {url.split(':')[0]!r}")
        for name in ("access_token_ttl_s", "refresh_token_ttl_s", "playback_token_ttl_s", "webhook_max_attempts"):
            if getattr(self, name) <= 0:
                raise ApiConfigError(f"{name} must be positive")
        if self.scrypt_n < 2 or self.scrypt_n & (self.scrypt_n - 1):
            raise ApiConfigError("scrypt_n must be a power of two")
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise ApiConfigError("jwt_secret must be at least 32 characters")
        if not self.public_base_url.startswith(("http://", "https://")):
            raise ApiConfigError("public_base_url must be an http(s) URL")

    def with_secret(self) -> ApiConfig:
        """This config with ``jwt_secret`` filled in, reading or creating the
        persisted secret file (mode 0600) in ``data_dir``."""
        if self.jwt_secret is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / SECRET_FILE
        if path.exists():
            secret = path.read_text().strip()
        else:
            secret = secrets.token_urlsafe(48)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret + "\n")
        if len(secret) < 32:
            raise ApiConfigError(f"{path} holds a secret shorter than 32 characters")
        return replace(self, jwt_secret=secret)

    @classmethod
    def from_env(cls, env: Mapping[str, str], data_dir: Path, **overrides: object) -> ApiConfig:
        """Read ``DATABASE_URL``, ``FANZ_JWT_SECRET``, ``FANZ_PUBLIC_URL`` and
        ``FANZ_WEBHOOK_HOSTS`` (comma separated) over the defaults."""
        kwargs: dict[str, object] = {"data_dir": data_dir}
        if env.get("DATABASE_URL"):
            kwargs["database_url"] = env["DATABASE_URL"]
        if env.get("FANZ_JWT_SECRET"):
            kwargs["jwt_secret"] = env["FANZ_JWT_SECRET"]
        if env.get("FANZ_PUBLIC_URL"):
            kwargs["public_base_url"] = env["FANZ_PUBLIC_URL"]
        if env.get("FANZ_WEBHOOK_HOSTS"):
            hosts = env["FANZ_WEBHOOK_HOSTS"].split(",")
            kwargs["webhook_allowed_hosts"] = tuple(h.strip() for h in hosts if h.strip())
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]
