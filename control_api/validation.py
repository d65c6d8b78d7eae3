"""Request validation against the same JSON Schemas the OpenAPI document
publishes, so the document and the checks cannot drift apart.

Supports the subset the API's schemas use: ``type`` (one or a list),
``properties``, ``required``, ``additionalProperties: false``, ``enum``,
``minLength``/``maxLength``/``pattern``, ``minimum``/``maximum``,
``items``/``maxItems``, ``maxProperties``, ``propertyNames`` and ``additionalProperties`` (``false`` or a
schema); ``format: date-time`` is not checked here (the
schemas use numbers for times). Errors carry a JSON-pointer-like path.

A ``pattern`` must match the whole string (:func:`re.fullmatch`): with a
search, ``^[a-z]+$`` accepts ``"admin\n"`` because ``$`` also matches
before a final newline, and a look-alike name would sit beside the real one.

:func:`check_json_text` runs before any schema: it refuses what JSON can
carry but nothing behind the API can hold (nesting deeper than the schemas
use, lone surrogates that are not Unicode text, NUL characters PostgreSQL
will not store), so such bodies are the client's error, never a crash.
"""

from __future__ import annotations

import re
from typing import Any

from control_api.errors import MalformedRequest, ValidationFailed

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a request body may have; the
API's schemas use at most four levels."""

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "number" and isinstance(value, float) and value != value:  # NaN
        return False
    return isinstance(value, _TYPES[name])


def errors_for(value: Any, schema: dict[str, Any], path: str = "") -> list[dict[str, str]]:
    """Every way ``value`` breaks ``schema`` (empty when it is valid)."""
    out: list[dict[str, str]] = []
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_type_ok(value, t) for t in names):
            return [{"path": path, "message": f"must be of type {' or '.join(names)}"}]
    if "enum" in schema and value not in schema["enum"]:
        choices = schema["enum"]
        listed = ", ".join(map(str, choices)) if len(choices) <= 16 else f"the {len(choices)} values the schema lists"
        out.append({"path": path, "message": f"must be one of {listed}"})
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append({"path": path, "message": f"must be at least {schema['minLength']} characters"})
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append({"path": path, "message": f"must be at most {schema['maxLength']} characters"})
        bad = _bad_text(value)
        if bad is not None:
            out.append({"path": path, "message": bad})
        elif "pattern" in schema and re.fullmatch(schema["pattern"], value) is None:
            out.append({"path": path, "message": f"must match {schema['pattern']}"})
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append({"path": path, "message": f"must be at least {schema['minimum']}"})
        if "maximum" in schema and value > schema["maximum"]:
            out.append({"path": path, "message": f"must be at most {schema['maximum']}"})
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append({"path": path, "message": f"must have at least {schema['minItems']} items"})
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append({"path": path, "message": f"must have at most {schema['maxItems']} items"})
        if "items" in schema:
            for i, item in enumerate(value):
                out.extend(errors_for(item, schema["items"], f"{path}/{i}"))
    if isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            out.append({"path": path, "message": f"must have at most {schema['maxProperties']} fields"})
        props: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                out.append({"path": f"{path}/{name}", "message": "is required"})
        extra = schema.get("additionalProperties")
        name_schema: dict[str, Any] | None = schema.get("propertyNames")
        for name, item in value.items():
            if name_schema is not None and isinstance(name, str):
                out.extend(errors_for(name, {"type": "string", **name_schema}, f"{path}/{name}"))
            if name in props:
                out.extend(errors_for(item, props[name], f"{path}/{name}"))
            elif extra is False:
                out.append({"path": f"{path}/{name}", "message": "is not a known field"})
            elif isinstance(extra, dict):
                out.extend(errors_for(item, extra, f"{path}/{name}"))
    return out


def validate(value: Any, schema: dict[str, Any]) -> Any:
    """Return ``value`` when it fits ``schema``; raise :class:`ValidationFailed`."""
    errs = errors_for(value, schema)
    if errs:
        raise ValidationFailed(errs)
    return value


def _bad_text(text: str) -> str | None:
    """Why ``text`` cannot be stored, or ``None`` when it can."""
    if "\x00" in text:
        return "must not contain NUL (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be Unicode text (a lone surrogate is not)"
    return None


def check_json_text(value: Any) -> None:
    """Raise :class:`MalformedRequest` when a parsed JSON body nests deeper
    than :data:`MAX_JSON_DEPTH` or has a key or string that is not storable
    text. Iterative, so a hostile body cannot exhaust the stack here."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            bad = _bad_text(item)
            if bad is not None:
                raise MalformedRequest(f"string at {path or '/'} {bad}")
        elif isinstance(item, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise MalformedRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    bad = _bad_text(key)
                    if bad is not None:
                        raise MalformedRequest(f"a field name in {path or '/'} {bad}")
                    stack.append((child, depth + 1, f"{path}/{key}"))
            else:
                stack.extend((child, depth + 1, f"{path}/{i}") for i, child in enumerate(item))
