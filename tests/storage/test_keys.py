"""The key rule against hostile input (hypothesis): whatever a key is, it
is refused or it names a file inside the storage root, and it reads the
same on disk and in S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.storage import InvalidKeyError, LocalStorage, check_key, check_prefix

HOSTILE_PARTS = ["..", ".", "", "/", "\\", "\x00", "\n", "%2e%2e", "~", "C:", "a", "seg-1.m4s", "é", " ", "*"]
hostile_keys = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(HOSTILE_PARTS), max_size=8).map("/".join),
    st.lists(st.sampled_from(HOSTILE_PARTS), max_size=8).map("".join),
    st.from_regex(r"[A-Za-z0-9._/-]{0,40}", fullmatch=True),
)


@given(hostile_keys)
@settings(max_examples=400)
def test_an_accepted_key_is_a_plain_relative_path(key: str) -> None:
    try:
        check_key(key)
    except InvalidKeyError:
        return
    segments = key.split("/")
    assert not key.startswith("/") and "\\" not in key
    assert all(s and not s.startswith(".") for s in segments)
    assert os.path.normpath(key) == key  # nothing a file system would resolve differently
    assert key.isascii() and key.isprintable()


@given(hostile_keys)
@settings(max_examples=400)
def test_an_accepted_prefix_cannot_climb(prefix: str) -> None:
    try:
        check_prefix(prefix)
    except InvalidKeyError:
        return
    assert ".." not in prefix.split("/") and not prefix.startswith("/")
    assert "//" not in prefix and "\\" not in prefix


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> LocalStorage:
    return LocalStorage(tmp_path_factory.mktemp("keys") / "root", fsync=False)


@given(key=hostile_keys, data=st.binary(max_size=64))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_local_storage_writes_only_inside_its_root(local: LocalStorage, key: str, data: bytes) -> None:
    outside_before = sorted(p.name for p in local.root.parent.iterdir())
    try:
        local.put_bytes(key, data)
    except InvalidKeyError:
        assert sorted(p.name for p in local.root.parent.iterdir()) == outside_before
        return
    path = local.root.joinpath(*key.split("/"))
    assert path.resolve().is_relative_to(local.root)
    assert path.read_bytes() == data == local.read(key)
    assert key in {i.key for i in local.list(key)}
    local.delete(key)
    assert not path.exists()
    assert sorted(p.name for p in local.root.parent.iterdir()) == outside_before


def test_a_key_under_an_existing_object_is_refused(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path / "root")
    local.put_bytes("a/b", b"1")
    with pytest.raises(InvalidKeyError):
        local.put_bytes("a/b/c", b"2")
    with pytest.raises(InvalidKeyError):
        local.put_bytes("a", b"3")
    assert local.read("a/b") == b"1"
    assert [p.name for p in (tmp_path / "root" / "a").iterdir()] == ["b"]  # no temporary file left


def test_deleting_prunes_empty_directories_but_not_the_root(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path / "root")
    local.put_bytes("rec/s1/720p/seg-1.m4s", b"x")
    local.put_bytes("rec/s2/seg-1.m4s", b"x")
    local.delete_prefix("rec/s1/")
    assert sorted(p.relative_to(local.root).as_posix() for p in local.root.rglob("*")) == [
        "rec", "rec/s2", "rec/s2/seg-1.m4s"
    ]
    local.delete("rec/s2/seg-1.m4s")
    assert local.root.is_dir() and list(local.root.iterdir()) == []
