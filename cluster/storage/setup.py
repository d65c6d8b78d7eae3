"""Building the configured backend and spool (for the composition root).

The S3 backend needs boto3 (the ``cluster`` extra); :func:`open_storage`
imports it only when ``storage.backend = s3``, so the local backend and the
rest of the engine run without it.
"""

from __future__ import annotations

from pathlib import Path

from cluster.storage.base import Storage
from cluster.storage.config import Backend, StorageConfig
from cluster.storage.local import LocalStorage
from cluster.storage.spool import SpooledUploader


def storage_root(config: StorageConfig, data_dir: Path) -> Path:
    return Path(config.root) if config.root else data_dir / "storage"


def spool_dir(config: StorageConfig, data_dir: Path) -> Path:
    return Path(config.spool_dir) if config.spool_dir else data_dir / "spool"


def open_storage(config: StorageConfig, data_dir: Path) -> Storage:
    """The backend ``config`` names. With ``backend = s3`` and boto3 not
    installed this raises ``ModuleNotFoundError`` (name ``boto3``), which
    the caller turns into the feature being off."""
    if config.backend is Backend.LOCAL:
        return LocalStorage(storage_root(config, data_dir))
    from cluster.storage.s3 import S3Storage

    return S3Storage(config)


def open_uploader(config: StorageConfig, data_dir: Path, storage: Storage) -> SpooledUploader:
    """A spooled uploader to ``storage`` (not started: call ``start()``)."""
    return SpooledUploader(
        storage, spool_dir(config, data_dir), config.spool_max_bytes, config.retry, workers=config.upload_workers
    )
