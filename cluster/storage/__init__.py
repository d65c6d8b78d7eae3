"""Storage of recordings and VOD assets: local disk or S3-compatible
object storage behind one interface, with a bounded spool that keeps slow
or absent buckets off the live path.

The public API: :class:`Storage` (the interface), :class:`LocalStorage`,
``cluster.storage.s3.S3Storage`` (imported from its module: it needs
boto3), :class:`SpooledUploader`, :class:`StorageConfig`,
:func:`open_storage` / :func:`open_uploader`, :func:`spool_metrics` and the
errors.
"""

from __future__ import annotations

from cluster.storage.base import ObjectInfo, Storage
from cluster.storage.config import Backend, RetrySettings, ServeMode, StorageConfig
from cluster.storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    SpoolFullError,
    StorageError,
    StorageRequestError,
    StorageUnavailableError,
)
from cluster.storage.keys import check_key, check_prefix
from cluster.storage.local import LocalStorage
from cluster.storage.metrics import spool_metrics
from cluster.storage.setup import open_storage, open_uploader
from cluster.storage.spool import SpooledUploader, SpoolEntry, SpoolStats

__all__ = [
    "Backend",
    "InvalidKeyError",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFoundError",
    "RetrySettings",
    "ServeMode",
    "SpoolEntry",
    "SpoolFullError",
    "SpoolStats",
    "SpooledUploader",
    "Storage",
    "StorageConfig",
    "StorageError",
    "StorageRequestError",
    "StorageUnavailableError",
    "check_key",
    "check_prefix",
    "open_storage",
    "open_uploader",
    "spool_metrics",
]
