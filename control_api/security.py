"""Credentials: password hashes, access tokens, opaque secrets, playback
tokens and TOTP codes.

Pure functions; nothing here touches the database or reads a clock (callers
pass ``now``). Password hashing is deliberately slow (scrypt, memory-hard),
so the HTTP layer runs :func:`hash_password` and :func:`verify_password` on a
worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import pyotp

from control_api.errors import Unauthenticated

SCRYPT_R = 8
SCRYPT_P = 1
TOTP_STEP_S = 30


def new_id() -> str:
    """A random record id (UUID4, hex)."""
    return uuid.uuid4().hex


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- passwords ---------------------------------------------------------------
def hash_password(password: str, n: int) -> str:
    """``scrypt$n$r$p$salt$hash``; the parameters travel with the hash so
    they can be raised later without breaking old hashes."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=256 * n * SCRYPT_R, dklen=32
    )
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64e(salt)}${_b64e(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against :func:`hash_password`
    output; a malformed stored hash never matches."""
    try:
        scheme, n_s, r_s, p_s, salt_s, digest_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        if scheme != "scrypt" or n > 2**20 or r > 32 or p > 16:
            return False
        salt, expected = _b64d(salt_s), _b64d(digest_s)
    except ValueError:
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=len(expected))
    return hmac.compare_digest(digest, expected)


# -- opaque secrets (refresh tokens, API keys, stream keys) ---------------------
def new_secret(prefix: str) -> str:
    """A high-entropy secret shown to its owner once, e.g. ``sk_...``."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def secret_hash(secret: str) -> str:
    """SHA-256 of a secret; enough at rest because the secret carries 256
    bits of entropy (no dictionary to attack)."""
    return hashlib.sha256(secret.encode()).hexdigest()


# -- access tokens ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    session_id: str
    role: str


def issue_access_token(key: str, claims: AccessClaims, now: float, ttl_s: int) -> str:
    payload = {
        "sub": claims.user_id,
        "sid": claims.session_id,
        "role": claims.role,
        "typ": "access",
        "iat": int(now),
        "exp": int(now) + ttl_s,
    }
    return jwt.encode(payload, key, algorithm="HS256")


def read_access_token(key: str, token: str, now: float) -> AccessClaims:
    """Check signature, type and expiry; raise :class:`Unauthenticated`."""
    try:
        payload = jwt.decode(
            token, key, algorithms=["HS256"], options={"require": ["exp", "sub", "sid"], "verify_exp": False}
        )
    except jwt.PyJWTError as e:
        raise Unauthenticated(f"invalid access token: {e}", kind="invalid-token") from e
    if payload.get("typ") != "access" or not isinstance(payload.get("exp"), int):
        raise Unauthenticated("not an access token", kind="invalid-token")
    if payload["exp"] <= now:
        raise Unauthenticated("access token expired; refresh it", kind="token-expired")
    return AccessClaims(str(payload["sub"]), str(payload["sid"]), str(payload.get("role", "")))


# -- playback tokens ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlaybackClaims:
    """``issued_at`` (seconds, millisecond precision) is what a revocation
    compares with: tokens issued before it stop working."""

    playback_id: str
    viewer_id: str
    expires_at: int
    issued_at: float


def _playback_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"fanz playback token v1", hashlib.sha256).digest()


def issue_playback_token(secret: str, claims: PlaybackClaims) -> str:
    """``<payload>.<mac>``, both base64url: short enough for a query string,
    checked without a database round trip on every segment request."""
    body = json.dumps({"p": claims.playback_id, "v": claims.viewer_id, "e": claims.expires_at,
                       "i": int(claims.issued_at * 1000)}, separators=(",", ":"))
    payload = _b64e(body.encode())
    mac = hmac.new(_playback_key(secret), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64e(mac)}"


class PlaybackTokenInvalid(ValueError):
    """The playback token is malformed, forged, expired or for another stream."""


def read_playback_token(secret: str, token: str, playback_id: str, now: float) -> PlaybackClaims:
    if len(token) > 512 or token.count(".") != 1:
        raise PlaybackTokenInvalid("malformed playback token")
    payload, mac_s = token.split(".")
    try:
        mac = _b64d(mac_s)
        expected = hmac.new(_playback_key(secret), payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise PlaybackTokenInvalid("bad playback token signature")
        data: Any = json.loads(_b64d(payload))
    except (ValueError, UnicodeDecodeError) as e:
        raise PlaybackTokenInvalid("malformed playback token") from e
    if not isinstance(data, dict) or not isinstance(data.get("e"), int) or not isinstance(data.get("i"), int):
        raise PlaybackTokenInvalid("malformed playback token")
    claims = PlaybackClaims(str(data.get("p")), str(data.get("v")), data["e"], data["i"] / 1000)
    if claims.playback_id != playback_id:
        raise PlaybackTokenInvalid("playback token is for another stream")
    if claims.expires_at <= now:
        raise PlaybackTokenInvalid("playback token expired")
    return claims


# -- TOTP (RFC 6238) ---------------------------------------------------------------
def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def totp_match(secret: str, code: str, now: float, last_step: int) -> int | None:
    """The time step a code matches (one step of clock drift either way), or
    ``None``. A step at or before ``last_step`` never matches, so a code
    cannot be replayed."""
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now // TOTP_STEP_S)
    for step in (current - 1, current, current + 1):
        if step > last_step and hmac.compare_digest(totp.at(step * TOTP_STEP_S), code):
            return step
    return None
