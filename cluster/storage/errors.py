"""Errors of the ``cluster.storage`` package.

Everything here derives from :class:`StorageError`. The caller's misuse
(:class:`InvalidKeyError`: a key that could escape the storage root or
that S3 and a file system would read differently) is kept apart from the
backend failing (:class:`StorageUnavailableError`: the disk or the bucket
cannot be reached now; trying later may work) and from a missing object
(:class:`ObjectNotFoundError`).

:class:`SpoolFullError` is what a recorder sees when the bucket has been
down so long that the bounded spool filled: it turns it into "recording
stopped: spool full" and never waits for room.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error this package raises."""


class InvalidKeyError(StorageError, ValueError):
    """An object key or prefix outside the key rule (see
    :mod:`cluster.storage.keys`). Our caller's bug or hostile input, never
    the backend's doing."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """No object under this key."""


class StorageUnavailableError(StorageError, ConnectionError):
    """The backend did not answer or answered with a transient error, after
    every retry. The message names the operation and the key."""


class StorageRequestError(StorageError):
    """The backend refused a request for a reason retrying will not fix
    (access denied, no such bucket, a malformed request)."""


class SpoolFullError(StorageError):
    """The upload spool has no room for this file: the backend has been
    slow or down for long enough to fill ``storage.spool_max_bytes``. The
    file was not taken; nothing already spooled is lost."""
