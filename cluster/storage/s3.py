"""Objects in an S3-compatible object store (MinIO, AWS S3, ...) through
boto3.

Keys are stored under ``storage.s3_prefix`` in ``storage.s3_bucket``.
Every request is tried up to ``storage.retry_attempts`` times when it fails
in a way that may pass (no connection, a timeout, a 5xx or throttling
answer), waiting with exponential backoff and jitter in between; boto3's
own retries are off so that one policy decides. Files of at least
``storage.multipart_threshold_bytes`` go up as a multipart upload whose
parts are retried one by one; a failed upload is aborted so that no parts
are left behind to pay for.

Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` in the environment, a profile, an instance
role), never from the engine's settings. There is no default endpoint:
``storage.s3_endpoint`` must name the service.
"""

from __future__ import annotations

import builtins
import functools
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config

from cluster.storage.base import DEFAULT_CHUNK, ObjectInfo
from cluster.storage.config import ServeMode, StorageConfig
from cluster.storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageRequestError,
    StorageUnavailableError,
)
from cluster.storage.keys import check_key, check_prefix
from cluster.storage.retry import Backoff

T = TypeVar("T")
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT_CODES = {
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeoutException",
    "Throttling", "ThrottlingException", "TooManyRequestsException", "503", "500", "502", "504",
}
_TRANSIENT_ERRORS = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_transient(exc: Exception) -> bool:
    """Whether trying the same request again may succeed."""
    if isinstance(exc, _TRANSIENT_ERRORS):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        return _code(exc) in _TRANSIENT_CODES or _status(exc) >= 500
    return False


def make_client(config: StorageConfig) -> Any:
    """A boto3 S3 client for ``config`` with boto3's retries turned off."""
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=config.s3_endpoint,
        region_name=config.s3_region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": config.s3_addressing_style.value},
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
            retries={"total_max_attempts": 1, "mode": "standard"},
        ),
    )


class S3Storage:
    """The :class:`~cluster.storage.base.Storage` interface on one bucket.
    Safe to share between threads (boto3 clients are)."""

    def __init__(
        self,
        config: StorageConfig,
        *,
        client: Any = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], object] = time.sleep,
        page_size: int = 1000,
        delete_batch: int = 1000,
    ) -> None:
        """``page_size`` and ``delete_batch`` (S3's own limits by default)
        are smaller only in tests of paging."""
        self.config = config
        self.page_size = page_size
        self.delete_batch = delete_batch
        self.bucket = config.s3_bucket
        self.prefix = config.s3_prefix
        self.client = client if client is not None else make_client(config)
        self.backoff = Backoff(config.retry, rng=rng, sleep=sleep)

    # -- requests -----------------------------------------------------------

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """``fn()`` with retries; botocore's errors become ours."""
        try:
            return self.backoff.call(fn, is_transient)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise ObjectNotFoundError(f"no object {key!r} in bucket {self.bucket!r}") from exc
            if is_transient(exc):
                raise StorageUnavailableError(
                    f"S3 {what} {key!r} failed after {self.config.retry_attempts} tries: {exc}"
                ) from exc
            raise StorageRequestError(f"S3 {what} {key!r} in bucket {self.bucket!r} refused: {exc}") from exc
        except _TRANSIENT_ERRORS as exc:
            raise StorageUnavailableError(
                f"S3 {what} {key!r} failed after {self.config.retry_attempts} tries: {exc}"
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            # Missing credentials, a bad endpoint, a parameter boto3 rejects.
            raise StorageRequestError(f"S3 {what} {key!r}: {exc}") from exc

    # -- writing ------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        name = self._name(key)
        self._call("put", key, lambda: self.client.put_object(Bucket=self.bucket, Key=name, Body=data))
        return ObjectInfo(key, len(data), time.time())

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        name = self._name(key)
        with open(path, "rb") as fh:
            size = self._size(fh)
            if size >= self.config.multipart_threshold_bytes:
                self._put_multipart(key, name, fh, size)
            else:

                def put() -> object:
                    fh.seek(0)
                    return self.client.put_object(Bucket=self.bucket, Key=name, Body=fh.read())

                self._call("put", key, put)
        return ObjectInfo(key, size, time.time())

    @staticmethod
    def _size(fh: BinaryIO) -> int:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(0)
        return size

    def _put_multipart(self, key: str, name: str, fh: BinaryIO, size: int) -> None:
        created = self._call(
            "create multipart upload",
            key,
            lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=name),
        )
        upload_id = created["UploadId"]
        part_size = self.config.multipart_part_bytes
        parts: builtins.list[dict[str, Any]] = []
        try:
            for number, offset in enumerate(range(0, size, part_size), start=1):
                fh.seek(offset)
                body = fh.read(part_size)
                upload = functools.partial(
                    self.client.upload_part,
                    Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=body,
                )
                answer = self._call(f"upload part {number} of", key, upload)
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self._call(
                "complete multipart upload",
                key,
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                # The bucket's lifecycle rule for incomplete uploads is the
                # backstop; the upload's own error is the one to report.
                pass
            raise

    # -- reading ------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        head = self._call("head", key, lambda: self.client.head_object(Bucket=self.bucket, Key=name))
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"].timestamp())

    def iter_range(
        self, key: str, offset: int = 0, length: int | None = None, chunk_size: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]:
        name = self._name(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"invalid byte range: offset {offset}, length {length}")
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if length == 0:
            self.stat(key)  # a missing key still raises
            return iter(())
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{end}"

        def get() -> Any:
            try:
                return self.client.get_object(**args)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) == "InvalidRange":  # offset at or past the end
                    return None
                raise

        answer = self._call("get", key, get)
        if answer is None:
            return iter(())
        return self._chunks(key, answer["Body"], chunk_size)

    def _chunks(self, key: str, body: Any, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(chunk_size)
        except _TRANSIENT_ERRORS as exc:
            raise StorageUnavailableError(f"S3 get {key!r} broke off: {exc}") from exc
        finally:
            body.close()

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return b"".join(self.iter_range(key, offset, length))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = self.prefix + check_prefix(prefix)
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full, "MaxKeys": self.page_size}
            if token:
                args["ContinuationToken"] = token
            page = self._call("list", prefix, functools.partial(self.client.list_objects_v2, **args))
            for item in page.get("Contents", ()):
                yield ObjectInfo(item["Key"][len(self.prefix):], int(item["Size"]), item["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    # -- deleting -----------------------------------------------------------

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=name))

    def delete_prefix(self, prefix: str) -> int:
        if not check_prefix(prefix):
            raise InvalidKeyError("delete_prefix needs a non-empty prefix (refusing to delete everything)")
        names = [self.prefix + info.key for info in self.list(prefix)]
        for start in range(0, len(names), self.delete_batch):
            batch = {"Objects": [{"Key": n} for n in names[start:start + self.delete_batch]], "Quiet": True}
            remove = functools.partial(self.client.delete_objects, Bucket=self.bucket, Delete=batch)
            answer = self._call("delete objects under", prefix, remove)
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageRequestError(
                    f"S3 delete under {prefix!r}: {len(errors)} objects not deleted, first {first.get('Key')!r}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )
        return len(names)

    # -- serving ------------------------------------------------------------

    def url(self, key: str) -> str | None:
        name = self._name(key)
        if self.config.serve_mode is not ServeMode.PRESIGNED:
            return None
        try:
            url: str = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": name},
                ExpiresIn=self.config.presign_expiry_s,
            )
        except botocore.exceptions.BotoCoreError as exc:
            raise StorageRequestError(f"cannot presign {key!r}: {exc}") from exc
        return url
