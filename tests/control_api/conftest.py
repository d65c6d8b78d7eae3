"""Fixtures for the control API: a real database (a fresh SQLite file, or a
fresh schema in a PostgreSQL database made for this test session) and the
API served on loopback."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control_api.app import API_PREFIX, create_app, get_checks
from control_api.bootstrap import create_admin
from control_api.checks import StoreChecks
from control_api.config import ApiConfig
from control_api.db import Database
from control_api.plane import ControlPlane
from control_api.revocations import RevocationFeed
from engine.registry import StreamRegistry

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PASSWORD = "correct horse battery"
PROCESSOR = "testpay"
PROCESSOR_SECRET = "whsec_" + "s3cr3t" * 8


def _pg_admin(sql: str) -> None:
    """Run one statement on the server's maintenance database, on a thread of
    its own (the fixture may be first asked for inside a running loop)."""

    async def run() -> None:
        conn = await asyncpg.connect(f"{PG_SERVER}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=60)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of our own for the whole session, dropped at the end."""
    name = f"fanz_test_{secrets.token_hex(4)}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    yield f"{PG_SERVER}/{name}"
    _pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test gets an empty store: a new SQLite file, or a new schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fanz.db'}"
        return
    base = request.getfixturevalue("pg_database")
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(base)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    yield f"{base}?search_path={schema}"
    conn = await asyncpg.connect(base)
    await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    await conn.close()


@pytest.fixture
def api_config(db_url: str, tmp_path: Path) -> ApiConfig:
    return ApiConfig(
        data_dir=tmp_path / "data",
        database_url=db_url,
        scrypt_n=2**10,
        public_base_url="http://127.0.0.1:9",
        webhook_allowed_hosts=("127.0.0.1",),
        webhook_backoff_base_s=0.05,
        webhook_backoff_cap_s=0.2,
        webhook_max_attempts=3,
        webhook_timeout_s=5,
        auth_rate_per_minute_per_ip=10_000,
        auth_failures_per_user_address=10_000,
        auth_failures_per_user=10_000,
        payment_processors={PROCESSOR: PROCESSOR_SECRET},
    )


@dataclass
class User:
    id: str
    username: str
    role: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Api:
    """A loopback HTTP client for the API, with the account helpers every
    test needs."""

    def __init__(self, client: TestClient, app: web.Application, config: ApiConfig, registry: StreamRegistry):
        self.client = client
        self.app = app
        self.config = config
        self.registry = registry

    @property
    def checks(self) -> StoreChecks:
        return get_checks(self.app)

    @property
    def plane(self) -> ControlPlane:
        from control_api.app import PLANE

        return self.app[PLANE]

    def url(self, path: str) -> str:
        return str(self.client.make_url(API_PREFIX + path))

    async def call(self, method: str, path: str, user: User | None = None, json: Any = None,
                   headers: dict[str, str] | None = None, expect: int | None = None) -> tuple[int, Any]:
        hdrs = dict(user.headers if user else {})
        hdrs.update(headers or {})
        kwargs: dict[str, Any] = {"headers": hdrs}
        if json is not None:
            kwargs["json"] = json
        async with self.client.request(method, API_PREFIX + path, **kwargs) as resp:
            body = await resp.json(content_type=None) if resp.status != 204 else None
            if resp.status >= 400:
                assert resp.content_type == "application/problem+json", (resp.status, resp.content_type)
            if expect is not None:
                assert resp.status == expect, (method, path, resp.status, body)
            return resp.status, body

    async def register(self, username: str, role: str = "fan") -> User:
        _, body = await self.call("POST", "/auth/register",
                                  json={"username": username, "password": PASSWORD, "role": role}, expect=201)
        return User(body["user"]["id"], username, role, body["access_token"], body["refresh_token"])

    async def login(self, username: str, password: str = PASSWORD, **extra: str) -> User:
        _, body = await self.call("POST", "/auth/login", json={"username": username, "password": password, **extra},
                                  expect=200)
        return User(body["user"]["id"], username, body["user"]["role"], body["access_token"], body["refresh_token"])

    async def admin(self, username: str = "root_admin") -> User:
        await create_admin(self.config, username, PASSWORD, time.time())
        return await self.login(username)


async def serve_api(config: ApiConfig, registry: StreamRegistry,
                    revocation_feed: Callable[[Database], RevocationFeed] | None = None
                    ) -> tuple[TestClient, web.Application]:
    app = create_app(config, registry, revocation_feed)
    root = web.Application()
    root.add_subapp(API_PREFIX, app)
    client = TestClient(TestServer(root, host="127.0.0.1"))
    await client.start_server()
    return client, app


@asynccontextmanager
async def api_with(config: ApiConfig, **changes: Any) -> AsyncIterator[Api]:
    """The API served on loopback with ``config`` changed by ``changes``."""
    config = replace(config, **changes)
    registry = StreamRegistry(grace_s=0)
    client, app = await serve_api(config, registry)
    try:
        yield Api(client, app, config, registry)
    finally:
        await client.close()
        registry.close()


@pytest.fixture
async def api(api_config: ApiConfig) -> AsyncIterator[Api]:
    async with api_with(api_config) as served:
        yield served

