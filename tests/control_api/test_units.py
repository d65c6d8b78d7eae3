"""The pure parts: credentials, tokens, TOTP, validation, rate limits,
webhook signing and target rules, migrations; hostile input with
hypothesis."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_api import schemas as S
from control_api.config import ApiConfig
from control_api.db import connect, migrate, migration_files, split_statements
from control_api.errors import ApiConfigError, Forbidden, Unauthenticated, ValidationFailed
from control_api.ratelimit import RateLimiter
from control_api.security import (
    AccessClaims,
    PlaybackClaims,
    PlaybackTokenInvalid,
    hash_password,
    issue_access_token,
    issue_playback_token,
    read_access_token,
    read_playback_token,
    totp_match,
    verify_password,
)
from control_api.validation import errors_for, validate
from control_api.webhooks import backoff_delay, check_target, sign, verify_signature

SECRET = "s" * 48


def test_password_hash_roundtrip_and_salting() -> None:
    a, b = hash_password("hunter2 hunter2", 2**10), hash_password("hunter2 hunter2", 2**10)
    assert a != b and a.startswith("scrypt$1024$")
    assert verify_password("hunter2 hunter2", a) and not verify_password("hunter2 hunter3", a)
    for broken in ("", "scrypt$", "md5$1$1$1$aa$bb", "scrypt$1073741824$8$1$AA$AA", a.replace("$8$", "$x$")):
        assert not verify_password("hunter2 hunter2", broken)


def test_access_token_roundtrip_and_expiry() -> None:
    now = 1_700_000_000.0
    token = issue_access_token(SECRET, AccessClaims("u1", "s1", "fan"), now, 60)
    assert read_access_token(SECRET, token, now + 59) == AccessClaims("u1", "s1", "fan")
    with pytest.raises(Unauthenticated):
        read_access_token(SECRET, token, now + 60)
    with pytest.raises(Unauthenticated):
        read_access_token("t" * 48, token, now)


def test_playback_token_binding() -> None:
    now = 1_700_000_000
    token = issue_playback_token(SECRET, PlaybackClaims("abc", "viewer", now + 10, now))
    assert read_playback_token(SECRET, token, "abc", now).viewer_id == "viewer"
    for secret, name, at in ((SECRET, "abd", now), (SECRET, "abc", now + 10), ("x" * 48, "abc", now)):
        with pytest.raises(PlaybackTokenInvalid):
            read_playback_token(secret, token, name, at)


@given(st.text(max_size=600))
@settings(max_examples=300, deadline=None)
def test_playback_token_hostile(token: str) -> None:
    with pytest.raises(PlaybackTokenInvalid):
        read_playback_token(SECRET, token, "abc", 0)


@given(st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_playback_token_bit_flips(junk: bytes) -> None:
    good = issue_playback_token(SECRET, PlaybackClaims("abc", "v", 2**40, 0))
    mutated = good[: len(good) // 2] + junk.hex() + good[len(good) // 2 :]
    if mutated != good:
        with pytest.raises(PlaybackTokenInvalid):
            read_playback_token(SECRET, mutated, "abc", 0)


@given(st.text(max_size=400))
@settings(max_examples=200, deadline=None)
def test_access_token_hostile(token: str) -> None:
    with pytest.raises(Unauthenticated):
        read_access_token(SECRET, token, 0)


def test_totp_window_and_replay() -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    now = 1_700_000_015.0
    step = int(now // 30)
    assert totp_match(secret, totp.at(now), now, 0) == step
    assert totp_match(secret, totp.at(now - 30), now, 0) == step - 1
    assert totp_match(secret, totp.at(now + 30), now, 0) == step + 1
    assert totp_match(secret, totp.at(now - 90), now, 0) is None
    assert totp_match(secret, totp.at(now), now, step) is None
    for junk in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦"):
        assert totp_match(secret, junk, now, 0) is None


def test_validation_messages() -> None:
    validate({"title": "ok", "visibility": "free", "ladder": []}, S.START_STREAM)
    with pytest.raises(ValidationFailed) as info:
        validate({"title": 5, "price_cents": -1, "ladder": [{"name": "x"}], "bogus": True}, S.START_STREAM)
    paths = {e["path"] for e in info.value.extra["errors"]}
    assert {"/title", "/price_cents", "/ladder/0/height", "/bogus"} <= paths
    assert errors_for(True, {"type": "integer"}) and errors_for(float("nan"), {"type": "number"})
    assert errors_for({"a": 1}, {"type": "object", "maxProperties": 0})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_validation_never_crashes(value: object) -> None:
    for schema in (S.REGISTER, S.START_STREAM, S.SCHEDULE_BODY, S.WEBHOOK_BODY, S.GIFT_BODY):
        errs = errors_for(value, schema)
        assert all(set(e) == {"path", "message"} for e in errs)


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(2, max_keys=2)
    assert limiter.hit("a", 0) == 0 and limiter.hit("a", 0) == 0
    assert limiter.hit("a", 0) == pytest.approx(30)
    assert limiter.hit("a", 30) == 0
    limiter.hit("b", 30)
    limiter.hit("c", 30)
    assert "a" not in limiter._buckets and len(limiter._buckets) == 2


def test_webhook_signature_and_backoff() -> None:
    body = b'{"event":"x"}'
    header = sign("whsec", 1000, body)
    assert verify_signature("whsec", header, body, 1100)
    assert not verify_signature("whsec", header, body, 2000)
    assert not verify_signature("other", header, body, 1000)
    assert [backoff_delay(n, 2, 20) for n in range(1, 6)] == [2, 4, 8, 16, 20]


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_signature_header_hostile(header: str) -> None:
    assert verify_signature("whsec", header, b"{}", 1000) is (header == sign("whsec", 1000, b"{}"))


def test_webhook_targets() -> None:
    allowed = ("hooks.example.com", "127.0.0.1:9000")
    check_target("https://hooks.example.com/x", allowed)
    check_target("http://127.0.0.1:9000/x", allowed)
    for bad in ("http://127.0.0.1:9001/x", "http://localhost:9000/", "file:///etc/passwd", "http://[::1]/",
                "https://hooks.example.com.evil.net/", "https://a:b@hooks.example.com/", "http://127.0.0.1:99999/",
                "gopher://hooks.example.com/"):
        with pytest.raises(Forbidden):
            check_target(bad, allowed)


@given(st.text(max_size=100))
@settings(max_examples=200, deadline=None)
def test_webhook_target_hostile(url: str) -> None:
    try:
        check_target(url, ("127.0.0.1",))
    except Forbidden:
        return
    assert url.lower().split("://")[0] in ("http", "https")


def test_migration_files_and_split() -> None:
    files = migration_files()
    assert [v for v, _, _ in files] == list(range(1, len(files) + 1))
    assert split_statements("-- c\nCREATE TABLE a (x INT);\n\nINSERT INTO a VALUES (1);\n") == [
        "CREATE TABLE a (x INT)", "INSERT INTO a VALUES (1)"]


async def test_migrate_is_idempotent(db_url: str) -> None:
    db = await connect(db_url)
    try:
        assert await migrate(db) == [v for v, _, _ in migration_files()]
        assert await migrate(db) == []
        assert await db.fetchval("SELECT COUNT(*) FROM gifts") >= 4
    finally:
        await db.close()


def test_config(tmp_path: Path) -> None:
    cfg = ApiConfig(data_dir=tmp_path)
    assert cfg.resolved_database_url() == f"sqlite:///{tmp_path.resolve()}/fanz.db"
    first = cfg.with_secret()
    assert first.jwt_secret and first.jwt_secret == cfg.with_secret().jwt_secret
    assert (tmp_path / "control_api.secret").stat().st_mode & 0o777 == 0o600
    for bad in ({"database_url": "mysql://x"}, {"scrypt_n": 1000}, {"jwt_secret": "short"},
                {"public_base_url": "ftp://x"}, {"access_token_ttl_s": 0}):
        with pytest.raises(ApiConfigError):
            ApiConfig(data_dir=tmp_path, **bad).check()  # type: ignore[arg-type]
    from engine.app.config import load_config

    env = load_config(None, env={"DATABASE_URL": "postgresql://h/db", "FANZ_API_WEBHOOK_ALLOWED_HOSTS": "a, b:1"}).api
    assert env.database_url == "postgresql://h/db" and env.webhook_allowed_hosts == ("a", "b:1")
