"""Request validation against the same JSON Schemas the OpenAPI document
publishes, so the document and the checks cannot drift apart.

Supports the subset the API's schemas use: ``type`` (one or a list),
``properties``, ``required``, ``additionalProperties: false``, ``enum``,
``minLength``/``maxLength``/``pattern``, ``minimum``/``maximum``,
``items``/``maxItems``, ``maxProperties``; ``format: date-time`` is not checked here (the
schemas use numbers for times). Errors carry a JSON-pointer-like path.
"""

from __future__ import annotations

import re
from typing import Any

from control_api.errors import ValidationFailed

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
        out.append({"path": path, "message": f"must be one of {', '.join(map(str, schema['enum']))}"})
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append({"path": path, "message": f"must be at least {schema['minLength']} characters"})
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append({"path": path, "message": f"must be at most {schema['maxLength']} characters"})
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            out.append({"path": path, "message": f"must match {schema['pattern']}"})
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append({"path": path, "message": f"must be at least {schema['minimum']}"})
        if "maximum" in schema and value > schema["maximum"]:
            out.append({"path": path, "message": f"must be at most {schema['maximum']}"})
    if isinstance(value, list):
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
        for name, item in value.items():
            if name in props:
                out.extend(errors_for(item, props[name], f"{path}/{name}"))
            elif schema.get("additionalProperties") is False:
                out.append({"path": f"{path}/{name}", "message": "is not a known field"})
    return out


def validate(value: Any, schema: dict[str, Any]) -> Any:
    """Return ``value`` when it fits ``schema``; raise :class:`ValidationFailed`."""
    errs = errors_for(value, schema)
    if errs:
        raise ValidationFailed(errs)
    return value
