"""One small SQL layer over SQLite (aiosqlite) and PostgreSQL (asyncpg).

Why our own layer: the store needs five calls (fetch, fetchrow, fetchval,
execute, transaction) and portable SQL, not an ORM. Queries are written once
with PostgreSQL's ``$1`` placeholders; for SQLite they become ``?1``, which
SQLite reads the same way. Booleans are stored as 0/1 integers and times as
float seconds since the epoch, so both back ends return the same Python
values. Migrations are numbered ``.sql`` files beside this module, applied in
order inside a transaction and recorded in ``schema_migrations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg

from control_api.errors import ApiConfigError, StoreError
from drm.keystore import make_private_dir

Row = dict[str, Any]

_PLACEHOLDER = re.compile(r"\$(\d+)")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class IntegrityError(StoreError):
    """A unique or foreign-key constraint refused a write."""


class Database(Protocol):
    """What the store needs from a database; both back ends provide it."""

    dialect: str

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any) -> int: ...
    def transaction(self) -> Any:
        """An async context manager yielding a :class:`Database` bound to one
        transaction: committed on normal exit, rolled back on an exception."""
        ...
    async def close(self) -> None: ...


def _norm(args: Sequence[Any]) -> list[Any]:
    return [int(a) if isinstance(a, bool) else a for a in args]


class _RowQueries:
    """``fetchrow`` and ``fetchval`` built on a back end's ``fetch``, so
    both back ends answer them the same way."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        raise NotImplementedError

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))


class _SqliteConn(_RowQueries):
    """Statements on one aiosqlite connection; the caller holds the lock."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            async with self._conn.execute(_PLACEHOLDER.sub(r"?\1", sql), _norm(args)) as cur:
                return [dict(r) for r in await cur.fetchall()]
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            async with self._conn.execute(_PLACEHOLDER.sub(r"?\1", sql), _norm(args)) as cur:
                return int(cur.rowcount)
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e


def _private_database_file(path: Path) -> None:
    """Make the SQLite file, and the WAL and shared-memory files SQLite
    keeps beside it, readable by the engine's user alone: the file is created
    here with mode 0600 (SQLite gives its -wal and -shm files the database
    file's mode), and files an earlier version left 0644 are narrowed."""
    if not path.parent.exists():
        make_private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(file.stat().st_mode) != 0o600:
                os.chmod(file, 0o600)


class SqliteDatabase:
    """An embedded SQLite file: one connection (aiosqlite runs it on its own
    thread) and a lock, so a transaction never interleaves with another
    request's statements."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._inner = _SqliteConn(conn)
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        if path != ":memory:":
            _private_database_file(Path(path))
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
            await conn.execute(f"PRAGMA {pragma}")
        return cls(conn)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            return await self._inner.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._lock:
            return await self._inner.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._lock:
            return await self._inner.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await self._inner.execute(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteConn]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._inner
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def close(self) -> None:
        await self._conn.close()


class _PgConn(_RowQueries):
    """Statements on one asyncpg connection or on the pool."""

    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Pool | asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return [dict(r) for r in await self._conn.fetch(sql, *_norm(args))]
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status = await self._conn.execute(sql, *_norm(args))
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0


class PostgresDatabase(_PgConn):
    """PostgreSQL through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    @classmethod
    async def open(cls, url: str, pool_size: int) -> PostgresDatabase:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size)
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgConn]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgConn(conn)

    async def close(self) -> None:
        await self._pool.close()


async def connect(url: str, pool_size: int = 10) -> SqliteDatabase | PostgresDatabase:
    """Open the database a URL names; run :func:`migrate` next."""
    if url.startswith("sqlite:///"):
        return await SqliteDatabase.open(url[len("sqlite:///") :] or ":memory:")
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDatabase.open(url, pool_size)
    raise ApiConfigError(f"unsupported database URL scheme in {url.split(':')[0]!r}")


def migration_files() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration shipped with the package,
    in order."""
    out = []
    for entry in resources.files("control_api.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            out.append((int(m.group(1)), entry.name, entry.read_text()))
    out.sort()
    return out


def split_statements(sql: str) -> list[str]:
    """Split a migration on semicolons that end a line (migrations keep no
    semicolons inside literals), dropping ``--`` comment lines."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip()]


async def migrate(db: SqliteDatabase | PostgresDatabase) -> list[int]:
    """Apply the migrations this database lacks; returns their versions.

    On PostgreSQL an advisory lock keeps two starting nodes from migrating
    at once."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at DOUBLE PRECISION NOT NULL)"
    )
    applied: list[int] = []
    for version, name, sql in migration_files():
        async with db.transaction() as tx:
            if tx.dialect == "postgresql":
                await tx.execute("SELECT pg_advisory_xact_lock(7301)")
            if await tx.fetchval("SELECT version FROM schema_migrations WHERE version = $1", version) is not None:
                continue
            for statement in split_statements(sql):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                version, name, time.time(),
            )
            applied.append(version)
    return applied
