"""Who is calling: bearer access tokens (users) and API keys (platform
services), plus the per-address and per-user limits on the auth routes."""

from __future__ import annotations

from aiohttp import web

from control_api.errors import Forbidden, RateLimited, Unauthenticated
from control_api.plane import ControlPlane
from control_api.routing import Authenticator, Principal
from control_api.security import read_access_token
from control_api.store import users
from control_api.store.audit import Actor

API_KEY_HEADER = "X-API-Key"


def authenticator(plane: ControlPlane) -> Authenticator:
    async def authenticate(request: web.Request) -> Principal | None:
        key = request.headers.get(API_KEY_HEADER)
        if key is not None:
            row = await users.api_key_by_secret(plane.db, key[:256], plane.clock())
            if row is None:
                raise Unauthenticated("unknown or revoked API key", kind="invalid-api-key")
            return Principal("api_key", str(row["id"]), "service", str(row["name"]))
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("use 'Authorization: Bearer <access token>'", kind="invalid-token")
        now = plane.clock()
        claims = read_access_token(plane.secret, token.strip(), now)
        row = await users.session_user(plane.db, claims.session_id, claims.user_id, now)
        if row is None:
            raise Unauthenticated("the session was logged out or expired; log in again", kind="session-revoked")
        if row["banned"]:
            raise Forbidden("this account is banned", kind="banned")
        return Principal("user", str(row["id"]), str(row["role"]), str(row["username"]), claims.session_id)

    return authenticate


def actor_of(principal: Principal | None, remote: str) -> Actor:
    if principal is None:
        return Actor("anonymous", None, remote)
    return Actor(principal.kind, principal.id, remote)


def limit_auth(plane: ControlPlane, remote: str, username: str | None) -> None:
    """Count one auth request from the caller's address; raise
    :class:`RateLimited` when the address, or (with ``username``) that user
    from this address or from everywhere, has used up its allowance."""
    wait, reason = plane.auth_limits.before(remote, username, plane.clock())
    if wait > 0:
        raise RateLimited(reason, wait)


def auth_failed(plane: ControlPlane, remote: str, username: str) -> None:
    """Count a wrong password or TOTP code against the user and the address."""
    plane.auth_limits.failed(remote, username, plane.clock())
