"""The local stream directory: one owner per name, across real processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.local_directory import FileStreamDirectory
from engine.errors import StreamNameError

A, B = "127.0.0.1:41001", "127.0.0.1:41002"
NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
ADDRESSES = st.builds(lambda port: f"127.0.0.1:{port}", st.integers(1, 65535))


async def test_claim_release_owner(tmp_path: Path) -> None:
    directory = FileStreamDirectory(tmp_path / "streams")
    assert await directory.owner("alice") is None
    assert await directory.claim("alice", A) == A
    assert await directory.claim("alice", A) == A  # again by its owner: still its
    assert await directory.claim("alice", B) == A  # another: refused, told who owns it
    await directory.release("alice", B)  # not B's to give up
    assert await directory.owner("alice") == A
    await directory.release("alice", A)
    assert await directory.owner("alice") is None
    assert await directory.claim("alice", B) == B
    assert list((tmp_path / "streams").iterdir()) == [tmp_path / "streams" / "alice"]  # no temporary left


def test_forget_removes_one_owners_claims(tmp_path: Path) -> None:
    directory = FileStreamDirectory(tmp_path)
    for name, owner in (("a", A), ("b", B), ("c", A)):
        assert directory.claim_now(name, owner) == owner
    assert directory.forget(A) == ["a", "c"]
    assert directory.entries() == {"b": B}


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".claim-1", "x" * 65, "a\n"])
def test_names_outside_the_rule_are_refused(tmp_path: Path, name: str) -> None:
    directory = FileStreamDirectory(tmp_path)
    with pytest.raises(StreamNameError):
        directory.claim_now(name, A)
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=50, deadline=None)
@given(name=NAMES, first=ADDRESSES, second=ADDRESSES)
def test_the_first_claim_wins_and_reads_back(tmp_path_factory: pytest.TempPathFactory, name: str, first: str,
                                             second: str) -> None:
    directory = FileStreamDirectory(tmp_path_factory.mktemp("dir"))
    assert directory.claim_now(name, first) == first
    assert directory.claim_now(name, second) == first
    assert directory.owner_now(name) == first
    directory.release_now(name, first)
    assert directory.owner_now(name) is None


def _claim(root: str, owner: str, start: Any) -> str:
    start.wait(10)
    return FileStreamDirectory(Path(root)).claim_now("contested", owner)


def test_processes_claiming_at_once_agree_on_one_owner(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    owners = [f"127.0.0.1:{42000 + i}" for i in range(6)]
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(len(owners)) as pool:
            pending = [pool.apply_async(_claim, (str(tmp_path), owner, start)) for owner in owners]
            start.set()
            answers = [p.get(30) for p in pending]
    # Every process was told the same owner, and it is one of them.
    assert len(set(answers)) == 1 and answers[0] in owners
    assert FileStreamDirectory(tmp_path).entries() == {"contested": answers[0]}
