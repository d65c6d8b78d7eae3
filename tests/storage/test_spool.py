"""The bounded upload spool: order, confirmation before removal, a full
spool refused at once, recovery after a crash, and its metrics."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.storage import (
    InvalidKeyError,
    LocalStorage,
    RetrySettings,
    SpooledUploader,
    SpoolFullError,
    spool_metrics,
)
from engine.metrics import Metrics
from tests.conftest import free_port
from tests.storage.conftest import FAST_RETRY, s3_config

SPOOL_RETRY = RetrySettings(attempts=1, base_delay_s=0.01, max_delay_s=0.05)


def unreachable_backend() -> object:
    """An S3 backend on a loopback port nothing listens on: every upload
    fails as it does when the bucket is down."""
    from cluster.storage.s3 import S3Storage

    return S3Storage(s3_config(f"http://127.0.0.1:{free_port()}", "down", retry_attempts=1))


class Recorder:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self.event = threading.Event()

    def __call__(self, key: str, size: int) -> None:
        self.keys.append(key)
        self.event.set()


@pytest.fixture
def uploaders() -> Iterator[list[SpooledUploader]]:
    made: list[SpooledUploader] = []
    yield made
    for uploader in made:
        uploader.close(timeout=10)


def test_files_reach_the_backend_in_order_and_leave_the_spool(
    tmp_path: Path, uploaders: list[SpooledUploader]
) -> None:
    backend = LocalStorage(tmp_path / "objects")
    done = Recorder()
    uploader = SpooledUploader(backend, tmp_path / "spool", 10_000_000, FAST_RETRY, on_uploaded=done)
    uploaders.append(uploader)
    uploader.start()
    sent: dict[str, bytes] = {}
    for i in range(40):
        key = f"rec/s{i % 2}/seg-{i:05d}.m4s"
        sent[key] = os.urandom(1000 + i * 37)
        entry = uploader.submit_bytes(key, sent[key])
        assert entry.key == key and entry.size == len(sent[key])
    source = tmp_path / "caller.bin"
    source.write_bytes(b"the caller's file")
    uploader.submit_file("rec/s0/index.m3u8", source)
    source.write_bytes(b"changed after the submit")  # the spool holds its own copy
    sent["rec/s0/index.m3u8"] = b"the caller's file"
    assert uploader.wait_empty(timeout=30)
    assert done.keys == list(sent)  # the order of submission
    for key, data in sent.items():
        assert backend.read(key) == data
    assert list((tmp_path / "spool").iterdir()) == []
    stats = uploader.stats()
    assert (stats.files, stats.bytes, stats.oldest_age_s) == (0, 0, 0.0)
    assert (stats.uploaded_files, stats.uploaded_bytes) == (len(sent), sum(map(len, sent.values())))
    assert stats.upload_failures == 0


def test_bad_keys_are_refused_at_submit(tmp_path: Path, uploaders: list[SpooledUploader]) -> None:
    uploader = SpooledUploader(LocalStorage(tmp_path / "objects"), tmp_path / "spool", 1000, FAST_RETRY)
    uploaders.append(uploader)
    with pytest.raises(RuntimeError, match="start"):
        uploader.submit_bytes("a", b"x")
    uploader.start()
    for key in ("../x", "/abs", "a/../b", ""):
        with pytest.raises(InvalidKeyError):
            uploader.submit_bytes(key, b"x")
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_full_spool_refuses_at_once_and_loses_nothing(tmp_path: Path, uploaders: list[SpooledUploader]) -> None:
    spool = tmp_path / "spool"
    down = SpooledUploader(unreachable_backend(), spool, 10_000, SPOOL_RETRY)  # type: ignore[arg-type]
    uploaders.append(down)
    down.start()
    sent = {f"rec/s1/seg-{i}.m4s": os.urandom(3000) for i in range(3)}
    for key, data in sent.items():
        down.submit_bytes(key, data)
    with pytest.raises(SpoolFullError, match="spool full"):
        down.submit_bytes("rec/s1/seg-3.m4s", os.urandom(3000))  # 12,000 > 10,000 bytes
    with pytest.raises(SpoolFullError):
        down.submit_bytes("rec/s1/huge", os.urandom(20_000))
    down.submit_bytes("rec/s1/small", b"fits")  # what fits is still taken
    sent["rec/s1/small"] = b"fits"
    for _ in range(200):
        if down.stats().upload_failures >= 2:
            break
        threading.Event().wait(0.02)
    stats = down.stats()
    assert stats.rejected_full == 2 and stats.files == 4 and stats.bytes == 9004
    assert stats.upload_failures >= 2 and stats.uploaded_files == 0
    down.close(timeout=10)
    # The bucket is back (here: another backend on the same spool).
    backend = LocalStorage(tmp_path / "objects")
    up = SpooledUploader(backend, spool, 10_000, SPOOL_RETRY)
    uploaders.append(up)
    up.start()
    assert up.stats().recovered == 4
    assert up.wait_empty(timeout=30)
    assert {i.key: backend.read(i.key) for i in backend.list()} == sent


def test_a_crash_leaves_only_whole_entries(tmp_path: Path, uploaders: list[SpooledUploader]) -> None:
    spool = tmp_path / "spool"
    first = SpooledUploader(unreachable_backend(), spool, 1_000_000, SPOOL_RETRY)  # type: ignore[arg-type]
    uploaders.append(first)
    first.start()
    sent = {f"rec/s1/seg-{i}.m4s": os.urandom(500 + i) for i in range(5)}
    for key, data in sent.items():
        first.submit_bytes(key, data)
    first.close(timeout=10)
    # What a crash in the middle of submits leaves: data without its
    # manifest, hidden temporary files; and one manifest the disk garbled.
    (spool / "00000000000000000007.data").write_bytes(b"never confirmed")
    (spool / ".00000000000000000008.data.tmp").write_bytes(b"half written")
    (spool / "00000000000000000006.data").write_bytes(b"garbled")
    (spool / "00000000000000000006.json").write_bytes(b"{not json")
    assert json.loads((spool / "00000000000000000000.json").read_bytes())["key"] == "rec/s1/seg-0.m4s"

    backend = LocalStorage(tmp_path / "objects")
    done = Recorder()
    second = SpooledUploader(backend, spool, 1_000_000, SPOOL_RETRY, on_uploaded=done)
    uploaders.append(second)
    second.start()
    second.submit_bytes("rec/s1/after-restart", b"new")
    assert second.wait_empty(timeout=30)
    assert done.keys == [*sent, "rec/s1/after-restart"]
    for key, data in sent.items():
        assert backend.read(key) == data
    stats = second.stats()
    assert (stats.recovered, stats.lost) == (5, 1)
    assert list(spool.iterdir()) == []


def test_the_spool_in_metrics(tmp_path: Path, uploaders: list[SpooledUploader]) -> None:
    now = [1000.0]
    down = SpooledUploader(unreachable_backend(), tmp_path / "spool", 50_000, SPOOL_RETRY,  # type: ignore[arg-type]
                           clock=lambda: now[0])
    uploaders.append(down)
    down.start()
    down.submit_bytes("rec/a", b"x" * 100)
    now[0] += 42.5
    down.submit_bytes("rec/b", b"y" * 50)
    with pytest.raises(SpoolFullError):
        down.submit_bytes("rec/c", b"z" * 60_000)
    for _ in range(200):
        if down.stats().upload_failures:
            break
        threading.Event().wait(0.02)
    metrics = Metrics()
    metrics.add_source(spool_metrics(down))
    text = metrics.render().decode()
    assert "fanz_storage_spool_bytes 150.0" in text
    assert "fanz_storage_spool_files 2.0" in text
    assert "fanz_storage_upload_lag_seconds 42.5" in text
    assert "fanz_storage_spool_max_bytes 50000.0" in text
    assert "fanz_storage_spool_full_rejections_total 1.0" in text
    assert "fanz_storage_uploaded_files_total 0.0" in text
    failures = next(line for line in text.splitlines() if line.startswith("fanz_storage_upload_failures_total"))
    assert float(failures.split()[1]) >= 1


def test_several_workers_keep_each_directory_in_order(tmp_path: Path, uploaders: list[SpooledUploader]) -> None:
    backend = LocalStorage(tmp_path / "objects", fsync=False)
    done = Recorder()
    uploader = SpooledUploader(backend, tmp_path / "spool", 10_000_000, FAST_RETRY, on_uploaded=done, workers=3,
                               fsync=False)
    uploaders.append(uploader)
    uploader.start()
    sent: list[str] = []
    for i in range(120):
        key = f"rec/s{i % 5}/{['720p', '360p'][i % 2]}/seg-{i:05d}.m4s"
        uploader.submit_bytes(key, key.encode())
        sent.append(key)
    assert uploader.wait_empty(timeout=30)
    assert sorted(done.keys) == sorted(sent)
    for directory in {k.rpartition("/")[0] for k in sent}:
        in_dir = [k for k in sent if k.rpartition("/")[0] == directory]
        assert [k for k in done.keys if k.rpartition("/")[0] == directory] == in_dir
    assert all(backend.read(k) == k.encode() for k in sent)


async def test_submits_from_the_event_loop(tmp_path: Path, uploaders: list[SpooledUploader]) -> None:
    backend = LocalStorage(tmp_path / "objects")
    uploader = SpooledUploader(backend, tmp_path / "spool", 1_000_000, FAST_RETRY)
    uploaders.append(uploader)
    uploader.start()
    source = tmp_path / "seg.m4s"
    source.write_bytes(os.urandom(5000))
    await uploader.submit_file_async("rec/s/seg.m4s", source)
    await uploader.submit_bytes_async("rec/s/index.m3u8", b"#EXTM3U\n")
    assert uploader.wait_empty(timeout=30)
    assert backend.read("rec/s/seg.m4s") == source.read_bytes()
    assert backend.read("rec/s/index.m3u8") == b"#EXTM3U\n"


manifests = st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries(
        {"key": st.one_of(st.text(max_size=30), st.sampled_from(["../x", "/abs", "ok/key", "a/./b"]), st.integers()),
         "size": st.one_of(st.integers(-5, 20), st.text(max_size=3), st.none()),
         "created": st.one_of(st.floats(allow_nan=True), st.text(max_size=3))},
    ).map(lambda d: json.dumps(d).encode()),
    st.lists(st.integers(), max_size=3).map(lambda v: json.dumps(v).encode()),
)


@given(manifest=manifests, data=st.binary(max_size=20))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_garbled_spool_is_recovered_safely(tmp_path_factory: pytest.TempPathFactory, manifest: bytes,
                                             data: bytes) -> None:
    base = tmp_path_factory.mktemp("garbled")
    spool = base / "spool"
    spool.mkdir()
    (spool / "00000000000000000000.data").write_bytes(data)
    (spool / "00000000000000000000.json").write_bytes(manifest)
    backend = LocalStorage(base / "objects", fsync=False)
    uploader = SpooledUploader(backend, spool, 1000, SPOOL_RETRY, fsync=False)
    uploader.start()
    try:
        assert uploader.wait_empty(timeout=10)
        stats = uploader.stats()
        stored = list(backend.list())
        if stats.lost:
            assert stored == [] and stats.recovered == 0
        else:
            meta = json.loads(manifest)
            assert [(i.key, i.size) for i in stored] == [(meta["key"], len(data))]
            assert backend.read(meta["key"]) == data
        assert list(spool.iterdir()) == []
    finally:
        uploader.close(timeout=10)
