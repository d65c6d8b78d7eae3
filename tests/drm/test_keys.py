"""Content keys: the sealed store, the local provider, rotation, and many
threads and processes asking for the same key period at once."""

from __future__ import annotations

import base64
import itertools
import multiprocessing
import os
import sqlite3
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drm.config import DrmConfig
from drm.errors import ContentKeyStoreError, KeyStoreError
from drm.keystore import KeyStore
from drm.local import LocalKeyProvider
from drm.model import KeyPeriod, SystemId
from drm.pssh import check_pssh, clearkey_pssh
from drm.rotation import KeyRotation
from drm.setup import master_keys, open_key_provider
from drm.store import STORE_DIR, STORE_FILE, ContentKeyStore

MASTER = "ab" * 32


def provider(data_dir: Path, master: str = MASTER) -> LocalKeyProvider:
    opened = open_key_provider(DrmConfig(master_key=master), data_dir)
    assert isinstance(opened, LocalKeyProvider)
    return opened


def clear_forms(key: bytes) -> list[bytes]:
    """Every way a key could be written in clear: raw, hex, base64."""
    forms = [key, key.hex().encode(), key.hex().upper().encode()]
    for b64 in (base64.b64encode(key), base64.urlsafe_b64encode(key)):
        forms += [b64, b64.rstrip(b"=")]
    return forms


def assert_no_clear_key(data_dir: Path, keys: list[bytes]) -> None:
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for key in keys:
            for form in clear_forms(key):
                assert form not in data, f"a content key in clear in {path}"


def test_a_period_is_made_once_and_kept_sealed_across_restarts(tmp_path: Path) -> None:
    first = provider(tmp_path)
    period = first.key_period("alice", 0)
    assert first.key_period("alice", 0) == period
    assert first.key_period("alice", 1).key.kid != period.key.kid
    assert first.key_period("bob", 0).key.key != period.key.key
    clearkey = [s for s in period.systems if s.system_id == SystemId.CLEARKEY.value]
    assert len(clearkey) == 1 and clearkey[0].pssh is not None and period.key.kid in clearkey[0].pssh
    check_pssh(clearkey[0].pssh, SystemId.CLEARKEY.value)
    first.store.close()
    again = provider(tmp_path)
    assert again.key_period("alice", 0) == period
    assert again.find_key("alice", period.key.kid) == period.key
    assert again.find_key("bob", period.key.kid) is None  # another stream's key ID
    assert again.find_key("alice", os.urandom(16)) is None
    assert again.find_key("alice", b"short") is None
    assert again.highest_period("alice") == 1 and again.highest_period("nobody") is None
    keys = [again.key_period(name, i).key.key for name in ("alice", "bob") for i in range(2)]
    again.store.close()
    path = tmp_path / STORE_DIR / STORE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / STORE_DIR).stat().st_mode) == 0o700
    assert_no_clear_key(tmp_path, keys)
    # Another master key does not open them.
    other = provider(tmp_path, "cd" * 32)
    with pytest.raises(ContentKeyStoreError, match="does not open with this master key"):
        other.key_period("alice", 0)
    other.store.close()


def test_a_sealed_key_moved_to_another_row_does_not_open(tmp_path: Path) -> None:
    p = provider(tmp_path)
    p.key_period("alice", 0)
    p.key_period("mallory", 0)
    p.store.close()
    db = sqlite3.connect(tmp_path / STORE_DIR / STORE_FILE)
    sealed = db.execute("SELECT sealed_key FROM content_keys WHERE content_id = 'alice'").fetchone()[0]
    db.execute("UPDATE content_keys SET sealed_key = ? WHERE content_id = 'mallory'", (sealed,))
    db.commit()
    db.close()
    with pytest.raises(ContentKeyStoreError):
        provider(tmp_path).key_period("mallory", 0)


def test_misuse_is_refused(tmp_path: Path) -> None:
    p = provider(tmp_path)
    for bad in ("", "x" * 257, "a\x00b", "new\nline"):
        with pytest.raises(ValueError):
            p.key_period(bad, 0)
    with pytest.raises(ValueError):
        p.key_period("alice", -1)
    p.store.close()


def test_threads_asking_at_once_get_one_key(tmp_path: Path) -> None:
    p = provider(tmp_path)
    barrier = threading.Barrier(8)

    def ask(_: int) -> KeyPeriod:
        barrier.wait()
        return p.key_period("race", 7)

    with ThreadPoolExecutor(8) as pool:
        periods = list(pool.map(ask, range(8)))
    assert len({period.key for period in periods}) == 1
    p.store.close()


def _worker(data_dir: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    p = provider(Path(data_dir))
    start.wait()
    out.put([p.key_period("race", i).key.key.hex() for i in range(5)])
    p.store.close()


def test_processes_sharing_the_data_dir_get_one_key_per_period(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(str(tmp_path), start, out)) for _ in range(3)]
    for w in workers:
        w.start()
    start.set()
    answers = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert all(a == answers[0] for a in answers)
    assert len(set(answers[0])) == 5


