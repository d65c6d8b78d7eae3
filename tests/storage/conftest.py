"""Fixtures of the storage tests: fake AWS credentials that reach only
loopback, a moto S3 server per session, a fresh bucket per test, and both
backends behind one ``storage`` fixture for the contract suite."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.storage import LocalStorage, RetrySettings, Storage, StorageConfig
from cluster.storage.config import Backend, ServeMode
from tests.conftest import free_port
from tests.storage.s3_server import ACCESS_KEY, SECRET_KEY, MotoServer

FAST_RETRY = RetrySettings(attempts=3, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(scope="session", autouse=True)
def loopback_aws_env() -> Iterator[None]:
    """Only fake credentials, no profile, no config file, no instance
    metadata lookups: nothing the tests do can reach a real AWS account."""
    with pytest.MonkeyPatch.context() as mp:
        import os

        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/fanz-test-aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/fanz-test-aws-credentials")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    require_moto()
    server = MotoServer(free_port(), tmp_path_factory.mktemp("moto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def require_moto() -> None:
    """The S3 tests need moto's server (the [test] extra), as other tests
    need ffmpeg: missing, they fail and say how to install it."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        pytest.fail("moto[server] is not installed: run the README's test command, which installs the [test] extra "
                    "(or pip install 'moto[server]')")


def s3_config(endpoint: str, bucket: str, **changes: Any) -> StorageConfig:
    """Settings for tests: small timeouts and retry delays."""
    values: dict[str, Any] = {
        "backend": Backend.S3,
        "s3_endpoint": endpoint,
        "s3_bucket": bucket,
        "connect_timeout_s": 0.5,
        "read_timeout_s": 5.0,
        "retry_attempts": FAST_RETRY.attempts,
        "retry_base_delay_s": FAST_RETRY.base_delay_s,
        "retry_max_delay_s": FAST_RETRY.max_delay_s,
    }
    values.update(changes)
    return StorageConfig(**values)


@pytest.fixture(scope="session")
def s3_client(moto_server: MotoServer) -> Any:
    """One client for the session's server (building one takes a second)."""
    from cluster.storage.s3 import make_client

    return make_client(s3_config(moto_server.endpoint, "unused"))


@pytest.fixture
def make_s3(moto_server: MotoServer, s3_client: Any) -> Iterator[Callable[..., Any]]:
    """Builds S3Storage objects on fresh buckets of the session's server
    (sharing the session's client unless ``own_client=True``); every bucket
    is emptied and removed afterwards."""
    from cluster.storage.s3 import S3Storage, make_client

    made: list[Any] = []

    def make(own_client: bool = False, **changes: Any) -> S3Storage:
        bucket = changes.pop("bucket", None) or f"fanz-{uuid.uuid4().hex[:12]}"
        config = s3_config(moto_server.endpoint, bucket, **changes)
        client = make_client(config) if own_client else s3_client
        client.create_bucket(Bucket=bucket)
        storage = S3Storage(config, client=client)
        made.append(storage)
        return storage

    yield make
    for storage in made:
        client = storage.client
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket):
            for item in page.get("Contents", ()):
                client.delete_object(Bucket=storage.bucket, Key=item["Key"])
        client.delete_bucket(Bucket=storage.bucket)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each backend in turn, empty."""
    if request.param == "local":
        return LocalStorage(tmp_path / "objects")
    make: Callable[..., Storage] = request.getfixturevalue("make_s3")
    return make(serve_mode=ServeMode.PRESIGNED)
