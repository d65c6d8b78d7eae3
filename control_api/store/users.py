"""Users, login sessions (refresh tokens), API keys and TOTP state."""

from __future__ import annotations

from typing import Any

from control_api.db import Database, IntegrityError, Row
from control_api.errors import Conflict, NotFound
from control_api.security import new_id, new_secret, secret_hash
from control_api.store import audit
from control_api.store.audit import Actor
from drm.keystore import Sealer

PUBLIC_FIELDS = ("id", "username", "display_name", "bio", "role", "verified", "creator_status", "created_at")


def user_view(row: Row) -> dict[str, Any]:
    """The public profile."""
    out = {k: row[k] for k in PUBLIC_FIELDS}
    out["verified"] = bool(out["verified"])
    return out


def me_view(row: Row) -> dict[str, Any]:
    """The profile its owner sees."""
    return {**user_view(row), "banned": bool(row["banned"]), "totp_enabled": bool(row["totp_enabled"])}


async def create_user(
    db: Database, actor: Actor | None, *, username: str, password_hash: str, role: str, display_name: str, now: float
) -> Row:
    user_id = new_id()
    async with db.transaction() as tx:
        try:
            await tx.execute(
                "INSERT INTO users (id, username, password_hash, role, display_name, created_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $6)",
                user_id, username, password_hash, role, display_name, now,
            )
        except IntegrityError as e:
            raise Conflict(f"username {username!r} is taken", kind="username-taken") from e
        who = actor if actor is not None else Actor("user", user_id)
        await audit.record(tx, who, "user.register", "user", user_id, now, {"role": role})
    return await get_user(db, user_id)


async def get_user(db: Database, user_id: str) -> Row:
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    if row is None:
        raise NotFound(f"no user {user_id!r}")
    return row


async def find_by_username(db: Database, username: str) -> Row | None:
    return await db.fetchrow("SELECT * FROM users WHERE username = $1", username)


async def list_users(db: Database, limit: int, offset: int, role: str | None = None,
                     include_admins: bool = True) -> list[Row]:
    """Users in creation order, of one ``role`` when given; admin accounts
    only with ``include_admins``."""
    if role is not None:
        return await db.fetch(
            "SELECT * FROM users WHERE role = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3", role, limit, offset
        )
    if not include_admins:
        return await db.fetch(
            "SELECT * FROM users WHERE role <> 'admin' ORDER BY created_at, id LIMIT $1 OFFSET $2", limit, offset
        )
    return await db.fetch("SELECT * FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2", limit, offset)


async def update_user(db: Database, actor: Actor, user_id: str, changes: dict[str, Any], now: float) -> Row:
    """Set the given columns (names come from validated schemas, never from
    the client verbatim) and audit the change."""
    allowed = {"display_name", "bio", "role", "creator_status", "verified"}
    if not changes:
        return await get_user(db, user_id)
    if not set(changes) <= allowed:
        raise ValueError(f"cannot update {set(changes) - allowed}")
    cols = sorted(changes)
    assignments = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
    async with db.transaction() as tx:
        n = await tx.execute(
            f"UPDATE users SET {assignments}, updated_at = ${len(cols) + 2} WHERE id = $1",
            user_id, *[changes[c] for c in cols], now,
        )
        if n == 0:
            raise NotFound(f"no user {user_id!r}")
        await audit.record(tx, actor, "user.update", "user", user_id, now, changes)
    return await get_user(db, user_id)


async def set_banned(db: Database, actor: Actor, user_id: str, reason: str | None, now: float) -> Row:
    """Ban (``reason`` given) or unban (``None``); a ban also revokes every
    session so the user's tokens stop working at once."""
    async with db.transaction() as tx:
        n = await tx.execute(
            "UPDATE users SET banned = $2, banned_reason = $3, updated_at = $4 WHERE id = $1",
            user_id, reason is not None, reason, now,
        )
        if n == 0:
            raise NotFound(f"no user {user_id!r}")
        if reason is not None:
            await tx.execute(
                "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL", user_id, now
            )
        await audit.record(tx, actor, "user.ban" if reason else "user.unban", "user", user_id, now,
                           {"reason": reason} if reason else None)
    return await get_user(db, user_id)


# -- sessions ---------------------------------------------------------------------
async def create_session(db: Database, user_id: str, remote: str, now: float, ttl_s: int) -> tuple[str, str]:
    """Open a login session; returns ``(session_id, refresh_token)``."""
    session_id, refresh = new_id(), new_secret("rt")
    await db.execute(
        "INSERT INTO sessions (id, user_id, refresh_hash, created_at, expires_at, remote) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        session_id, user_id, secret_hash(refresh), now, now + ttl_s, remote,
    )
    return session_id, refresh


