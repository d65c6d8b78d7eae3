"""A small typed-settings loader: dataclasses filled from TOML and the
environment.

Every field of a settings dataclass can be set in the TOML file (``[section]
key = value``) and from an environment variable named ``PREFIX_SECTION_KEY``
(upper case). Field documentation lives next to the field
(``field(metadata={"doc": ...})``) so the README's table is generated from
the code rather than kept by hand.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import ConfigError

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with documentation attached."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"doc": text})
    return dataclasses.field(default=default, metadata={"doc": text})


@dataclasses.dataclass(frozen=True, slots=True)
class SettingInfo:
    """One leaf setting, for documentation."""

    path: tuple[str, ...]
    env: str
    type_name: str
    default: Any
    doc: str


@functools.cache
def _attribute_docs(cls: type) -> dict[str, str]:
    """Docstrings written under fields (``x: int = 1`` then a string)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _has_field(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_settings(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a TOML value or an environment string to the field's type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value == "" and type(None) in args):
            return None
        return coerce(value, non_none[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float):
        what = "an integer" if tp is int else "a number"
        if isinstance(value, bool):  # TOML true is not 1
            raise ConfigError(f"{where}: expected {what}, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: expected {what}, got {value!r}") from exc
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Fraction:
        try:
            return Fraction(str(value)) if not isinstance(value, Fraction) else value
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            raise ConfigError(f"{where}: expected a number or a ratio such as 30000/1001, got {value!r}") from exc
    if _is_settings(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return build(tp, value, {}, "", where)
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if origin in (list, tuple, frozenset):
        item_tp = args[0] if args else str
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = [coerce(v, item_tp, where) for v in value]
        return origin(items) if origin is not list else items
    if origin is dict:
        val_tp = args[1] if len(args) > 1 else str
        if isinstance(value, str):
            pairs: dict[str, Any] = {}
            for part in value.split(","):
                if not part.strip():
                    continue
                k, sep, v = part.partition("=")
                if not sep:
                    raise ConfigError(f"{where}: expected KEY=VALUE pairs separated by commas")
                pairs[k.strip()] = v.strip()
            value = pairs
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        out: dict[str, Any] = {}
        for k, item in value.items():
            named: Any = item
            if _is_settings(val_tp) and isinstance(item, Mapping) and "name" not in item and _has_field(val_tp, "name"):
                named = {**item, "name": str(k)}  # [section.things.NAME] names the thing
            out[str(k)] = coerce(named, val_tp, f"{where}.{k}")
        return out
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError as exc:
            choices = ", ".join(str(m.value) for m in tp)
            raise ConfigError(f"{where}: expected one of {choices}, got {value!r}") from exc
    raise ConfigError(f"{where}: unsupported setting type {tp!r}")


def build(cls: type[T], table: Mapping[str, Any], env: Mapping[str, str], prefix: str, where: str = "") -> T:
    """Build ``cls`` from a TOML table, letting environment variables win."""
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{where or 'top level'}]: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.metadata.get("internal"):
            continue  # set by the program, not by the operator
        tp = hints[f.name]
        name = f"{where}.{f.name}" if where else f.name
        env_name = f"{prefix}_{f.name}".upper() if prefix else ""
        if _is_settings(tp):
            sub = table.get(f.name, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"[{name}] must be a table")
            values[f.name] = build(tp, sub, env, env_name, name)
            continue
        if env_name and env_name in env:
            values[f.name] = coerce(env[env_name], tp, env_name)
        elif f.name in table:
            values[f.name] = coerce(table[f.name], tp, name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where or 'top level'}]: {exc}") from exc


def describe(cls: type, prefix: str, path: tuple[str, ...] = ()) -> Iterator[SettingInfo]:
    """Every leaf setting of ``cls`` with its environment name and default."""
    hints = _hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        env_name = f"{prefix}_{f.name}".upper()
        if _is_settings(tp):
            yield from describe(tp, env_name, (*path, f.name))
            continue
        default = getattr(instance, f.name)
        yield SettingInfo(
            path=(*path, f.name),
            env=env_name,
            type_name=_type_name(tp),
            default=default,
            doc=str(f.metadata.get("doc", "")) or _attribute_docs(cls).get(f.name, ""),
        )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None)) + " (optional)"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))
