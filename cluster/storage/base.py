"""The storage interface that recordings and VOD assets are written to.

Two backends implement it: :class:`~cluster.storage.local.LocalStorage`
(files under the data directory, the default) and
:class:`~cluster.storage.s3.S3Storage` (any S3-compatible object store).
Every method blocks (disk or network I/O): call them from a worker thread
(``asyncio.to_thread``), never on the event loop. For writes on the live
path use :class:`~cluster.storage.spool.SpooledUploader`, which never waits
for the backend.

Keys follow :mod:`cluster.storage.keys`; a bad key raises
:class:`~cluster.storage.errors.InvalidKeyError` before any I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

DEFAULT_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a backend knows about one stored object."""

    key: str
    size: int
    modified: float
    """Last modification, seconds since the epoch."""


@runtime_checkable
class Storage(Protocol):
    """Objects under keys: put, read (whole or a byte range), stat, list,
    delete, and a URL to serve them by."""

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key`` (replacing any object there); when
        this returns, the object is durable and readers see it whole."""
        ...

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        """Store the file at ``path`` under ``key``; large files go up in
        parts. The source file is left as it is."""
        ...

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """The object's bytes from ``offset``, at most ``length`` of them
        (all the rest when ``None``). Reading past the end gives fewer bytes
        (or none); a missing key raises ObjectNotFoundError."""
        ...

    def iter_range(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]:
        """The same bytes as :meth:`read`, in chunks of at most
        ``chunk_size``, for serving large objects without holding them
        whole. ObjectNotFoundError is raised before the first chunk."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time; ObjectNotFoundError when missing."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix`` (which must
        not be empty); returns how many were removed."""
        ...

    def url(self, key: str) -> str | None:
        """Where a player may fetch the object directly (a presigned GET
        URL that expires), or ``None``: serve it through the engine."""
        ...


def range_bounds(size: int, offset: int, length: int | None) -> tuple[int, int]:
    """The half-open byte range ``[start, end)`` of an object of ``size``
    bytes that ``offset`` and ``length`` select, clipped to the object."""
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"invalid byte range: offset {offset}, length {length}")
    start = min(offset, size)
    end = size if length is None else min(size, start + length)
    return start, end
