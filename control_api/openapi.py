"""The OpenAPI 3.1 document, generated from the declared operations.

Nothing is written by hand here: paths, parameters, bodies, responses and
security come from :class:`control_api.routing.Router`, so a route cannot
exist without its description and vice versa.
"""

from __future__ import annotations

import re
from typing import Any

from control_api import schemas as S
from control_api.routing import ID_PATTERN, Operation, Router, body_required

_STATUS_TEXT = {
    400: "The request could not be read",
    401: "Authentication required or failed",
    403: "The caller may not do this",
    404: "No such resource",
    409: "Conflicts with the resource's state",
    422: "The request is invalid",
    429: "Too many requests",
    451: "Unavailable in the caller's country (the stream's geographic restriction)",
}


NO_NUL = "^[^\\u0000]*$"
"""What every request string without a pattern of its own is published
with: the API refuses NUL characters (and lone surrogates, which JSON Schema
cannot express), so the document says so and generated clients never send
them."""


def storable_text(schema: Any) -> Any:
    """A copy of a request schema in which every free-text string carries
    :data:`NO_NUL`."""
    if isinstance(schema, list):
        return [storable_text(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: storable_text(v) for k, v in schema.items()}
    types = schema.get("type")
    is_string = types == "string" or (isinstance(types, list) and "string" in types)
    if is_string and not {"enum", "const", "pattern"} & set(schema):
        out["pattern"] = NO_NUL
    return out


def _operation(op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": op.params.get(name, {"type": "string", "pattern": f"^{ID_PATTERN}$"})}
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    for name, schema in op.query.items():
        params.append({"name": name, "in": "query", "required": False, "schema": storable_text(schema)})
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": body_required(op.body),
                              "content": {"application/json": {"schema": storable_text(op.body)}}}
    elif op.raw_body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.raw_body}}}
    responses: dict[str, Any] = {}
    if op.ok_schema is None:
        responses[str(op.ok_status)] = {"description": "Done"}
    else:
        responses[str(op.ok_status)] = {"description": "Success",
                                        "content": {"application/json": {"schema": op.ok_schema}}}
    for status in op.also_ok:
        responses[str(status)] = responses[str(op.ok_status)]
    for status in sorted(op.errors):
        responses[str(status)] = {
            "description": _STATUS_TEXT.get(status, "Error"),
            "content": {"application/problem+json": {"schema": S.ref("Problem")}},
        }
    out["responses"] = responses
    if op.roles is not None:
        schemes: list[dict[str, list[str]]] = []
        if op.roles - {"service"}:
            schemes.append({"bearerAuth": []})
        if "service" in op.roles:
            schemes.append({"apiKey": []})
        out["security"] = schemes
        out["description"] = "Roles: " + ", ".join(sorted(op.roles)) + "."
    return out


def build(router: Router, prefix: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in router.operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Fanz Media Engine control API",
            "version": "1.0.0",
            "description": "Streams, stream keys, viewers, gifts, subscriptions, pay-per-view, payment processor "
            "events and webhooks. "
            "Errors are RFC 9457 problem details. Times are seconds since the Unix epoch; money is in cents. "
            "Request bodies nest at most 32 levels; strings and field names hold no NUL (U+0000) and no lone "
            "surrogate; a pattern must match the whole string.",
        },
        "servers": [{"url": prefix}],
        "paths": paths,
        "components": {
            "schemas": S.COMPONENTS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
