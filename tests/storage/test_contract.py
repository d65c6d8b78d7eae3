"""The contract every storage backend keeps: run against files on disk and
against an S3 server (moto) on loopback, with the same assertions."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.storage import InvalidKeyError, ObjectNotFoundError, Storage
from cluster.storage.local import LocalStorage


def test_bytes_go_in_and_come_back(storage: Storage) -> None:
    data = os.urandom(70_000)
    info = storage.put_bytes("rec/s1/seg-00001.m4s", data)
    assert (info.key, info.size) == ("rec/s1/seg-00001.m4s", len(data))
    assert storage.read("rec/s1/seg-00001.m4s") == data
    stat = storage.stat("rec/s1/seg-00001.m4s")
    assert stat.size == len(data) and stat.modified > 0


def test_an_empty_object(storage: Storage) -> None:
    storage.put_bytes("empty", b"")
    assert storage.read("empty") == b""
    assert storage.stat("empty").size == 0
    assert storage.read("empty", 0, 10) == b""


def test_a_put_replaces_the_object(storage: Storage) -> None:
    storage.put_bytes("a/b", b"first version, longer")
    storage.put_bytes("a/b", b"second")
    assert storage.read("a/b") == b"second"
    assert [i.key for i in storage.list("a/")] == ["a/b"]


def test_a_file_goes_in_and_stays_at_its_source(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "segment.m4s"
    data = os.urandom(300_000)
    source.write_bytes(data)
    info = storage.put_file("vod/asset1/720p/seg-1.m4s", source)
    assert info.size == len(data)
    assert storage.read("vod/asset1/720p/seg-1.m4s") == data
    assert source.read_bytes() == data


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, None), (0, 1), (10, 100), (999, None), (999, 1), (999, 50), (1000, None), (1000, 5), (5000, 10), (3, 0)],
)
def test_byte_ranges(storage: Storage, offset: int, length: int | None) -> None:
    data = bytes(range(250)) * 4
    storage.put_bytes("ranges", data)
    end = None if length is None else offset + length
    assert storage.read("ranges", offset, length) == data[offset:end]
    assert b"".join(storage.iter_range("ranges", offset, length, chunk_size=7)) == data[offset:end]


def test_ranges_are_served_in_bounded_chunks(storage: Storage) -> None:
    data = os.urandom(100_000)
    storage.put_bytes("big", data)
    chunks = list(storage.iter_range("big", 1, 99_998, chunk_size=4096))
    assert all(len(c) <= 4096 for c in chunks)
    assert b"".join(chunks) == data[1:99_999]


def test_a_negative_range_is_misuse(storage: Storage) -> None:
    storage.put_bytes("x", b"abc")
    with pytest.raises(ValueError):
        storage.read("x", -1)
    with pytest.raises(ValueError):
        storage.read("x", 0, -2)


def test_missing_objects(storage: Storage) -> None:
    with pytest.raises(ObjectNotFoundError):
        storage.read("no/such/object")
    with pytest.raises(ObjectNotFoundError):
        storage.stat("no/such/object")
    with pytest.raises(ObjectNotFoundError):
        storage.iter_range("no/such/object", 5, 5)
    with pytest.raises(ObjectNotFoundError):
        storage.read("no/such/object", 0, 0)
    storage.delete("no/such/object")  # deleting what is not there is no error
    assert list(storage.list("no/")) == []


def test_listing_matches_string_prefixes_in_key_order(storage: Storage) -> None:
    keys = ["rec/s1/b", "rec/s1/a", "rec/s10/a", "rec/s2/x/y", "vod/z", "rec-other"]
    for key in keys:
        storage.put_bytes(key, key.encode())
    assert [i.key for i in storage.list("rec/s1/")] == ["rec/s1/a", "rec/s1/b"]
    assert [i.key for i in storage.list("rec/s1")] == ["rec/s1/a", "rec/s1/b", "rec/s10/a"]
    assert [i.key for i in storage.list("rec")] == ["rec-other", "rec/s1/a", "rec/s1/b", "rec/s10/a", "rec/s2/x/y"]
    assert [i.key for i in storage.list()] == sorted(keys)
    assert [i.size for i in storage.list("rec/s2/")] == [len("rec/s2/x/y")]
    assert list(storage.list("nothing/")) == []


def test_delete_one_and_delete_a_prefix(storage: Storage) -> None:
    keys = [f"rec/s1/720p/seg-{i:05d}.m4s" for i in range(30)] + ["rec/s1/index.m3u8", "rec/s10/keep", "vod/keep"]
    for key in keys:
        storage.put_bytes(key, b"x")
    storage.delete("rec/s1/index.m3u8")
    with pytest.raises(ObjectNotFoundError):
        storage.stat("rec/s1/index.m3u8")
    assert storage.delete_prefix("rec/s1/") == 30
    assert [i.key for i in storage.list()] == ["rec/s10/keep", "vod/keep"]
    assert storage.delete_prefix("rec/s1/") == 0


def test_deleting_everything_at_once_is_refused(storage: Storage) -> None:
    storage.put_bytes("keep", b"x")
    with pytest.raises(InvalidKeyError):
        storage.delete_prefix("")
    assert storage.read("keep") == b"x"


BAD_KEYS = [
    "", "/etc/passwd", "../escape", "a/../../escape", "a/./b", ".", "..", "a//b", "a/", "/", ".hidden",
    "a/.hidden", "a\\b", "a b", "a\x00b", "a\nb", "é", "a%2F..", "C:\\x", "x" * 129, "/".join(["a"] * 33),
]


BAD_PREFIXES = ["/", "../", "a/../", "a//", "/a", ".x", "a/.b", "a\\", "a/..", "a/."]


def test_bad_keys_are_refused_before_any_io(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    calls: list[Callable[[str], object]] = [
        lambda key: storage.put_bytes(key, b"x"),
        lambda key: storage.put_file(key, source),
        storage.read,
        storage.iter_range,
        storage.stat,
        storage.delete,
        storage.url,
    ]
    for key in BAD_KEYS:
        for call in calls:
            with pytest.raises(InvalidKeyError):
                call(key)
    assert list(storage.list()) == []
    if isinstance(storage, LocalStorage):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "objects"]
        assert list(storage.root.rglob("*")) == []


def test_bad_prefixes_are_refused(storage: Storage) -> None:
    for prefix in BAD_PREFIXES:
        with pytest.raises(InvalidKeyError):
            list(storage.list(prefix))
        with pytest.raises(InvalidKeyError):
            storage.delete_prefix(prefix)


def test_the_serving_url(storage: Storage) -> None:
    data = os.urandom(5000)
    storage.put_bytes("vod/a1/poster.jpg", data)
    url = storage.url("vod/a1/poster.jpg")
    if isinstance(storage, LocalStorage):
        assert url is None  # served through the engine
        return
    assert url is not None and url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as resp:  # a plain GET, no AWS signature of our own
        assert resp.read() == data
