"""The OpenAPI document is true: every served route is in it and every
operation in it is served, and schemathesis, driven by it against the live
API on loopback, finds no server error and no response that breaks it."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from control_api.app import API_PREFIX
from tests.control_api.conftest import Api

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


async def test_document_matches_routes(api: Api) -> None:
    _, doc = await api.call("GET", "/openapi.json", expect=200)
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": API_PREFIX}]
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    served = set()
    for route in api.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD":
            assert path.startswith(API_PREFIX)
            served.add((route.method, path.removeprefix(API_PREFIX)))
    assert documented == served
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["responses"], (method, path)
            if "{" in path:
                assert "404" in op["responses"]
            if op.get("security"):
                assert {"401", "403"} <= set(op["responses"])
    # Every reference resolves.
    text = str(doc)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in doc["components"]["schemas"], name


async def run_schemathesis(api: Api, tmp_path: Path, headers: dict[str, str], max_examples: int,
                           checks: str = "all", extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
    args = [SCHEMATHESIS, "run", api.url("/openapi.json"), "--checks", checks, "-n", str(max_examples), *extra,
            "--exclude-path", "/auth/logout", "--no-color", "--seed", "7", "--generation-database", "none",
            "-w", "1", "--request-timeout", "20", "--max-failures", "5"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert re.search(r"\d+ generated, \d+ passed", text), text[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_schemathesis_as_admin(api: Api, tmp_path: Path) -> None:
    admin = await api.admin()
    await run_schemathesis(api, tmp_path, admin.headers, 15)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_schemathesis_as_creator(api: Api, tmp_path: Path) -> None:
    creator = await api.register("fuzz_creator", "creator")
    await api.call("POST", "/streaming/start", creator, json={"title": "fuzzed"}, expect=201)
    await run_schemathesis(api, tmp_path, creator.headers, 10)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_schemathesis_hostile_text(api: Api, tmp_path: Path) -> None:
    """Every JSON body poisoned with a lone surrogate, a NUL, a surrogate
    field name or deep nesting (see schemathesis_hooks.py): the answers are
    documented 4xx problem documents, never a server error."""
    admin = await api.admin()
    creator = await api.register("hostile_creator", "creator")
    await api.call("POST", "/streaming/start", creator, json={"title": "hostile"}, expect=201)
    hooks = str(Path(__file__).with_name("schemathesis_hooks.py"))
    for who in (admin, creator):
        await run_schemathesis(
            api, tmp_path, who.headers, 8,
            checks="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            extra=("--mode", "positive", "--phases", "examples,fuzzing"), env={"SCHEMATHESIS_HOOKS": hooks},
        )
