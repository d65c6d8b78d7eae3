"""The bucket goes away in the middle of a recording and comes back:
nothing is lost.

A writer submits a stream of segment-like files to the spooled uploader at
a steady pace. Part way through, the S3 server (moto, on loopback) is
killed; the writer goes on, never blocked, while the spool grows and the
failures and the upload lag show in the metrics. The server is then started
again on the same port (replaying its request log, so what it held before
the kill is back, as a real object store keeps it). The spool drains, and
every file is in the bucket with its exact bytes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.storage import SpooledUploader, spool_metrics
from engine.metrics import Metrics
from tests.conftest import free_port
from tests.storage.conftest import require_moto, s3_config
from tests.storage.s3_server import MotoServer

SEGMENTS = 60
KILL_AFTER = 15
RESTART_AFTER = 40


@pytest.fixture
def recorded_server(tmp_path: Path) -> Iterator[MotoServer]:
    require_moto()
    server = MotoServer(free_port(), tmp_path, record=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


def test_the_bucket_down_mid_recording_loses_nothing(recorded_server: MotoServer, tmp_path: Path) -> None:
    from cluster.storage.s3 import S3Storage, make_client

    config = s3_config(recorded_server.endpoint, "recordings", connect_timeout_s=0.3, read_timeout_s=2.0,
                       retry_attempts=2, retry_base_delay_s=0.02, retry_max_delay_s=0.2)
    client = make_client(config)
    client.create_bucket(Bucket="recordings")
    s3 = S3Storage(config, client=client)
    uploader = SpooledUploader(s3, tmp_path / "spool", 64 * 1024 * 1024, config.retry, workers=2)
    metrics = Metrics()
    metrics.add_source(spool_metrics(uploader))
    uploader.start()

    sent: dict[str, bytes] = {}
    submitted = threading.Semaphore(0)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(SEGMENTS):
                key = f"rec/stream1/{('720p', '360p')[i % 2]}/seg-{i:05d}.m4s"
                data = os.urandom(20_000 + (i * 7919) % 60_000)
                uploader.submit_bytes(key, data)
                sent[key] = data
                submitted.release()
                time.sleep(0.02)
        except BaseException as exc:
            errors.append(exc)
            submitted.release()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(KILL_AFTER):
            assert submitted.acquire(timeout=30)
        recorded_server.stop()  # the bucket is gone, mid-stream
        # Some files reached the first server: they must survive its restart.
        assert uploader.stats().uploaded_files > 0
        for _ in range(RESTART_AFTER - KILL_AFTER):
            assert submitted.acquire(timeout=30)
        assert not errors, errors
        # Down for a while: files wait in the spool, failures are counted.
        deadline = time.monotonic() + 20
        while uploader.stats().upload_failures < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        during = metrics.render().decode()
        assert metric(during, "fanz_storage_spool_files") >= RESTART_AFTER - KILL_AFTER - 1
        assert metric(during, "fanz_storage_spool_bytes") > 0
        assert metric(during, "fanz_storage_upload_lag_seconds") > 0
        assert metric(during, "fanz_storage_upload_failures_total") >= 3
        recorded_server.restart()
    finally:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(sent) == SEGMENTS
    assert uploader.wait_empty(timeout=60), uploader.stats()
    uploader.close(timeout=10)

    stored = {o["Key"]: o["Size"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="recordings")
              for o in page.get("Contents", ())}
    assert sorted(stored) == sorted(sent)
    for key, data in sent.items():
        body = client.get_object(Bucket="recordings", Key=key)["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest(), key
    after = metrics.render().decode()
    assert metric(after, "fanz_storage_spool_files") == 0
    assert metric(after, "fanz_storage_upload_lag_seconds") == 0
    assert metric(after, "fanz_storage_uploaded_files_total") == SEGMENTS
    assert list((tmp_path / "spool").iterdir()) == []
