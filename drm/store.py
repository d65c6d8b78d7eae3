"""The content key store: every content key this node made or was given,
sealed, in one SQLite file in the data directory.

No content key is ever written in clear: each is sealed with AES-256-GCM
(:class:`drm.keystore.Sealer`) under a key derived from the engine's master
key for this purpose alone, bound to its content ID, key period and key ID,
so a sealed key copied into another row does not open there. Key IDs, IVs
and DRM system data (``pssh`` boxes, ``skd://`` URIs) are not secret and are
kept as they are.

Several threads and several worker processes sharing the data directory may
ask for the same key period at once: :meth:`ContentKeyStore.put_if_absent`
is one ``INSERT ... ON CONFLICT DO NOTHING`` followed by a read, so whoever
inserts first wins and every caller gets the winner's key. SQLite's journal
(WAL, ``synchronous=FULL``) makes a write either whole or absent after a
crash. Opened keys are cached in memory (bounded), since every key request
of every viewer looks one up.

All methods block on the disk: callers on an event loop run them in a
worker thread.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, TypeVar

from drm.errors import ContentKeyStoreError, SealedDataError
from drm.keystore import KeyStore, Sealer, make_private_dir
from drm.model import ContentKey, DrmSystemData, KeyPeriod

STORE_DIR = "drm"
STORE_FILE = "content_keys.sqlite3"
SEALING_PURPOSE = "drm.content_keys"
CACHE_SIZE = 4096
K = TypeVar("K")
V = TypeVar("V")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS content_keys ("
    " content_id TEXT NOT NULL,"
    " period INTEGER NOT NULL,"
    " kid BLOB NOT NULL,"
    " iv BLOB NOT NULL,"
    " sealed_key TEXT NOT NULL,"
    " systems TEXT NOT NULL,"
    " created_at REAL NOT NULL,"
    " PRIMARY KEY (content_id, period))",
    "CREATE INDEX IF NOT EXISTS content_keys_kid ON content_keys (kid)",
)


def _seal_context(content_id: str, period: int, kid: bytes) -> str:
    return f"content-key\x00{content_id}\x00{period}\x00{kid.hex()}"


def systems_to_json(systems: tuple[DrmSystemData, ...]) -> str:
    def b64(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode()

    return json.dumps([
        {"system_id": str(s.system_id), "pssh": b64(s.pssh), "hls_key_format": s.hls_key_format,
         "hls_key_uri": s.hls_key_uri}
        for s in systems
    ])


def systems_from_json(text: str) -> tuple[DrmSystemData, ...]:
    out = []
    for item in json.loads(text):
        pssh = item.get("pssh")
        out.append(DrmSystemData(
            system_id=uuid.UUID(item["system_id"]),
            pssh=base64.b64decode(pssh) if pssh is not None else None,
            hls_key_format=item.get("hls_key_format"),
            hls_key_uri=item.get("hls_key_uri"),
        ))
    return tuple(out)


class ContentKeyStore:
    """Sealed content keys by content ID and key period."""

    def __init__(self, path: Path, sealer: Sealer, cache_size: int = CACHE_SIZE) -> None:
        self.path = path
        self._sealer = sealer
        self._lock = threading.Lock()
        self._cache_size = cache_size
        self._periods: OrderedDict[tuple[str, int], KeyPeriod] = OrderedDict()
        self._kids: OrderedDict[tuple[str, bytes], ContentKey] = OrderedDict()
        try:
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            raise ContentKeyStoreError(f"cannot open the content key store {path}: {exc}") from exc
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)

    @classmethod
    def open(cls, data_dir: Path, keys: KeyStore) -> ContentKeyStore:
        """The store in ``data_dir/drm``, created on first use, sealing under
        ``keys``' content-key purpose."""
        directory = data_dir / STORE_DIR
        try:
            make_private_dir(directory)
        except OSError as exc:
            raise ContentKeyStoreError(f"cannot create {directory}: {exc}") from exc
        return cls(directory / STORE_FILE, keys.sealer(SEALING_PURPOSE))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads ---------------------------------------------------------------
    def get(self, content_id: str, period: int) -> KeyPeriod | None:
        """The stored key period, or ``None`` when there is none yet."""
        with self._lock:
            cached = self._periods.get((content_id, period))
            if cached is not None:
                self._periods.move_to_end((content_id, period))
                return cached
            row = self._query(
                "SELECT content_id, period, kid, iv, sealed_key, systems FROM content_keys "
                "WHERE content_id = ? AND period = ?",
                (content_id, period),
            )
            return self._remember(row) if row is not None else None

    def find(self, content_id: str, kid: bytes) -> ContentKey | None:
        """The key with ID ``kid`` if it belongs to ``content_id``."""
        with self._lock:
            cached = self._kids.get((content_id, kid))
            if cached is not None:
                self._kids.move_to_end((content_id, kid))
                return cached
            row = self._query(
                "SELECT content_id, period, kid, iv, sealed_key, systems FROM content_keys "
                "WHERE kid = ? AND content_id = ? ORDER BY period LIMIT 1",
                (kid, content_id),
            )
            return self._remember(row).key if row is not None else None

    def highest_period(self, content_id: str) -> int | None:
        """The highest key period stored for ``content_id``: a packager that
        starts a new broadcast under an old name starts after it, so no key
        is used twice."""
        with self._lock:
            row = self._query("SELECT MAX(period) FROM content_keys WHERE content_id = ?", (content_id,))
        return None if row is None or row[0] is None else int(row[0])

    # -- writes ---------------------------------------------------------------
    def put_if_absent(self, period: KeyPeriod) -> KeyPeriod:
        """Store ``period`` unless the same content ID and period index is
        stored already; returns what is stored now (``period`` itself, or the
        one another thread or process stored first)."""
        key = period.key
        sealed = self._sealer.seal(key.key.hex(), _seal_context(period.content_id, period.index, key.kid))
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO content_keys (content_id, period, kid, iv, sealed_key, systems, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (content_id, period) DO NOTHING",
                    (period.content_id, period.index, key.kid, key.iv, sealed, systems_to_json(period.systems),
                     time.time()),
                )
            except sqlite3.Error as exc:
                raise ContentKeyStoreError(f"cannot write to the content key store {self.path}: {exc}") from exc
            row = self._query(
                "SELECT content_id, period, kid, iv, sealed_key, systems FROM content_keys "
                "WHERE content_id = ? AND period = ?",
                (period.content_id, period.index),
            )
            if row is None:
                raise ContentKeyStoreError(f"{self.path}: a key period just stored cannot be read back")
            return self._remember(row)

    # -- internals -------------------------------------------------------------
    def _query(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        try:
            row = self._db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise ContentKeyStoreError(f"cannot read the content key store {self.path}: {exc}") from exc
        return tuple(row) if row is not None else None

    def _remember(self, row: tuple[Any, ...]) -> KeyPeriod:
        """Open a row and cache it; the caller holds the lock."""
        content_id, index, kid, iv, sealed, systems = row
        kid, iv = bytes(kid), bytes(iv)
        try:
            key = bytes.fromhex(self._sealer.open(sealed, _seal_context(content_id, index, kid)))
            period = KeyPeriod(content_id, int(index), ContentKey(kid=kid, key=key, iv=iv), systems_from_json(systems))
        except SealedDataError as exc:
            raise ContentKeyStoreError(
                f"{self.path}: the key of {content_id!r} period {index} does not open with this master key"
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ContentKeyStoreError(f"{self.path}: the record of {content_id!r} period {index} is damaged") from exc
        _put(self._periods, (content_id, int(index)), period, self._cache_size)
        _put(self._kids, (content_id, kid), period.key, self._cache_size)
        return period


def _put(cache: OrderedDict[K, V], key: K, value: V, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
