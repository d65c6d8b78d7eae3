"""Schemathesis hooks for the hostile-text run (``SCHEMATHESIS_HOOKS``).

Schemathesis never generates lone surrogates (they cannot be UTF-8) and
rarely nests deeper than a schema does, yet JSON carries both: ``"\\ud800"``
is a valid JSON escape. This hook turns each generated JSON object body into
copies that put a lone surrogate, a NUL character, a surrogate field name or
a deeply nested array into one field, so every operation meets them.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import strategies as st

POISONS = ("\ud800", "x\x00y", "\udfff", "ok\ud83d")


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def variants(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{**body, "\ud800": "x"}, {**body, "nested": _deep(200)}]
    for key, value in body.items():
        for poison in POISONS:
            out.append({**body, key: (value + poison) if isinstance(value, str) else poison})
        out.append({**body, key: _deep(200)})
    return out


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> Any:
    if not isinstance(body, dict):
        return st.just(body)
    return st.sampled_from(variants(body))
