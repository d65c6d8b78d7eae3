"""Secrets at rest: the data directory and the SQLite files private to the
engine's user, TOTP seeds and webhook signing secrets sealed with the
engine's master key (and rows an earlier version stored in clear sealed on
start-up), and the key store itself."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_api.webhooks import SIGNATURE_HEADER, verify_signature
from drm.errors import KeyStoreError, SealedDataError
from drm.keystore import MASTER_KEY_FILE, KeyStore, Sealer
from engine.registry import StreamRegistry
from tests.control_api.conftest import Api, serve_api
from tests.control_api.test_streaming_api import Receiver


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_data_dir_and_database_files_are_private(tmp_path: Path) -> None:
    from control_api.config import ApiConfig

    data = tmp_path / "data"
    old_umask = os.umask(0o022)  # the usual umask, under which files are 0644 unless made otherwise
    try:
        config = ApiConfig(data_dir=data, scrypt_n=2**10)
        registry = StreamRegistry(grace_s=0)
        client, app = await serve_api(config, registry)
        try:
            api = Api(client, app, config, registry)
            await api.register("private_user")
            await api.call("PATCH", "/users/me", await api.login("private_user"), json={"bio": "x"}, expect=200)
            assert mode(data) == 0o700
            files = {p.name: mode(p) for p in data.iterdir()}
            assert {"fanz.db", "fanz.db-wal", "fanz.db-shm", MASTER_KEY_FILE, "control_api.secret"} <= set(files)
            assert set(files.values()) == {0o600}, files
        finally:
            await client.close()
        # An install from before: a 0755 directory with 0644 files is narrowed on start.
        os.chmod(data, 0o755)
        for p in data.iterdir():
            os.chmod(p, 0o644)
        client, app = await serve_api(config, registry)
        try:
            await Api(client, app, config, registry).login("private_user")
            assert mode(data) == 0o700
            assert {mode(p) for p in data.iterdir() if p.name.startswith("fanz.db")} == {0o600}
            assert mode(data / MASTER_KEY_FILE) == 0o600
        finally:
            await client.close()
            registry.close()
    finally:
        os.umask(old_umask)
    assert os.umask(old_umask) == old_umask  # nothing changed the process umask


async def test_totp_and_webhook_secrets_are_sealed(api: Api) -> None:
    user = await api.register("sealed_otp")
    _, setup = await api.call("POST", "/auth/2fa/enable", user, expect=200)
    totp = pyotp.TOTP(setup["secret"])
    await api.call("POST", "/auth/2fa/verify", user, json={"code": totp.now()}, expect=200)
    stored = await api.plane.db.fetchval("SELECT totp_secret FROM users WHERE id = $1", user.id)
    assert stored.startswith("v1:") and setup["secret"] not in stored
    # Login with a code still works against the sealed seed.
    await api.login("sealed_otp", otp=totp.at(time.time() + 30))

    receiver = Receiver()
    await receiver.server.start_server()
    try:
        admin = await api.admin()
        _, hook = await api.call("POST", "/webhooks", admin, json={"url": receiver.url, "events": ["gift.sent"]},
                                 expect=201)
        stored = await api.plane.db.fetchval("SELECT secret FROM webhook_endpoints WHERE id = $1", hook["id"])
        assert stored.startswith("v1:") and hook["secret"] not in stored
        await api.plane.webhooks.emit("gift.sent", {"n": 1})
        await asyncio.wait_for(receiver.arrived.wait(), 15)
        headers, body = receiver.received[0]
        assert verify_signature(hook["secret"], headers[SIGNATURE_HEADER], body, time.time())
    finally:
        await receiver.server.close()


async def test_clear_secrets_from_earlier_versions_are_sealed_on_start(api: Api) -> None:
    user = await api.register("legacy_otp")
    seed = pyotp.random_base32()
    await api.plane.db.execute("UPDATE users SET totp_secret = $2, totp_enabled = 1 WHERE id = $1", user.id, seed)
    await api.plane.db.execute(
        "INSERT INTO webhook_endpoints (id, url, secret, events, active, created_at) "
        "VALUES ('e' || $1, 'http://127.0.0.1:9/x', 'whsec_clear', 'gift.sent', 1, 0)", user.id[:31])
    registry = StreamRegistry(grace_s=0)
    client, app = await serve_api(api.config, registry)  # a restart of the same store
    try:
        again = Api(client, app, api.config, registry)
        stored = await again.plane.db.fetchval("SELECT totp_secret FROM users WHERE id = $1", user.id)
        assert stored.startswith("v1:") and seed not in stored
        hook_secret = await again.plane.db.fetchval("SELECT secret FROM webhook_endpoints WHERE url LIKE '%:9/x'")
        assert hook_secret.startswith("v1:") and "whsec_clear" not in hook_secret
        await again.login("legacy_otp", otp=pyotp.TOTP(seed).now())
    finally:
        await client.close()
        registry.close()


def test_key_store(tmp_path: Path) -> None:
    first = KeyStore.load(tmp_path / "d")
    assert mode(tmp_path / "d") == 0o700 and mode(tmp_path / "d" / MASTER_KEY_FILE) == 0o600
    again = KeyStore.load(tmp_path / "d")
    assert first.derive("a") == again.derive("a") != again.derive("b")
    sealed = first.sealer("p").seal("seed", "row:1")
    assert again.sealer("p").open(sealed, "row:1") == "seed"
    for wrong in (lambda: again.sealer("p").open(sealed, "row:2"), lambda: again.sealer("q").open(sealed, "row:1"),
                  lambda: KeyStore(b"k" * 32).sealer("p").open(sealed, "row:1")):
        with pytest.raises(SealedDataError):
            wrong()
    configured = tmp_path / "key.hex"
    configured.write_text("ab" * 32 + "\n")
    store = KeyStore.load(tmp_path / "other", configured)
    assert not (tmp_path / "other" / MASTER_KEY_FILE).exists()
    assert store.derive("a") == KeyStore(bytes.fromhex("ab" * 32)).derive("a")
    for text in ("ab" * 31, "zz" * 32, ""):
        configured.write_text(text)
        with pytest.raises(KeyStoreError):
            KeyStore.load(tmp_path / "other", configured)
    with pytest.raises(KeyStoreError):
        KeyStore.load(tmp_path / "other", tmp_path / "missing.hex")


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_sealed_text_hostile(junk: str) -> None:
    sealer = Sealer(b"k" * 32)
    with pytest.raises(SealedDataError):
        sealer.open("v1:" + junk, "ctx")
    with pytest.raises(SealedDataError):
        sealer.open(junk, "ctx")
