"""A bounded local spool in front of a storage backend.

The live path (a recorder finishing a segment) hands a file to
:meth:`SpooledUploader.submit_file` or :meth:`~SpooledUploader.submit_bytes`:
it is written to the spool directory on local disk and synced, and the call
returns; it never waits for the backend. Worker threads upload spooled
files and remove each only once the backend has confirmed it. Files are
shared out among the workers by their key's directory (``rec/s1/720p``):
the files of one directory go up one after another in the order they were
submitted, while different directories upload side by side. While the backend is
slow or down each worker retries the file at the head of its queue with
exponential backoff and jitter, for as long as it takes; nothing is dropped.

The spool is bounded by ``max_bytes``. When a file does not fit, the
submit raises :class:`~cluster.storage.errors.SpoolFullError` at once
(the recorder turns it into "recording stopped: spool full"); the live
stream and the files already spooled are unaffected.

Crash safety: an entry is a data file ``NNN.data`` and a manifest
``NNN.json`` (key, size, time of submission), each written to a hidden
temporary name, synced and renamed, the manifest last. A submit that
returned has both; at start-up every complete entry is uploaded in order,
and leftovers of a submit that never returned (no manifest) are removed.
After a confirmed upload the manifest goes first, then the data.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import errno
import json
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cluster.storage.base import Storage
from cluster.storage.config import RetrySettings
from cluster.storage.errors import SpoolFullError, StorageError, StorageUnavailableError
from cluster.storage.keys import check_key
from cluster.storage.local import fsync_dir
from cluster.storage.retry import Backoff

log = logging.getLogger(__name__)
COPY_CHUNK = 1024 * 1024
FAILURE_LOG_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    seq: int
    key: str
    size: int
    created: float
    """Wall-clock time of submission (it survives restarts)."""


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A consistent snapshot of the spool, for metrics and status."""

    files: int
    bytes: int
    oldest_age_s: float
    """How long the oldest spooled file has waited: the upload lag."""
    uploaded_files: int
    uploaded_bytes: int
    upload_failures: int
    rejected_full: int
    lost: int
    """Spooled files that could not be read back (the spool disk's fault)."""
    recovered: int
    """Files found in the spool at start-up."""


