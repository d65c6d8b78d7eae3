"""Configuration of the control API.

One dataclass with safe defaults: an embedded SQLite file in the data
directory, a JWT secret generated once and kept beside it, and no webhook
host allowed until an operator names one (so a webhook can never be aimed at
an arbitrary internal address by default).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from control_api.errors import ApiConfigError
from drm.keystore import make_private_dir

SECRET_FILE = "control_api.secret"
PROCESSOR_NAME = re.compile(r"[a-z0-9_]{1,32}")


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Settings of the control API; every field has a default.

    ``database_url`` is ``sqlite:///<path>`` or ``postgresql://...``; ``None``
    means ``sqlite:///<data_dir>/fanz.db``. ``jwt_secret`` ``None`` means a
    secret generated on first start and persisted in ``data_dir`` (so tokens
    survive restarts). ``public_base_url`` is where viewers reach the engine's
    HTTP server; playback URLs handed out by ``join`` start with it (``None``:
    the origin the API request itself came in on).
    """

    data_dir: Path = field(default=Path("data"), metadata={"internal": True})
    """Set from ``server.data_dir`` by the engine: where the SQLite file and the secret live."""
    master_key_file: Path | None = field(default=None, metadata={"internal": True})
    """Set from ``server.master_key_file`` by the engine: the master key that seals secrets at rest."""
    database_url: str | None = None
    """sqlite:///PATH or postgresql://USER@HOST/DB. Empty: SQLite in the data directory. DATABASE_URL also sets it."""
    jwt_secret: str | None = None
    """Secret that signs access and playback tokens (32+ characters). Empty: generated once, kept in the data dir."""
    access_token_ttl_s: int = 15 * 60
    """Lifetime of an access token, in seconds."""
    refresh_token_ttl_s: int = 30 * 24 * 3600
    """Lifetime of a refresh token, in seconds."""
    playback_token_ttl_s: int = 2 * 3600
    """Lifetime of a playback token handed out by join, in seconds."""
    public_base_url: str | None = None
    """Where viewers reach this engine's HTTP server; playback links start with it. Empty: the request's own origin."""
    webhook_allowed_hosts: tuple[str, ...] = ()
    """Hosts (or host:port) webhooks may be sent to. Empty: no webhook is delivered."""
    webhook_max_attempts: int = 6
    """Deliveries tried per webhook event before it is marked failed."""
    webhook_backoff_base_s: float = 2.0
    """First retry delay; it doubles on each attempt."""
    webhook_backoff_cap_s: float = 300.0
    """Longest retry delay."""
    webhook_timeout_s: float = 10.0
    """Time allowed for one webhook delivery."""
    auth_rate_per_minute_per_ip: int = 30
    """Auth requests (login, register, refresh, TOTP) per minute per client address."""
    auth_failures_per_user_address: int = 10
    """Wrong passwords or TOTP codes for one user from one address; refilled at this many an hour."""
    auth_failures_per_user: int = 100
    """Wrong passwords or TOTP codes for one user from all addresses together, refilled at this many an hour."""
    reconcile_on_start: bool = True
    """On start, end streams the store lists as live but this engine is not serving. Off: engines share one database."""
    trusted_proxies: tuple[str, ...] = ()
    """Reverse proxies (addresses, CIDR ranges) whose X-Forwarded-For/-Proto/-Host are believed on every route
    (HLS, keys, WHEP, the API); that address decides geo restrictions. Empty: none."""
    scrypt_n: int = 2**14
    """scrypt cost (a power of two) for password hashes."""
    subscription_period_days: int = 30
    """Length of a subscription period."""
    totp_issuer: str = "Fanz"
    """Issuer shown by authenticator apps."""
    postgres_pool_size: int = 10
    """Connections in the PostgreSQL pool."""
    payment_processors: dict[str, str] = field(default_factory=dict)
    """Payment processors whose signed events /api/v1/payments/webhook/NAME accepts:
    a table of NAME = signing secret (32+ characters)."""
    payment_tolerance_s: int = 300
    """A processor event signed longer ago (or further ahead) than this many seconds is refused as stale."""
    revocation_poll_s: float = 2.0
    """How often each node reads the playback revocations (cancellations, bans, refunds,
    blocks) made on other nodes: the bound on how long a revoked viewer keeps playing there."""

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
        if self.public_base_url is not None and not self.public_base_url.startswith(("http://", "https://")):
            raise ApiConfigError("public_base_url must be an http(s) URL")
        for name, secret in self.payment_processors.items():
            if not PROCESSOR_NAME.fullmatch(name):
                raise ApiConfigError(f"payment processor name {name!r} must match {PROCESSOR_NAME.pattern}")
            if len(secret) < 32:
                raise ApiConfigError(f"payment_processors.{name}: the signing secret must be at least 32 characters")
        if self.payment_tolerance_s <= 0:
            raise ApiConfigError("payment_tolerance_s must be positive")
        if not 0 < self.revocation_poll_s <= 60:
            raise ApiConfigError("revocation_poll_s must be above 0 and at most 60")
        for name in ("auth_rate_per_minute_per_ip", "auth_failures_per_user_address", "auth_failures_per_user"):
            if getattr(self, name) < 1:
                raise ApiConfigError(f"{name} must be at least 1")
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as e:
                raise ApiConfigError(f"trusted_proxies: {entry!r} is not an address or CIDR range") from e

    def with_secret(self) -> ApiConfig:
        """This config with ``jwt_secret`` filled in, reading or creating the
        persisted secret file (mode 0600) in ``data_dir``."""
        if self.jwt_secret is not None:
            return self
        make_private_dir(self.data_dir)
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
