"""Sealing secrets that earlier versions stored in clear.

Each table that keeps a secret (TOTP seeds, webhook signing secrets) binds
its sealed values to the row they belong to; this walks one column, seals
every value still in clear, and leaves sealed ones alone, so running it on
every start is harmless.
"""

from __future__ import annotations

from collections.abc import Callable

from control_api.db import Database
from drm.keystore import Sealer


async def seal_clear_column(
    db: Database, sealer: Sealer, table: str, column: str, context: Callable[[str], str]
) -> int:
    """Seal the values of ``table.column`` still in clear, each bound to
    ``context(row id)``; returns how many were sealed. ``table`` and
    ``column`` are this package's own names, never input."""
    rows = await db.fetch(f"SELECT id, {column} AS secret FROM {table} WHERE {column} IS NOT NULL")
    sealed = 0
    for row in rows:
        if not Sealer.is_sealed(row["secret"]):
            # Only if nobody changed it meanwhile (another node sealing too).
            sealed += await db.execute(
                f"UPDATE {table} SET {column} = $2 WHERE id = $1 AND {column} = $3",
                row["id"], sealer.seal(row["secret"], context(row["id"])), row["secret"],
            )
    return sealed
