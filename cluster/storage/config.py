"""Settings of storage: where recordings and VOD assets are kept and how
they are served.

The section is ``[storage]``; every setting also reads from
``FANZ_STORAGE_<NAME>``. S3 credentials are never settings: boto3 reads
them from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) or its other standard
places (``AWS_PROFILE``, instance roles).
"""

from __future__ import annotations

import enum
import urllib.parse
from dataclasses import dataclass

from cluster.storage.errors import InvalidKeyError
from cluster.storage.keys import check_prefix
from engine.settings import doc

MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB
"""S3's smallest part of a multipart upload (all but the last)."""


class Backend(enum.Enum):
    LOCAL = "local"
    """Files under storage.root on this machine."""
    S3 = "s3"
    """An S3-compatible object store (MinIO, AWS S3, ...)."""


class ServeMode(enum.Enum):
    ENGINE = "engine"
    """Players fetch stored objects from the engine, which reads the backend."""
    PRESIGNED = "presigned"
    """Players are redirected to a presigned GET URL of the object store."""


class AddressingStyle(enum.Enum):
    PATH = "path"
    VIRTUAL = "virtual"


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Exponential backoff with full jitter: try ``n`` waits a random time
    in ``[0, min(max_delay_s, base_delay_s * 2**n)]``."""

    attempts: int
    base_delay_s: float
    max_delay_s: float

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("retry delays must satisfy 0 <= base_delay_s <= max_delay_s")

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed try number ``attempt`` (0-based)."""
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** min(attempt, 62)))


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: Backend = doc(
        "Where stored media is kept: local (files under storage.root) or s3 (an S3-compatible object store: "
        "storage.s3_endpoint, storage.s3_bucket; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
        "boto3's other standard places; needs the [cluster] extra).",
        Backend.LOCAL,
    )
    root: str = doc("Directory of the local backend. Empty: DATA_DIR/storage.", "")
    s3_endpoint: str = doc(
        "URL of the S3 service (http or https), such as a MinIO server; required with storage.backend = s3 "
        "(for AWS S3 write its regional endpoint, https://s3.REGION.amazonaws.com).",
        "",
    )
    s3_bucket: str = doc("Bucket that holds the objects; required with storage.backend = s3.", "")
    s3_region: str = doc("Region the requests are signed for.", "us-east-1")
    s3_prefix: str = doc("Prefix put before every object key in the bucket, such as fanz/ (empty: none).", "")
    s3_addressing_style: AddressingStyle = doc(
        "path (http://HOST/BUCKET/KEY, what MinIO expects) or virtual (http://BUCKET.HOST/KEY).", AddressingStyle.PATH
    )
    multipart_threshold_bytes: int = doc("Files at least this large are uploaded to S3 in parts.", 64 * MIB)
    multipart_part_bytes: int = doc("Size of each part of a multipart upload (at least 5 MiB).", 16 * MIB)
    connect_timeout_s: float = doc("Longest wait to connect to the S3 service, in seconds.", 5.0)
    read_timeout_s: float = doc("Longest wait for an S3 answer to go on, in seconds.", 30.0)
    retry_attempts: int = doc("Tries of one S3 request before it fails (transient errors only).", 4)
    retry_base_delay_s: float = doc(
        "First wait before a retry, in seconds; each further wait may double (with random jitter).", 0.2
    )
    retry_max_delay_s: float = doc(
        "Longest wait between tries, in seconds; also the spool's longest wait before it tries the backend again.",
        30.0,
    )
    spool_dir: str = doc(
        "Directory where files wait (on local disk, synced) until the backend has them. Empty: DATA_DIR/spool.", ""
    )
    spool_max_bytes: int = doc(
        "Most bytes the spool holds; when full, new files are refused at once (SpoolFullError) rather than "
        "waiting for the backend; what is spooled already is kept.",
        2 * 1024 * MIB,
    )
    upload_workers: int = doc(
        "Threads uploading spooled files side by side; files of one directory (one rendition of one recording) "
        "always go up one after another, in order.",
        4,
    )
    serve_mode: ServeMode = doc(
        "How stored files are served: engine (the engine reads and sends them) or presigned (players are "
        "redirected to a presigned S3 URL; with the local backend files are always served by the engine).",
        ServeMode.ENGINE,
    )
    presign_expiry_s: int = doc("Lifetime of a presigned URL, in seconds.", 300)

    def __post_init__(self) -> None:
        if self.backend is Backend.S3:
            url = urllib.parse.urlsplit(self.s3_endpoint)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError("storage.backend = s3 needs storage.s3_endpoint, an http or https URL")
            if not self.s3_bucket:
                raise ValueError("storage.backend = s3 needs storage.s3_bucket")
        if self.s3_prefix:
            try:
                check_prefix(self.s3_prefix)
            except InvalidKeyError:
                raise ValueError(f"storage.s3_prefix {self.s3_prefix!r} is not a valid prefix") from None
        if self.multipart_part_bytes < MIN_PART_BYTES:
            raise ValueError("storage.multipart_part_bytes must be at least 5 MiB (5242880)")
        if self.multipart_threshold_bytes < MIN_PART_BYTES:
            raise ValueError("storage.multipart_threshold_bytes must be at least 5 MiB (5242880)")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("storage.connect_timeout_s and storage.read_timeout_s must be positive")
        if not 1 <= self.upload_workers <= 64:
            raise ValueError("storage.upload_workers must be between 1 and 64")
        if self.spool_max_bytes < 1:
            raise ValueError("storage.spool_max_bytes must be positive")
        if not 1 <= self.presign_expiry_s <= 7 * 24 * 3600:
            raise ValueError("storage.presign_expiry_s must be between 1 and 604800 (7 days)")
        try:
            RetrySettings(self.retry_attempts, self.retry_base_delay_s, self.retry_max_delay_s)
        except ValueError as exc:
            raise ValueError(f"storage.retry_*: {exc}") from None

    @property
    def retry(self) -> RetrySettings:
        return RetrySettings(self.retry_attempts, self.retry_base_delay_s, self.retry_max_delay_s)
