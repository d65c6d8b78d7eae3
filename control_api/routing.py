"""Declared operations: one table drives both the aiohttp routes and the
OpenAPI document, so the document stays true to what is served.

Each operation names its method and path (relative to ``/api/v1``), the
roles allowed to call it, and the JSON Schemas of its body, query and
responses. The wrapper installed for it authenticates the caller, checks the
role, parses and validates the query string and body, and only then calls the
handler with a :class:`RequestCtx`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from control_api.errors import Forbidden, MalformedRequest, Unauthenticated, ValidationFailed
from control_api.validation import MAX_JSON_DEPTH, check_json_text, errors_for, validate

MAX_BODY_BYTES = 64 * 1024

ROLES_ANY_USER = frozenset({"fan", "creator", "admin"})
ROLES_CREATOR = frozenset({"creator", "admin"})
ROLES_ADMIN = frozenset({"admin"})
ROLES_PLATFORM = frozenset({"admin", "service"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a logged-in user (``kind="user"``) or a platform
    service holding an API key (``kind="api_key"``, role ``service``)."""

    kind: str
    id: str
    role: str
    username: str
    session_id: str | None = None


@dataclass(slots=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class RequestCtx:
    request: web.Request
    principal: Principal | None
    body: Any
    query: dict[str, Any]

    @property
    def remote(self) -> str:
        return self.request.remote or ""

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    def user(self) -> Principal:
        """The caller, for handlers whose operation requires one."""
        if self.principal is None:
            raise Unauthenticated("this operation needs a bearer token or an API key")
        return self.principal


Handler = Callable[[RequestCtx], Awaitable[Reply]]
Authenticator = Callable[[web.Request], Awaitable[Principal | None]]


@dataclass(slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    roles: frozenset[str] | None
    body: dict[str, Any] | None
    query: dict[str, dict[str, Any]]
    ok_status: int
    ok_schema: dict[str, Any] | None
    errors: frozenset[int]
    also_ok: tuple[int, ...]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw_body: dict[str, Any] | None = None


def _parse_query(raw: Any, spec: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    errs: list[dict[str, str]] = []
    for name, schema in spec.items():
        if name not in raw:
            if "default" in schema:
                out[name] = schema["default"]
            continue
        text = raw.getone(name)
        value: Any = text
        kind = schema.get("type")
        try:
            if kind == "integer":
                value = int(text)
            elif kind == "number":
                value = float(text)
            elif kind == "boolean":
                if text not in ("true", "false"):
                    raise ValueError(text)
                value = text == "true"
        except ValueError:
            errs.append({"path": f"?{name}", "message": f"must be of type {kind}"})
            continue
        errs.extend(errors_for(value, schema, f"?{name}"))
        out[name] = value
    if errs:
        raise ValidationFailed(errs)
    return out


class Router:
    """Collects operations with :meth:`op` and installs them on an app."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def op(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        roles: frozenset[str] | None,
        body: dict[str, Any] | None = None,
        query: dict[str, dict[str, Any]] | None = None,
        ok: tuple[int, dict[str, Any] | None] = (200, None),
        errors: tuple[int, ...] = (),
        also_ok: tuple[int, ...] = (),
        params: dict[str, dict[str, Any]] | None = None,
        raw_body: dict[str, Any] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare an operation. ``params`` gives the schema (a ``pattern``)
        of path parameters that are not record ids; ``raw_body`` documents a
        body the handler reads itself as bytes (``ctx.body``), for bodies that
        must be checked as sent, such as signed events."""

        def register(handler: Handler) -> Handler:
            implied = set(errors)
            if roles is not None:
                implied |= {401, 403}
            if body is not None or raw_body is not None:
                implied |= {400, 422}
            if query:
                implied.add(422)
            if "{" in path:
                implied.add(404)
            self.operations.append(
                Operation(
                    method=method,
                    path=path,
                    handler=handler,
                    operation_id=handler.__name__,
                    summary=summary,
                    tag=tag,
                    roles=roles,
                    body=body,
                    query=dict(query or {}),
                    ok_status=ok[0],
                    ok_schema=ok[1],
                    errors=frozenset(implied),
                    also_ok=also_ok,
                    params=dict(params or {}),
                    raw_body=raw_body,
                )
            )
            return handler

        return register

    def install(self, app: web.Application, authenticate: Authenticator) -> None:
        for op in self.operations:
            app.router.add_route(op.method, aiohttp_path(op.path, op.params), _wrap(op, authenticate))


ID_PATTERN = "[0-9a-f]{32}"
"""Every record id in a path is a 32-digit hex UUID, so ``/streaming/start``
can never be mistaken for ``/streaming/{stream_id}``."""


def aiohttp_path(path: str, params: dict[str, dict[str, Any]] | None = None) -> str:
    """The aiohttp route of ``path``: every ``{..._id}`` matches only a
    record id, and a parameter declared in ``params`` only its pattern."""

    def constrain(m: re.Match[str]) -> str:
        name = m.group(1)
        if params and name in params:
            return "{" + name + ":" + params[name]["pattern"].removeprefix("^").removesuffix("$") + "}"
        if name.endswith("_id"):
            return "{" + name + ":" + ID_PATTERN + "}"
        return m.group(0)

    return re.sub(r"{(\w+)}", constrain, path)


def body_required(schema: dict[str, Any]) -> bool:
    """A body whose schema requires no field may be left out entirely."""
    return bool(schema.get("required"))


def _wrap(op: Operation, authenticate: Authenticator) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        if op.roles is None:
            # Public operations ignore credentials that do not check out
            # rather than refusing a request that needs none.
            try:
                principal = await authenticate(request)
            except (Unauthenticated, Forbidden):
                principal = None
        else:
            principal = await authenticate(request)
        if op.roles is not None:
            if principal is None:
                raise Unauthenticated("this operation needs a bearer token or an API key")
            if principal.role not in op.roles:
                raise Forbidden(f"role {principal.role!r} may not {op.summary[0].lower()}{op.summary[1:]}")
        query = _parse_query(request.query, op.query)
        body: Any = None
        if op.body is not None:
            body = await _read_json(request, body_required(op.body))
            validate(body, op.body)
        elif op.raw_body is not None:
            body = await _read_raw(request)
        reply = await op.handler(RequestCtx(request, principal, body, query))
        if reply.status == 204:
            return web.Response(status=204, headers=reply.headers)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers, dumps=_dumps)

    endpoint.__name__ = op.operation_id
    return endpoint


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def _read_raw(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise MalformedRequest(f"body larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise MalformedRequest(f"body larger than {MAX_BODY_BYTES} bytes")
    return raw


async def _read_json(request: web.Request, required: bool) -> Any:
    raw = await _read_raw(request)
    if not raw:
        if required:
            raise MalformedRequest("this operation needs a JSON body")
        return {}
    ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise MalformedRequest(f"send the body as application/json, not {ctype!r}")
    if _nesting(raw) > MAX_JSON_DEPTH:
        raise MalformedRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_number)
    except ValueError as e:
        raise MalformedRequest(f"body is not valid JSON: {e}") from e
    check_json_text(value)
    return value


_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _nesting(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text, strings skipped; checked
    before parsing so a deep body never reaches the recursive parser."""
    depth = deepest = 0
    for m in _STRING_OR_BRACKET.finditer(raw):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif c in (b"]", b"}"):
            depth -= 1
    return deepest


def _number(text: str) -> float | int:
    """JSON does not tell ``2.0`` from ``2``; neither does JSON Schema's
    ``integer``. Integral numbers become ``int`` so they fit integer fields."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def paged(items: list[Any], query: dict[str, Any]) -> dict[str, Any]:
    """A page of results for ``limit``/``offset`` query parameters;
    ``next_offset`` is null on the last page."""
    limit, offset = query["limit"], query["offset"]
    return {"items": items, "limit": limit, "offset": offset,
            "next_offset": offset + limit if len(items) == limit else None}
