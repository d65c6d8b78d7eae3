"""The engine opens the configured storage and its spool at start: files an
earlier run left in the spool are uploaded, and the spool is in /metrics."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from cluster.storage import Backend, LocalStorage, SpooledUploader
from cluster.storage.s3 import S3Storage
from tests.conftest import start_engine
from tests.storage.s3_server import MotoServer
from tests.storage.test_spool import SPOOL_RETRY, unreachable_backend


async def test_the_engine_uploads_what_an_earlier_run_spooled(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    earlier = SpooledUploader(unreachable_backend(), data_dir / "spool", 1_000_000, SPOOL_RETRY)  # type: ignore[arg-type]
    earlier.start()
    earlier.submit_bytes("rec/s1/seg-00001.m4s", b"first segment")
    earlier.submit_bytes("rec/s1/seg-00002.m4s", b"second segment")
    earlier.close(timeout=10)

    engine = await start_engine(data_dir)
    try:
        assert isinstance(engine.storage, LocalStorage) and engine.storage.root == (data_dir / "storage").resolve()
        assert engine.uploader.running
        assert await asyncio.to_thread(engine.uploader.wait_empty, 30)
        assert engine.storage.read("rec/s1/seg-00001.m4s") == b"first segment"
        assert engine.storage.read("rec/s1/seg-00002.m4s") == b"second segment"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{engine.http_port}/metrics") as resp:
                text = await resp.text()
        assert "fanz_storage_spool_files 0.0" in text
        assert "fanz_storage_uploaded_files_total 2.0" in text
        assert "fanz_storage_upload_lag_seconds 0.0" in text
    finally:
        await engine.stop()
    assert not engine.uploader.running


async def test_the_engine_on_s3(tmp_path: Path, moto_server: MotoServer, s3_client: Any) -> None:
    bucket = f"fanz-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    engine = await start_engine(
        tmp_path / "data",
        storage={
            "backend": Backend.S3, "s3_endpoint": moto_server.endpoint, "s3_bucket": bucket, "s3_prefix": "node1/"
        },
    )
    try:
        assert isinstance(engine.storage, S3Storage)
        await engine.uploader.submit_bytes_async("rec/s1/seg-00001.m4s", b"segment on s3")
        assert await asyncio.to_thread(engine.uploader.wait_empty, 30)
        body = s3_client.get_object(Bucket=bucket, Key="node1/rec/s1/seg-00001.m4s")["Body"].read()
        assert body == b"segment on s3"
    finally:
        await engine.stop()
        s3_client.delete_object(Bucket=bucket, Key="node1/rec/s1/seg-00001.m4s")
        s3_client.delete_bucket(Bucket=bucket)


def test_s3_without_boto3_turns_storage_off_with_one_log_line(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden" / "boto3"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'boto3'\", name='boto3')\n")
    root = Path(__file__).resolve().parents[2]
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from engine.app.config import load_config\n"
        "from engine.app.serve import Engine\n"
        f"config = load_config(None, env={{'FANZ_STORAGE_BACKEND': 's3', 'FANZ_STORAGE_S3_ENDPOINT': "
        f"'http://127.0.0.1:1', 'FANZ_STORAGE_S3_BUCKET': 'b', 'FANZ_SERVER_DATA_DIR': {str(tmp_path / 'd')!r}, "
        "'FANZ_HTTP_API': 'false', 'FANZ_SERVER_DEV': 'true'})\n"
        "engine = Engine(config)\n"
        "assert engine.storage is None and engine.uploader is None\n"
        "print('storage is off')\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{hidden.parent}{os.pathsep}{root}"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            cwd=root)
    assert result.returncode == 0, result.stderr
    assert "storage is off" in result.stdout
    assert result.stderr.count("s3 storage: off (boto3 is not installed; install the [cluster] extra") == 1
