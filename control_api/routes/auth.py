"""Registration, login, token refresh, logout, TOTP and API keys."""

from __future__ import annotations

import asyncio
from typing import Any

from control_api import schemas as S
from control_api.authn import actor_of, auth_failed, limit_auth
from control_api.db import Row
from control_api.errors import Conflict, Forbidden, Unauthenticated
from control_api.plane import ControlPlane
from control_api.routing import ROLES_ADMIN, ROLES_ANY_USER, Reply, RequestCtx, Router, paged
from control_api.security import (
    AccessClaims,
    hash_password,
    issue_access_token,
    new_totp_secret,
    totp_match,
    totp_uri,
    verify_password,
)
from control_api.store import users

TAG = "auth"


def register(router: Router, plane: ControlPlane) -> None:
    cfg = plane.config
    # A real hash to verify against when the username is unknown, so that a
    # login for a missing user costs as much as one for an existing user.
    decoy = hash_password("decoy password", cfg.scrypt_n)

    async def token_pair(user: Row, remote: str) -> dict[str, Any]:
        now = plane.clock()
        session_id, refresh = await users.create_session(plane.db, user["id"], remote, now, cfg.refresh_token_ttl_s)
        access = issue_access_token(plane.secret, AccessClaims(user["id"], session_id, user["role"]), now,
                                    cfg.access_token_ttl_s)
        return {"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
                "expires_in": cfg.access_token_ttl_s, "user": users.me_view(user)}

    @router.op("POST", "/auth/register", summary="Register a fan or creator account", tag=TAG, roles=None,
               body=S.REGISTER, ok=(201, S.ref("TokenPair")), errors=(409, 429))
    async def register_user(ctx: RequestCtx) -> Reply:
        limit_auth(plane, ctx.remote, None)
        b = ctx.body
        password_hash = await asyncio.to_thread(hash_password, b["password"], cfg.scrypt_n)
        user = await users.create_user(
            plane.db, None, username=b["username"], password_hash=password_hash,
            role=b["role"], display_name=b.get("display_name", b["username"]), now=plane.clock(),
        )
        return Reply(201, await token_pair(user, ctx.remote))

    @router.op("POST", "/auth/login", summary="Log in with a password (and a TOTP code when enabled)", tag=TAG,
               roles=None, body=S.LOGIN, ok=(200, S.ref("TokenPair")), errors=(401, 403, 429))
    async def login(ctx: RequestCtx) -> Reply:
        b = ctx.body
        limit_auth(plane, ctx.remote, b["username"])
        user = await users.find_by_username(plane.db, b["username"])
        ok = await asyncio.to_thread(verify_password, b["password"], user["password_hash"] if user else decoy)
        if user is None or not ok:
            auth_failed(plane, ctx.remote, b["username"])
            raise Unauthenticated("wrong username or password", kind="bad-credentials")
        if user["banned"]:
            raise Forbidden("this account is banned", kind="banned")
        if user["totp_enabled"]:
            await check_otp(user, b.get("otp"), ctx.remote)
        return Reply(200, await token_pair(user, ctx.remote))

    async def check_otp(user: Row, code: str | None, remote: str) -> None:
        if code is None:
            raise Unauthenticated("this account needs a TOTP code in 'otp'", kind="otp-required")
        secret = users.totp_secret(user, plane.sealer)
        step = None if secret is None else totp_match(secret, code, plane.clock(), int(user["totp_last_step"]))
        if step is None or not await users.use_totp_step(plane.db, user["id"], step):
            auth_failed(plane, remote, str(user["username"]))
            raise Unauthenticated("wrong or already used TOTP code", kind="otp-invalid")

    @router.op("POST", "/auth/refresh", summary="Trade a refresh token for new tokens", tag=TAG, roles=None,
               body=S.REFRESH, ok=(200, S.ref("TokenPair")), errors=(401, 403, 429))
    async def refresh(ctx: RequestCtx) -> Reply:
        limit_auth(plane, ctx.remote, None)
        now = plane.clock()
        rotated = await users.rotate_session(plane.db, ctx.body["refresh_token"], now, cfg.refresh_token_ttl_s)
        if rotated is None:
            raise Unauthenticated("unknown, revoked or expired refresh token", kind="invalid-token")
        user, session_id, new_refresh = rotated
        if user["banned"]:
            raise Forbidden("this account is banned", kind="banned")
        access = issue_access_token(plane.secret, AccessClaims(user["id"], session_id, user["role"]), now,
                                    cfg.access_token_ttl_s)
        return Reply(200, {"access_token": access, "refresh_token": new_refresh, "token_type": "Bearer",
                           "expires_in": cfg.access_token_ttl_s, "user": users.me_view(user)})

    @router.op("POST", "/auth/logout", summary="Log out: revoke this session and its tokens", tag=TAG,
               roles=ROLES_ANY_USER, body=S.LOGOUT, ok=(204, None))
    async def logout(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        now = plane.clock()
        if me.session_id is not None:
            await users.revoke_session(plane.db, me.session_id, now)
        if "refresh_token" in ctx.body:
            await users.revoke_by_refresh(plane.db, me.id, ctx.body["refresh_token"], now)
        return Reply(204, None)

    @router.op("POST", "/auth/2fa/enable", summary="Start TOTP enrolment", tag=TAG, roles=ROLES_ANY_USER,
               ok=(200, S.ref("TotpSetup")), errors=(409,))
    async def totp_enable(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        user = await users.get_user(plane.db, me.id)
        if user["totp_enabled"]:
            raise Conflict("two-factor authentication is already on; disable it first")
        secret = new_totp_secret()
        await users.set_totp(plane.db, actor_of(me, ctx.remote), me.id, secret, False, plane.clock(), plane.sealer)
        return Reply(200, {"secret": secret, "otpauth_uri": totp_uri(secret, me.username, cfg.totp_issuer)})

    @router.op("POST", "/auth/2fa/verify", summary="Confirm TOTP enrolment with a first code", tag=TAG,
               roles=ROLES_ANY_USER, body=S.OTP_BODY, ok=(200, S.ref("TotpState")), errors=(409, 429))
    async def totp_verify(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        limit_auth(plane, ctx.remote, me.username)
        user = await users.get_user(plane.db, me.id)
        if user["totp_secret"] is None or user["totp_enabled"]:
            raise Conflict("no TOTP enrolment is waiting; call /auth/2fa/enable first")
        await check_otp(user, ctx.body["code"], ctx.remote)
        await users.set_totp(plane.db, actor_of(me, ctx.remote), me.id, users.totp_secret(user, plane.sealer), True,
                             plane.clock(), plane.sealer)
        return Reply(200, {"totp_enabled": True})

    @router.op("POST", "/auth/2fa/disable", summary="Turn TOTP off (needs a current code)", tag=TAG,
               roles=ROLES_ANY_USER, body=S.OTP_BODY, ok=(200, S.ref("TotpState")), errors=(409, 429))
    async def totp_disable(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        limit_auth(plane, ctx.remote, me.username)
        user = await users.get_user(plane.db, me.id)
        if not user["totp_enabled"]:
            raise Conflict("two-factor authentication is not on")
        await check_otp(user, ctx.body["code"], ctx.remote)
        await users.set_totp(plane.db, actor_of(me, ctx.remote), me.id, None, False, plane.clock(), plane.sealer)
        return Reply(200, {"totp_enabled": False})

    @router.op("POST", "/auth/api-keys", summary="Create an API key for a platform service", tag=TAG,
               roles=ROLES_ADMIN, body=S.API_KEY_BODY, ok=(201, S.ref("ApiKey")))
    async def create_api_key(ctx: RequestCtx) -> Reply:
        row, key = await users.create_api_key(plane.db, actor_of(ctx.principal, ctx.remote), ctx.body["name"],
                                              plane.clock())
        return Reply(201, users.api_key_view(row, key))

    @router.op("GET", "/auth/api-keys", summary="List API keys", tag=TAG, roles=ROLES_ADMIN, query=S.PAGE_QUERY,
               ok=(200, S.ref("ApiKeyPage")))
    async def list_api_keys(ctx: RequestCtx) -> Reply:
        rows = await users.list_api_keys(plane.db, ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged([users.api_key_view(r) for r in rows], ctx.query))

    @router.op("DELETE", "/auth/api-keys/{key_id}", summary="Revoke an API key", tag=TAG, roles=ROLES_ADMIN,
               ok=(204, None))
    async def revoke_api_key(ctx: RequestCtx) -> Reply:
        await users.revoke_api_key(plane.db, actor_of(ctx.principal, ctx.remote), ctx.param("key_id"), plane.clock())
        return Reply(204, None)