def test_the_master_key_comes_from_the_config_the_file_or_the_data_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from_config = master_keys(DrmConfig(master_key=MASTER), tmp_path / "a", None)
    assert from_config.derive("x") == KeyStore(bytes.fromhex(MASTER)).derive("x")
    assert not (tmp_path / "a").exists()
    key_file = tmp_path / "master.hex"
    key_file.write_text("cd" * 32 + "\n")
    key_file.chmod(0o600)
    assert master_keys(DrmConfig(), tmp_path / "b", key_file).derive("x") == KeyStore(b"\xcd" * 32).derive("x")
    with caplog.at_level("WARNING"):
        generated = master_keys(DrmConfig(), tmp_path / "c", None)
    assert "GENERATED A NEW MASTER KEY" in caplog.text
    assert stat.S_IMODE((tmp_path / "c" / "master.key").stat().st_mode) == 0o600
    assert master_keys(DrmConfig(), tmp_path / "c", None).derive("x") == generated.derive("x")
    with pytest.raises(KeyStoreError):
        master_keys(DrmConfig(), tmp_path / "d", tmp_path / "missing.key")


def test_the_config_refuses_a_bad_master_key_without_repeating_it() -> None:
    from engine.app.config import load_config
    from engine.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, env={"FANZ_DRM_MASTER_KEY": "zz" * 32})
    assert "zz" * 32 not in str(info.value)
    config = load_config(None, env={"FANZ_DRM_MASTER_KEY": MASTER, "FANZ_DRM_PROTECTION": "cbcs"})
    assert config.drm.master_key_bytes == bytes.fromhex(MASTER)
    assert config.drm.protection.value == "cbcs"
    assert MASTER not in repr(config)
    with pytest.raises(ConfigError, match="key_service_url"):
        load_config(None, env={"FANZ_DRM_PROVIDER": "http"})
    with pytest.raises(ConfigError, match="FANZ_DRM_PROTECTION"):
        load_config(None, env={"FANZ_DRM_PROTECTION": "rot13"})


# -- rotation -------------------------------------------------------------------
def test_rotation_every_n_segments_and_at_reconnects() -> None:
    rotation = KeyRotation(3)
    seen = []
    for i in range(8):
        seen.append((rotation.next_segment(discontinuity=(i == 4)), rotation.new_period))
    assert seen == [(0, True), (0, False), (0, False), (1, True), (2, True), (2, False), (2, False), (3, True)]


def test_rotation_off_changes_only_at_reconnects_and_can_start_later() -> None:
    rotation = KeyRotation(0, start_period=5)
    assert rotation.period == 5
    assert [rotation.next_segment(discontinuity=True) for _ in range(2)] == [5, 6]  # the first is no reconnect
    assert [rotation.next_segment() for _ in range(100)] == [6] * 100
    assert [KeyRotation(4).period_of(i) for i in (0, 3, 4, 9)] == [0, 0, 1, 2]
    assert KeyRotation(0, 2).period_of(10_000) == 2
    with pytest.raises(ValueError):
        KeyRotation(-1)


def test_the_vod_default_is_one_key_and_live_rotates() -> None:
    config = DrmConfig()
    assert config.vod_rotate_every_segments == 0 and config.rotate_every_segments > 0


def test_an_unwritable_store_says_where(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory should be")
    with pytest.raises(ContentKeyStoreError, match="blocked"):
        ContentKeyStore.open(blocked, KeyStore(bytes(32)))


# -- pssh and rotation, generated --------------------------------------------------
@given(st.lists(st.binary(min_size=16, max_size=16), max_size=20))
def test_clearkey_pssh_boxes_read_back(kids: list[bytes]) -> None:
    box = clearkey_pssh(kids)
    check_pssh(box, SystemId.CLEARKEY.value)
    check_pssh(box + clearkey_pssh(kids[:1]), SystemId.CLEARKEY.value)  # several boxes in a row
    assert int.from_bytes(box[:4], "big") == len(box) == 32 + 16 * len(kids) + 4
    assert int.from_bytes(box[28:32], "big") == len(kids) and b"".join(kids) == box[32:32 + 16 * len(kids)]
    with pytest.raises(ValueError):
        check_pssh(box, SystemId.WIDEVINE.value)
    for cut in range(1, len(box)):
        with pytest.raises(ValueError):
            check_pssh(box[:cut], SystemId.CLEARKEY.value)


@given(st.binary(max_size=200))
def test_any_bytes_are_a_pssh_or_refused(data: bytes) -> None:
    try:
        check_pssh(data, SystemId.CLEARKEY.value)
    except ValueError:
        pass


@given(st.integers(0, 20), st.integers(0, 50), st.lists(st.booleans(), min_size=1, max_size=200))
def test_rotation_counts_like_its_closed_form(every: int, start: int, reconnects: list[bool]) -> None:
    rotation = KeyRotation(every, start)
    periods = [rotation.next_segment(discontinuity=d) for d in reconnects]
    if not any(reconnects[1:]):
        assert periods == [rotation.period_of(i) for i in range(len(reconnects))]
    # Periods never go back, change only at a reconnect or after N segments, and never last past N.
    assert periods[0] == start and all(b - a in (0, 1) for a, b in itertools.pairwise(periods))
    runs = [len(list(group)) for _, group in itertools.groupby(periods)]
    assert not every or all(run <= every for run in runs)
    assert len(runs) - 1 >= sum(reconnects[1:])
