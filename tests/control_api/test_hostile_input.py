"""Hostile request bodies and names, on SQLite and PostgreSQL: bodies
nested far deeper than any schema, strings JSON can carry but no database
stores (lone surrogates, NUL), look-alike user names, and what the API tells
strangers about itself. Each must be a 4xx problem document, never a 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from control_api.errors import MalformedRequest
from control_api.validation import MAX_JSON_DEPTH, check_json_text, errors_for
from tests.conftest import start_engine
from tests.control_api.conftest import PASSWORD, Api, User


async def raw_call(api: Api, method: str, path: str, body: bytes, user: User | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **(user.headers if user else {})}
    async with api.client.request(method, "/api/v1" + path, data=body, headers=headers) as resp:
        payload = await resp.json(content_type=None)
        if resp.status >= 400:
            assert resp.content_type == "application/problem+json", resp.content_type
        return resp.status, payload


async def test_deeply_nested_bodies_are_refused(api: Api) -> None:
    deep = b"[" * 1000 + b"]" * 1000
    status, problem = await raw_call(api, "POST", "/auth/login", deep)
    assert status == 400 and "nests deeper" in problem["detail"], problem
    nested_object = b'{"a":' * 1000 + b"1" + b"}" * 1000
    status, _ = await raw_call(api, "POST", "/auth/login", nested_object)
    assert status == 400
    # Brackets inside strings are text, not nesting.
    status, _ = await raw_call(api, "POST", "/auth/login",
                               json.dumps({"username": "nobody", "password": "[" * 200}).encode())
    assert status == 401
    creator = await api.register("nesting_creator", "creator")
    _, stream = await api.call("POST", "/streaming/start", creator, json={"title": "deep"}, expect=201)
    arrays = b'{"effects": {"effects": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    status, problem = await raw_call(api, "PUT", f"/streaming/{stream['id']}/effects", arrays, creator)
    assert status == 400, problem
    option = {"effects": {"effects": [{"effect": "watermark", "text": "x"}]}}
    inner: Any = "x"
    for _ in range(MAX_JSON_DEPTH + 5):
        inner = [inner]
    option["effects"]["effects"][0]["text"] = inner
    status, _ = await raw_call(api, "PUT", f"/streaming/{stream['id']}/effects", json.dumps(option).encode(), creator)
    assert status == 400


async def test_unstorable_strings_are_refused(api: Api) -> None:
    user = await api.register("text_user", "creator")
    for text in ("\ud800", "ok\udfffok", "nul\x00here"):
        encoded = json.dumps(text)  # escapes: \ud800, \u0000
        for field in ("bio", "display_name"):
            body = f'{{"{field}": {encoded}}}'.encode()
            status, problem = await raw_call(api, "PATCH", "/users/me", body, user)
            assert status in (400, 422), (field, text, status, problem)
        body = f'{{"title": {encoded}}}'.encode()
        status, problem = await raw_call(api, "POST", "/streaming/start", body, user)
        assert status in (400, 422), (text, status, problem)
        body = f'{{"username": {json.dumps("ab" + text)}, "password": "{PASSWORD}", "role": "fan"}}'.encode()
        status, _ = await raw_call(api, "POST", "/auth/register", body)
        assert status in (400, 422)
        # A field name is text too.
        status, _ = await raw_call(api, "PATCH", "/users/me", f'{{{encoded}: "x"}}'.encode(), user)
        assert status in (400, 422)
    _, me = await api.call("GET", "/users/me", user, expect=200)
    assert me["bio"] == "" and me["display_name"] == "text_user"
    # Ordinary text beyond the BMP still works.
    _, me = await api.call("PATCH", "/users/me", user, json={"bio": "caf\u00e9 \U0001f3a5"}, expect=200)
    assert me["bio"] == "caf\u00e9 \U0001f3a5"


async def test_lookalike_user_names_are_refused(api: Api) -> None:
    await api.register("secadmin")
    for lookalike in ("secadmin\n", "secadmin\r\n", "\nsecadmin", "secadmin "):
        status, problem = await api.call("POST", "/auth/register",
                                         json={"username": lookalike, "password": PASSWORD, "role": "fan"})
        assert status == 422 and problem["errors"][0]["path"] == "/username", (lookalike, problem)
        status, _ = await api.call("POST", "/auth/login", json={"username": lookalike, "password": PASSWORD})
        assert status == 422
    assert errors_for("123456\n", {"type": "string", "pattern": "^[0-9]{6}$"})
    assert errors_for("http://a\n", {"type": "string", "pattern": "^https?://\\S+$"})


async def test_admin_accounts_are_not_listed_to_strangers(api: Api) -> None:
    admin = await api.admin("the_admin")
    fan = await api.register("curious_fan")
    for who in (None, fan):
        status, problem = await api.call("GET", "/users?role=admin", who)
        assert status == 403, problem
        _, page = await api.call("GET", "/users?limit=100", who, expect=200)
        assert "the_admin" not in {u["username"] for u in page["items"]}
        assert "curious_fan" in {u["username"] for u in page["items"]}
        status, _ = await api.call("GET", f"/users/{admin.id}", who)
        assert status == 404
    _, page = await api.call("GET", "/users?role=admin", admin, expect=200)
    assert [u["username"] for u in page["items"]] == ["the_admin"]
    _, page = await api.call("GET", "/users?limit=100", admin, expect=200)
    assert "the_admin" in {u["username"] for u in page["items"]}
    await api.call("GET", f"/users/{admin.id}", admin, expect=200)


async def test_no_server_software_header(api: Api, tmp_path: Path) -> None:
    for method, path in (("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/no/such"), ("POST", "/api/v1/auth/login")):
        async with api.client.request(method, path) as resp:
            assert "Server" not in resp.headers, (path, resp.headers.get("Server"))
    # The whole engine HTTP server: its own routes, its 404s and the mounted API.
    engine = await start_engine(tmp_path / "engine", http={"port": 0, "api": True},
                                api={"database_url": api.config.database_url, "scrypt_n": 2**10})
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/health", "/metrics", "/nothing/here", "/hls/x/index.m3u8", "/api/v1/openapi.json",
                         "/api/v1/users/me"):
                async with session.get(f"http://127.0.0.1:{engine.http_port}{path}") as resp:
                    assert "Server" not in resp.headers, (path, resp.headers.get("Server"))
    finally:
        await engine.stop()


# Every code point, lone surrogates and NUL included, some of them often.
hostile_chars = st.characters(exclude_categories=()) | st.sampled_from("\x00\ud800\udfff")
json_with_hostile_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(hostile_chars, max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(hostile_chars, max_size=4), inner,
                                                                max_size=3),
    max_leaves=30,
)


@given(json_with_hostile_text)
@settings(max_examples=400, deadline=None)
def test_check_json_text_refuses_exactly_what_cannot_be_stored(value: object) -> None:
    try:
        check_json_text(value)
    except MalformedRequest:
        return
    # Whatever passes can be written as UTF-8 with no NUL, as both databases need.
    text = json.dumps(value, ensure_ascii=False)
    text.encode("utf-8")
    assert "\x00" not in text


@given(st.integers(min_value=0, max_value=3000), st.sampled_from(["[", '{"k":']))
@settings(max_examples=60, deadline=None)
def test_nesting_limit(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    value = json.loads(opener * min(depth, 500) + "0" + closer * min(depth, 500))
    try:
        check_json_text(value)
        assert min(depth, 500) <= MAX_JSON_DEPTH
    except MalformedRequest:
        assert min(depth, 500) > MAX_JSON_DEPTH


async def test_document_states_what_is_refused(api: Api) -> None:
    _, doc = await api.call("GET", "/openapi.json", expect=200)
    register = doc["paths"]["/auth/register"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert register["properties"]["display_name"]["pattern"] == "^[^\\u0000]*$"
    assert register["properties"]["username"]["pattern"] == "^[a-z0-9_]+$"  # its own pattern stands
    assert "no NUL" in doc["info"]["description"]
    # Effect options are plain values named like identifiers.
    creator = await api.register("options_creator", "creator")
    _, stream = await api.call("POST", "/streaming/start", creator, json={"title": "opts"}, expect=201)
    for options in ({"text": ["a"]}, {"text": {"a": 1}}, {"Text": "a"}, {"te xt": "a"}):
        status, problem = await api.call("PUT", f"/streaming/{stream['id']}/effects", creator,
                                         json={"effects": {"effects": [{"effect": "watermark", **options}]}})
        assert status == 422, (options, problem)


async def test_hostile_query_strings(api: Api) -> None:
    admin = await api.admin()
    for raw in ("%00", "a%00b", "%ED%A0%80", "%F0%9F", "%FF"):
        for path in (f"/streaming/schedule?creator_id={raw}", f"/admin/audit?target_id={raw}"):
            async with api.client.get("/api/v1" + path, headers=admin.headers) as resp:
                assert resp.status in (200, 400, 422), (path, resp.status, await resp.text())
                if resp.status >= 400:
                    assert resp.content_type == "application/problem+json"
