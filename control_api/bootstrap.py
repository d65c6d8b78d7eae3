"""Creating the first admin, which no HTTP route may do (registration only
makes fans and creators). The ``fanz-media api`` command can call this."""

from __future__ import annotations

import asyncio

from control_api.config import ApiConfig
from control_api.db import connect, migrate
from control_api.security import hash_password
from control_api.store import users
from control_api.store.audit import Actor


async def create_admin(config: ApiConfig, username: str, password: str, now: float) -> str:
    """Create an admin account in the configured database (migrating it
    first); returns the new user's id."""
    config.check()
    db = await connect(config.resolved_database_url(), 1)
    try:
        await migrate(db)
        password_hash = await asyncio.to_thread(hash_password, password, config.scrypt_n)
        row = await users.create_user(db, Actor("system", None), username=username, password_hash=password_hash,
                                      role="admin", display_name=username, now=now)
        return str(row["id"])
    finally:
        await db.close()