class SpooledUploader:
    """Writes to ``storage`` through a bounded spool in ``spool_dir``.

    Call :meth:`start` once (it recovers what an earlier run left and starts
    the worker), submit files, and :meth:`close` at shutdown; files still
    spooled then are uploaded by the next start. ``on_uploaded(key, size)``
    runs in the worker thread after each confirmed upload.
    """

    def __init__(
        self,
        storage: Storage,
        spool_dir: Path,
        max_bytes: int,
        retry: RetrySettings,
        *,
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_uploaded: Callable[[str, int], None] | None = None,
        workers: int = 1,
    ) -> None:
        if max_bytes < 1:
            raise ValueError("spool max_bytes must be positive")
        if workers < 1:
            raise ValueError("spool workers must be at least 1")
        self.storage = storage
        self.spool_dir = Path(spool_dir)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._clock = clock
        self._on_uploaded = on_uploaded
        self._stop = threading.Event()
        self._backoff = Backoff(retry, rng=rng)
        self._cond = threading.Condition()
        self._queues: tuple[collections.deque[SpoolEntry], ...] = tuple(collections.deque() for _ in range(workers))
        """One queue per worker, each in sequence order."""
        self._bytes = 0
        self._reserved = 0
        self._next_seq = 0
        self._threads: builtins.list[threading.Thread] = []
        self._busy_seq: builtins.list[int | None] = [None] * workers
        """The entry each worker is uploading (the head of its queue)."""
        self._uploaded_files = 0
        self._uploaded_bytes = 0
        self._failures = 0
        self._rejected = 0
        self._lost = 0
        self._recovered = 0
        self._last_failure_log = -FAILURE_LOG_INTERVAL_S
        self._failing_since: float | None = None

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Recover the spool directory and start the worker thread."""
        if self._threads:
            raise RuntimeError("SpooledUploader.start called twice")
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._recover()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"storage-spool-{i}", daemon=True)
            for i in range(len(self._queues))
        ]
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker (after the upload in progress, if any). Spooled
        files stay on disk for the next start."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @property
    def running(self) -> bool:
        """Whether the worker threads are alive (started and not closed)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Block until every spooled file is uploaded; ``False`` on timeout.
        For shutdown and tests; never call it on the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while any(self._queues):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # -- submitting ---------------------------------------------------------

    def submit_bytes(self, key: str, data: bytes) -> SpoolEntry:
        """Spool ``data`` for upload under ``key``. Blocks only for a local
        write and fsync; raises SpoolFullError when it does not fit."""
        return self._submit(key, len(data), lambda out: out.write(data))

    def submit_file(self, key: str, path: Path) -> SpoolEntry:
        """Spool a copy of the file at ``path`` (the caller keeps its file)."""
        size = os.stat(path).st_size

        def copy(out: BinaryIO) -> None:
            with open(path, "rb") as src:
                copied = 0
                while chunk := src.read(COPY_CHUNK):
                    if copied + len(chunk) > size:
                        raise StorageError(f"{path} grew while it was spooled")
                    out.write(chunk)
                    copied += len(chunk)
            if copied != size:
                raise StorageError(f"{path} shrank while it was spooled")

        return self._submit(key, size, copy)

    async def submit_bytes_async(self, key: str, data: bytes) -> SpoolEntry:
        """:meth:`submit_bytes` in a worker thread, for the event loop."""
        return await asyncio.to_thread(self.submit_bytes, key, data)

    async def submit_file_async(self, key: str, path: Path) -> SpoolEntry:
        """:meth:`submit_file` in a worker thread, for the event loop."""
        return await asyncio.to_thread(self.submit_file, key, path)

    def _submit(self, key: str, size: int, fill: Callable[[BinaryIO], object]) -> SpoolEntry:
        check_key(key)
        with self._cond:
            if not self._threads or self._stop.is_set():
                raise RuntimeError("the spooled uploader is not running (call start() first; not after close())")
            if self._bytes + self._reserved + size > self.max_bytes:
                self._rejected += 1
                raise SpoolFullError(
                    f"spool full: {key!r} ({size} bytes) does not fit in {self.spool_dir} "
                    f"({self._bytes + self._reserved} of {self.max_bytes} bytes used; the backend is behind)"
                )
            self._reserved += size
            seq = self._next_seq
            self._next_seq += 1
        entry = SpoolEntry(seq, key, size, self._clock())
        try:
            self._write_entry(entry, fill)
        except BaseException as exc:
            with self._cond:
                self._reserved -= size
                if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                    self._rejected += 1
            self._remove_files(seq)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise SpoolFullError(f"spool full: the disk of {self.spool_dir} has no room for {key!r}") from exc
            if isinstance(exc, OSError) and exc.filename is not None and Path(exc.filename).parent == self.spool_dir:
                raise StorageUnavailableError(f"cannot write {key!r} to the spool {self.spool_dir}: {exc}") from exc
            raise
        with self._cond:
            self._reserved -= size
            self._bytes += size
            self._insert(entry)
            self._cond.notify_all()
        return entry

    def _insert(self, entry: SpoolEntry) -> None:
        """Queue ``entry`` in sequence order (submits may finish their
        writes out of order)."""
        shard = self._shard(entry.key)
        queue = self._queues[shard]
        if not queue or queue[-1].seq < entry.seq:
            queue.append(entry)
            return
        index = len(queue)
        while index > 0 and queue[index - 1].seq > entry.seq:
            index -= 1
        if index == 0 and queue[0].seq == self._busy_seq[shard]:
            index = 1  # never displace the entry being uploaded
        queue.insert(index, entry)

    def _shard(self, key: str) -> int:
        """The worker for ``key``: one per directory, so that files of one
        directory keep their order."""
        return zlib.crc32(key.rpartition("/")[0].encode()) % len(self._queues)

    def _paths(self, seq: int) -> tuple[Path, Path]:
        stem = f"{seq:020d}"
        return self.spool_dir / f"{stem}.data", self.spool_dir / f"{stem}.json"

    def _write_entry(self, entry: SpoolEntry, fill: Callable[[BinaryIO], object]) -> None:
        data_path, manifest_path = self._paths(entry.seq)
        manifest = json.dumps({"key": entry.key, "size": entry.size, "created": entry.created}).encode()
        for final, writer in ((data_path, fill), (manifest_path, lambda out: out.write(manifest))):
            tmp = final.with_name("." + final.name + ".tmp")
            with open(tmp, "wb") as out:
                writer(out)
                out.flush()
                if self.fsync:
                    os.fsync(out.fileno())
            os.replace(tmp, final)
        if self.fsync:
            fsync_dir(self.spool_dir)

    def _remove_files(self, seq: int) -> None:
        data_path, manifest_path = self._paths(seq)
        for path in (manifest_path, data_path):
            for p in (path, path.with_name("." + path.name + ".tmp")):
                p.unlink(missing_ok=True)

    def _recover(self) -> None:
        entries: builtins.list[SpoolEntry] = []
        manifests: set[int] = set()
        for path in sorted(self.spool_dir.iterdir()):
            name = path.name
            if name.startswith("."):
                path.unlink(missing_ok=True)  # a write that never finished
                continue
            stem, _, suffix = name.partition(".")
            if not stem.isdigit() or suffix not in ("data", "json"):
                log.warning("storage spool: ignoring a foreign file %s", path)
                continue
            if suffix != "json":
                continue
            seq = int(stem)
            manifests.add(seq)
            try:
                meta = json.loads(path.read_bytes())
                entry = SpoolEntry(seq, check_key(meta["key"]), int(meta["size"]), float(meta["created"]))
                size = self._paths(seq)[0].stat().st_size
            except (OSError, ValueError, KeyError, TypeError, StorageError) as exc:
                log.error("storage spool: entry %s is unreadable and cannot be uploaded: %s", path, exc)
                self._lost += 1
                self._remove_files(seq)
                continue
            if size != entry.size:
                log.error("storage spool: %s holds %d bytes, its manifest says %d; not uploaded", path, size,
                          entry.size)
                self._lost += 1
                self._remove_files(seq)
                continue
            entries.append(entry)
        for path in self.spool_dir.glob("*.data"):
            stem = path.name.partition(".")[0]
            if stem.isdigit() and int(stem) not in manifests:
                path.unlink(missing_ok=True)  # a submit that never returned
        entries.sort(key=lambda e: e.seq)
        with self._cond:
            for entry in entries:
                self._queues[self._shard(entry.key)].append(entry)
            self._bytes += sum(e.size for e in entries)
            self._recovered = len(entries)
            self._next_seq = max((e.seq for e in entries), default=-1) + 1
            self._next_seq = max(self._next_seq, max(manifests, default=-1) + 1)
        if entries:
            log.info("storage spool: %d files (%d bytes) left by an earlier run will be uploaded", len(entries),
                     self._bytes)

    # -- the worker ---------------------------------------------------------

    def _run(self, shard: int) -> None:
        queue = self._queues[shard]
        attempt = 0
        while not self._stop.is_set():
            with self._cond:
                while not queue and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                entry = queue[0]
                self._busy_seq[shard] = entry.seq
            data_path, _ = self._paths(entry.seq)
            try:
                self.storage.put_file(entry.key, data_path)
            except FileNotFoundError as exc:
                if exc.filename is not None and Path(exc.filename) == data_path:
                    self._drop_lost(entry, exc)
                    attempt = 0
                    continue
                attempt = self._failed(entry, exc, attempt)
                continue
            except StorageError as exc:
                attempt = self._failed(entry, exc, attempt)
                continue
            except Exception as exc:
                log.exception("storage spool: uploading %r failed unexpectedly", entry.key)
                attempt = self._failed(entry, exc, attempt)
                continue
            self._done(entry)
            attempt = 0

    def _failed(self, entry: SpoolEntry, exc: Exception, attempt: int) -> int:
        now = time.monotonic()
        with self._cond:
            self._failures += 1
            if self._failing_since is None:
                self._failing_since = now
            should_log = now - self._last_failure_log >= FAILURE_LOG_INTERVAL_S
            if should_log:
                self._last_failure_log = now
            files, size = sum(map(len, self._queues)), self._bytes
        if should_log:
            log.warning("storage: upload of %r failed (%s); %d files (%d bytes) wait in the spool and are retried",
                        entry.key, exc, files, size)
        self._stop.wait(self._backoff.delay(attempt))
        return attempt + 1

    def _drop_lost(self, entry: SpoolEntry, exc: OSError) -> None:
        log.error("storage spool: the spooled file of %r is gone (%s); it cannot be uploaded", entry.key, exc)
        self._remove_files(entry.seq)
        with self._cond:
            self._lost += 1
            self._pop(entry)

    def _done(self, entry: SpoolEntry) -> None:
        self._remove_files(entry.seq)
        with self._cond:
            self._uploaded_files += 1
            self._uploaded_bytes += entry.size
            self._pop(entry)
            recovered_after = self._failing_since
            self._failing_since = None
            files = sum(map(len, self._queues))
        if recovered_after is not None:
            log.info("storage: the backend takes uploads again after %.1f s; %d files still spooled",
                     time.monotonic() - recovered_after, files)
        if self._on_uploaded is not None:
            self._on_uploaded(entry.key, entry.size)

    def _pop(self, entry: SpoolEntry) -> None:
        """Remove ``entry`` from the queue; the caller holds the lock."""
        shard = self._shard(entry.key)
        self._queues[shard].remove(entry)
        self._bytes -= entry.size
        self._busy_seq[shard] = None
        self._cond.notify_all()

    # -- reading the state --------------------------------------------------

    def stats(self) -> SpoolStats:
        with self._cond:
            oldest = min((q[0].created for q in self._queues if q), default=None)
            return SpoolStats(
                files=sum(map(len, self._queues)),
                bytes=self._bytes,
                oldest_age_s=0.0 if oldest is None else max(0.0, self._clock() - oldest),
                uploaded_files=self._uploaded_files,
                uploaded_bytes=self._uploaded_bytes,
                upload_failures=self._failures,
                rejected_full=self._rejected,
                lost=self._lost,
                recovered=self._recovered,
            )