async def rotate_session(db: Database, refresh: str, now: float, ttl_s: int) -> tuple[Row, str, str] | None:
    """Trade a refresh token for a new one (the old one stops working);
    ``None`` when it is unknown, revoked or expired."""
    async with db.transaction() as tx:
        row = await tx.fetchrow(
            "SELECT s.id AS session_id, u.* FROM sessions s JOIN users u ON u.id = s.user_id "
            "WHERE s.refresh_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2",
            secret_hash(refresh), now,
        )
        if row is None:
            return None
        new_refresh = new_secret("rt")
        await tx.execute(
            "UPDATE sessions SET refresh_hash = $2, expires_at = $3 WHERE id = $1",
            row["session_id"], secret_hash(new_refresh), now + ttl_s,
        )
    return row, str(row["session_id"]), new_refresh


async def revoke_session(db: Database, session_id: str, now: float) -> None:
    await db.execute("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", session_id, now)


async def revoke_by_refresh(db: Database, user_id: str, refresh: str, now: float) -> None:
    await db.execute(
        "UPDATE sessions SET revoked_at = $3 WHERE user_id = $1 AND refresh_hash = $2 AND revoked_at IS NULL",
        user_id, secret_hash(refresh), now,
    )


async def session_user(db: Database, session_id: str, user_id: str, now: float) -> Row | None:
    """The user behind a live (unrevoked, unexpired) session."""
    return await db.fetchrow(
        "SELECT u.id, u.username, u.role, u.banned FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.id = $1 AND u.id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3",
        session_id, user_id, now,
    )


# -- API keys ---------------------------------------------------------------------
def api_key_view(row: Row, key: str | None = None) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "created_at": row["created_at"], "revoked_at": row["revoked_at"],
            "last_used_at": row["last_used_at"], "key": key}


async def create_api_key(db: Database, actor: Actor, name: str, now: float) -> tuple[Row, str]:
    key_id, key = new_id(), new_secret("fk")
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO api_keys (id, name, key_hash, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
            key_id, name, secret_hash(key), actor.id, now,
        )
        await audit.record(tx, actor, "api_key.create", "api_key", key_id, now, {"name": name})
        row = await tx.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
    assert row is not None
    return row, key


async def list_api_keys(db: Database, limit: int, offset: int) -> list[Row]:
    return await db.fetch("SELECT * FROM api_keys ORDER BY created_at, id LIMIT $1 OFFSET $2", limit, offset)


async def revoke_api_key(db: Database, actor: Actor, key_id: str, now: float) -> None:
    async with db.transaction() as tx:
        if await tx.execute("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                            key_id, now) == 0:
            raise NotFound(f"no active API key {key_id!r}")
        await audit.record(tx, actor, "api_key.revoke", "api_key", key_id, now)


async def api_key_by_secret(db: Database, key: str, now: float) -> Row | None:
    row = await db.fetchrow("SELECT * FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", secret_hash(key))
    if row is not None and (row["last_used_at"] is None or now - row["last_used_at"] > 60):
        await db.execute("UPDATE api_keys SET last_used_at = $2 WHERE id = $1", row["id"], now)
    return row


# -- TOTP ---------------------------------------------------------------------
def _totp_context(user_id: str) -> str:
    return f"users.totp_secret:{user_id}"


def totp_secret(row: Row, sealer: Sealer) -> str | None:
    """The user's TOTP seed, opened from its sealed column (``None``: none)."""
    if row["totp_secret"] is None:
        return None
    return sealer.open(str(row["totp_secret"]), _totp_context(str(row["id"])))


async def set_totp(db: Database, actor: Actor, user_id: str, secret: str | None, enabled: bool, now: float,
                   sealer: Sealer) -> None:
    """Store a TOTP seed (sealed; ``None`` clears it) and whether it is on."""
    stored = None if secret is None else sealer.seal(secret, _totp_context(user_id))
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE users SET totp_secret = $2, totp_enabled = $3, updated_at = $4 WHERE id = $1",
            user_id, stored, enabled, now,
        )
        if secret is None or enabled:
            await audit.record(tx, actor, "user.totp_" + ("enable" if enabled else "disable"), "user", user_id, now)


async def use_totp_step(db: Database, user_id: str, step: int) -> bool:
    """Record the time step of an accepted code; ``False`` when a code of
    that step (or a later one) was already used, so a code works once."""
    return await db.execute(
        "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND totp_last_step < $2", user_id, step
    ) == 1


async def seal_clear_totp(db: Database, sealer: Sealer) -> int:
    """Seal TOTP seeds stored in clear by earlier versions; returns how many
    were sealed."""
    rows = await db.fetch("SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL")
    sealed = 0
    for row in rows:
        if not Sealer.is_sealed(row["totp_secret"]):
            sealed += await db.execute(
                "UPDATE users SET totp_secret = $2 WHERE id = $1 AND totp_secret = $3",
                row["id"], sealer.seal(row["totp_secret"], _totp_context(row["id"])), row["totp_secret"],
            )
    return sealed
