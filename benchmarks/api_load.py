"""Load on the control API: requests per second and latency percentiles of
``GET /streaming/active`` and ``POST /streaming/{id}/join`` under concurrent
clients, on SQLite and on PostgreSQL.

The API runs in a child process (``python -m engine api``) so that the load
generator and the server each get a core; the generator is aiohttp on
loopback. Each join is followed by a leave (not timed), so every timed join
opens a new viewer session and updates the peak: the write path, not a
cached read. Run::

    .venv/bin/python -m benchmarks.api_load --backend both --concurrency 32 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from benchmarks.common import ProcessSet, format_table, free_port, to_json, wait_for_port
from control_api.checks import StoreChecks
from control_api.config import ApiConfig
from control_api.plane import ControlPlane
from engine.auth import PublishRequest

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PASSWORD = "benchmark password"


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(concurrency: int, duration_s: float,
               request: Callable[[int], Awaitable[float]]) -> dict[str, Any]:
    """Run ``concurrency`` workers calling ``request(worker)`` (which returns
    the timed latency) until ``duration_s`` passes."""
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration_s

    async def worker(i: int) -> None:
        nonlocal errors
        while loop.time() < deadline:
            try:
                latencies.append(await request(i))
            except (aiohttp.ClientError, AssertionError):
                errors += 1

    started = loop.time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = loop.time() - started
    return {
        "requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else None,
    }


async def bench_backend(backend: str, concurrency: int, duration_s: float, workdir: Path) -> list[dict[str, Any]]:
    data_dir = workdir / backend
    pg_name = f"fanz_bench_{secrets.token_hex(4)}"
    if backend == "sqlite":
        url = f"sqlite:///{data_dir / 'fanz.db'}"
    else:
        await pg_admin(f'CREATE DATABASE "{pg_name}"')
        url = f"{PG_SERVER}/{pg_name}"
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    config = ApiConfig(data_dir=data_dir, database_url=url, auth_rate_per_minute_per_ip=100_000,
                       auth_failures_per_user_address=100_000, auth_failures_per_user=100_000)
    plane = ControlPlane(config, None)
    await plane.open()  # migrates and writes the shared secret before the server starts
    rows = []
    try:
        async with ProcessSet() as procs:
            server = await procs.spawn(
                [sys.executable, "-m", "engine", "api", "--data-dir", str(data_dir), "--database-url", url,
                 "serve", "--host", "127.0.0.1", "--port", str(port)],
                stderr=asyncio.subprocess.DEVNULL,
            )
            await wait_for_port("127.0.0.1", port, server, 30)
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=connector) as http:
                async def post(path: str, token: str | None = None, body: Any = None) -> Any:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    async with http.post(base + path, json=body, headers=headers) as resp:
                        assert resp.status < 300, (path, resp.status, await resp.text())
                        return await resp.json()

                creator = await post("/auth/register", body={"username": "bench_creator", "password": PASSWORD,
                                                             "role": "creator"})
                ctoken = creator["access_token"]
                async with http.get(base + "/streaming/key", headers={"Authorization": f"Bearer {ctoken}"}) as r:
                    key = (await r.json())["stream_key"]
                stream = await post("/streaming/start", ctoken, {"title": "benchmark"})
                await StoreChecks(plane).authorize_publish(PublishRequest("live", key, "rtmp", "127.0.0.1"))
                fans = [await post("/auth/register", body={"username": f"bench_fan_{i}", "password": PASSWORD,
                                                           "role": "fan"}) for i in range(concurrency)]
                tokens = [f["access_token"] for f in fans]

                async def active(i: int) -> float:
                    t0 = time.perf_counter()
                    async with http.get(base + "/streaming/active?limit=20") as resp:
                        await resp.read()
                        assert resp.status == 200
                    return time.perf_counter() - t0

                async def join(i: int) -> float:
                    headers = {"Authorization": f"Bearer {tokens[i]}"}
                    t0 = time.perf_counter()
                    async with http.post(f"{base}/streaming/{stream['id']}/join", headers=headers) as resp:
                        await resp.read()
                        assert resp.status == 200
                    elapsed = time.perf_counter() - t0
                    async with http.post(f"{base}/streaming/{stream['id']}/leave", headers=headers) as resp:
                        await resp.read()
                    return elapsed

                for name, fn in (("GET /streaming/active", active), ("POST /streaming/{id}/join", join)):
                    await load(concurrency, min(1.0, duration_s), fn)  # warm-up
                    result = await load(concurrency, duration_s, fn)
                    rows.append({"backend": backend, "endpoint": name, "concurrency": concurrency, **result})
    finally:
        await plane.close()
        if backend == "postgresql":
            await pg_admin(f'DROP DATABASE "{pg_name}" WITH (FORCE)')
    return rows


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fanz-api-bench-") as tmp:
        for backend in backends:
            rows += await bench_backend(backend, args.concurrency, args.duration, Path(tmp))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per endpoint")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = asyncio.run(main_async(args))
    if args.json:
        print(to_json(rows))
    else:
        print(format_table(rows, [("backend", "backend"), ("endpoint", "endpoint"), ("concurrency", "clients"),
                                  ("requests", "requests"), ("errors", "errors"), ("rps", "req/s"),
                                  ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
