"""Objects as files under one root directory (the default backend).

A key is a relative path under the root (the key rule guarantees it cannot
leave it). Writes are atomic: the bytes go to a hidden temporary file in
the target's directory, are flushed to disk (``fsync``), then renamed over
the target and the directory is synced, so a crash leaves either the old
object or the new one, never a torn file. Hidden files (names starting
with ``.``, which no key may have) are temporary files and never listed.
One difference from S3: an object cannot lie "under" another one (``a/b``
and ``a/b/c``); the engine's keys never do that, and such a put is refused
with InvalidKeyError.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cluster.storage.base import DEFAULT_CHUNK, ObjectInfo, range_bounds
from cluster.storage.errors import InvalidKeyError, ObjectNotFoundError, StorageUnavailableError
from cluster.storage.keys import check_key, check_prefix

COPY_CHUNK = 1024 * 1024
_Filler = Callable[[BinaryIO], object]


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    """Files under ``root`` (created, mode 0700, when missing). ``fsync``
    off trades crash safety for speed (tests, scratch data)."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageUnavailableError(f"cannot create the storage directory {self.root}: {exc}") from exc

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key).split("/"))
        # The key rule already rules out escapes; this guards the rule.
        if not path.is_relative_to(self.root):
            raise InvalidKeyError(f"storage key {key!r} leaves the storage root")
        return path

    # -- writing ------------------------------------------------------------

    def _write_atomic(self, key: str, fill: _Filler) -> ObjectInfo:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        except (NotADirectoryError, FileExistsError) as exc:
            # S3 keeps "a/b" and "a/b/c" side by side; a file system cannot.
            raise InvalidKeyError(f"storage key {key!r} lies under an existing object") from exc
        except OSError as exc:
            raise StorageUnavailableError(f"cannot write {key!r} under {self.root}: {exc}") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                if self.fsync:
                    os.fsync(out.fileno())
            if path.is_dir():
                raise InvalidKeyError(f"storage key {key!r} names a prefix that holds objects")
            os.replace(tmp, path)
            if self.fsync:
                fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageUnavailableError(f"cannot write {key!r} under {self.root}: {exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._info(key, path)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self._write_atomic(key, lambda out: out.write(data))

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        # The source file is the caller's: its own OSError (missing,
        # unreadable) is raised as it is.
        with open(path, "rb") as source:
            return self._write_atomic(key, lambda out: shutil.copyfileobj(source, out, COPY_CHUNK))

    # -- reading ------------------------------------------------------------

    def _info(self, key: str, path: Path) -> ObjectInfo:
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"no object {key!r}") from exc
        except OSError as exc:
            raise StorageUnavailableError(f"cannot stat {key!r}: {exc}") from exc
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r}")
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def stat(self, key: str) -> ObjectInfo:
        return self._info(key, self._path(key))

    def iter_range(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = open(path, "rb")  # closed by _chunks
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFoundError(f"no object {key!r}") from exc
        except OSError as exc:
            raise StorageUnavailableError(f"cannot read {key!r}: {exc}") from exc
        try:
            start, end = range_bounds(os.fstat(fh.fileno()).st_size, offset, length)
        except BaseException:
            fh.close()
            raise
        return self._chunks(fh, start, end, chunk_size)

    @staticmethod
    def _chunks(fh: BinaryIO, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        with fh:
            fh.seek(start)
            left = end - start
            while left > 0:
                chunk = fh.read(min(chunk_size, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return b"".join(self.iter_range(key, offset, length))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        # Walk only the directory the prefix's whole segments name.
        directory, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*directory.split("/")) if directory else self.root
        found: builtins.list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    found.append((key, Path(dirpath, name)))
        found.sort()
        for key, path in found:
            with contextlib.suppress(ObjectNotFoundError):  # deleted while listing
                yield self._info(key, path)

    # -- deleting -----------------------------------------------------------

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageUnavailableError(f"cannot delete {key!r}: {exc}") from exc
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        if not check_prefix(prefix):
            raise InvalidKeyError("delete_prefix needs a non-empty prefix (refusing to delete everything)")
        removed = 0
        for info in builtins.list(self.list(prefix)):
            self.delete(info.key)
            removed += 1
        return removed

    def _prune(self, directory: Path) -> None:
        """Remove directories that deleting left empty, up to the root."""
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def url(self, key: str) -> str | None:
        check_key(key)
        return None
