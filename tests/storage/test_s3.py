"""What only the S3 backend does: multipart uploads, the key prefix in the
bucket, presigned URLs, retries with backoff, and which failures count as
the bucket being down."""

from __future__ import annotations

import os
import random
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cluster.storage import ObjectNotFoundError, StorageRequestError, StorageUnavailableError
from cluster.storage.config import MIB, ServeMode
from tests.conftest import free_port
from tests.storage.conftest import s3_config


def test_a_large_file_goes_up_in_parts(make_s3: Callable[..., Any], tmp_path: Path) -> None:
    s3 = make_s3(multipart_threshold_bytes=5 * MIB, multipart_part_bytes=5 * MIB)
    data = os.urandom(11 * MIB + 123)
    source = tmp_path / "recording.mp4"
    source.write_bytes(data)
    info = s3.put_file("vod/a1/download.mp4", source)
    assert info.size == len(data)
    head = s3.client.head_object(Bucket=s3.bucket, Key="vod/a1/download.mp4")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    assert s3.read("vod/a1/download.mp4") == data
    assert s3.read("vod/a1/download.mp4", 5 * MIB - 10, 20) == data[5 * MIB - 10:5 * MIB + 10]
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


def test_a_small_file_goes_up_whole(make_s3: Callable[..., Any], tmp_path: Path) -> None:
    s3 = make_s3(multipart_threshold_bytes=5 * MIB)
    source = tmp_path / "seg.m4s"
    source.write_bytes(os.urandom(5 * MIB - 1))
    s3.put_file("seg.m4s", source)
    head = s3.client.head_object(Bucket=s3.bucket, Key="seg.m4s")
    assert "-" not in head["ETag"]


def test_keys_live_under_the_configured_prefix(make_s3: Callable[..., Any]) -> None:
    s3 = make_s3(s3_prefix="fanz/prod/")
    s3.put_bytes("rec/s1/a", b"1")
    raw = s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]
    assert [o["Key"] for o in raw] == ["fanz/prod/rec/s1/a"]
    assert [i.key for i in s3.list("rec/")] == ["rec/s1/a"]
    assert s3.delete_prefix("rec/") == 1
    assert s3.client.list_objects_v2(Bucket=s3.bucket).get("KeyCount") == 0


def test_listing_and_deleting_go_page_by_page(make_s3: Callable[..., Any]) -> None:
    from cluster.storage.s3 import S3Storage

    made = make_s3()
    s3 = S3Storage(made.config, client=made.client, page_size=10, delete_batch=7)
    keys = [f"rec/s1/seg-{i:05d}.m4s" for i in range(33)]
    for key in keys:
        s3.put_bytes(key, b"x")
    s3.put_bytes("rec/s2/keep", b"k")
    assert [i.key for i in s3.list("rec/s1/")] == keys  # four pages
    assert s3.delete_prefix("rec/s1/") == 33  # five batches
    assert [i.key for i in s3.list("rec/")] == ["rec/s2/keep"]


def test_presigned_urls_serve_the_object_and_expire(make_s3: Callable[..., Any]) -> None:
    s3 = make_s3(serve_mode=ServeMode.PRESIGNED, presign_expiry_s=60)
    data = os.urandom(40_000)
    s3.put_bytes("vod/a1/720p/seg-00001.m4s", data)
    url = s3.url("vod/a1/720p/seg-00001.m4s")
    assert url is not None and "X-Amz-Expires=60" in url and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200 and resp.read() == data
    request = urllib.request.Request(url, headers={"Range": "bytes=100-199"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 206 and resp.read() == data[100:200]
    tampered = url.replace("seg-00001", "seg-00002")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(tampered, timeout=10)


def test_engine_serve_mode_gives_no_url(make_s3: Callable[..., Any]) -> None:
    s3 = make_s3(serve_mode=ServeMode.ENGINE)
    s3.put_bytes("a", b"x")
    assert s3.url("a") is None


def test_an_unreachable_endpoint_is_retried_with_backoff_then_reported(tmp_path: Path) -> None:
    from cluster.storage.s3 import S3Storage

    waits: list[float] = []
    config = s3_config(f"http://127.0.0.1:{free_port()}", "b", retry_attempts=4, retry_base_delay_s=0.01,
                       retry_max_delay_s=0.03)
    s3 = S3Storage(config, rng=random.Random(7), sleep=waits.append)
    with pytest.raises(StorageUnavailableError, match="after 4 tries"):
        s3.put_bytes("rec/a", b"x")
    assert len(waits) == 3  # between four tries
    ceilings = [0.01, 0.02, 0.03]  # doubling, capped at retry_max_delay_s
    assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    waits.clear()
    with pytest.raises(StorageUnavailableError):
        s3.read("rec/a")
    assert len(waits) == 3


def test_a_refusal_is_not_retried(make_s3: Callable[..., Any], moto_server: Any) -> None:
    from cluster.storage.s3 import S3Storage

    existing = make_s3()
    waits: list[float] = []
    missing_bucket = s3_config(moto_server.endpoint, "fanz-no-such-bucket")
    s3 = S3Storage(missing_bucket, client=existing.client, sleep=waits.append)
    with pytest.raises(StorageRequestError, match="fanz-no-such-bucket"):
        s3.put_bytes("a", b"x")
    with pytest.raises(ObjectNotFoundError):
        existing.stat("a")
    assert waits == []
