"""Typed effect options and the ``NAME:key=value,...`` spec syntax.

An effect spec is what a creator types on the command line
(``watermark:text=FANZ,position=bottom-right``) and what the config file and
the control API's stream record hold as JSON
(``{"effect": "watermark", "text": "FANZ", "position": "bottom-right"}``).
Both forms parse to the same :class:`EffectSpec`, whose option values are
already checked against the effect's :class:`Option` list, so a stage never
sees a value of the wrong type.

A value may contain a comma or an equals sign when escaped with a
backslash (``text=Hello\\, world``).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from effects.errors import EffectOptionError

_NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    # RGB; stages convert to OpenCV's BGR order themselves.
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "green": (0, 177, 64),
    "blue": (0, 71, 171),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "yellow": (255, 214, 0),
    "pink": (255, 105, 180),
}
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


class OptionType(enum.Enum):
    """The value types an option can have; each parses from text and from
    JSON."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STR = "str"
    CHOICE = "choice"
    COLOUR = "colour"
    PATH = "path"


def parse_colour(text: str) -> tuple[int, int, int]:
    """``#RRGGBB``, ``RRGGBB`` or a colour name, as an RGB triple."""
    name = text.strip().lower()
    if name in _NAMED_COLOURS:
        return _NAMED_COLOURS[name]
    match = _HEX.match(name)
    if match is None:
        known = ", ".join(sorted(_NAMED_COLOURS))
        raise EffectOptionError(f"not a colour: {text!r} (use #RRGGBB or one of {known})")
    value = int(match.group(1), 16)
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


@dataclass(frozen=True, slots=True)
class Option:
    """One option of an effect: its type, default, range and documentation."""

    name: str
    type: OptionType
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """A one-line description for ``effects list``."""
        if self.type is OptionType.CHOICE:
            kind = "|".join(self.choices)
        else:
            kind = self.type.value
            if self.minimum is not None or self.maximum is not None:
                lo = "" if self.minimum is None else f"{self.minimum:g}"
                hi = "" if self.maximum is None else f"{self.maximum:g}"
                kind += f" {lo}..{hi}"
        default = "none" if self.default is None or self.default == "" else repr(self.default)
        return f"{self.name} ({kind}, default {default}): {self.doc}"

    def coerce(self, value: Any, effect: str) -> Any:
        """Check ``value`` (text from the command line or a JSON value) and
        return it in the option's type. Raises :class:`EffectOptionError`."""
        where = f"{effect}: option {self.name}"
        try:
            result = self._convert(value)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, EffectOptionError):
                raise EffectOptionError(f"{where}: {exc}") from None
            raise EffectOptionError(f"{where}: expected {self.type.value}, got {value!r}") from None
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            if isinstance(result, float) and not math.isfinite(result):
                raise EffectOptionError(f"{where}: expected a finite number, got {value!r}")
            if self.minimum is not None and result < self.minimum:
                raise EffectOptionError(f"{where}: {result} is below the minimum {self.minimum:g}")
            if self.maximum is not None and result > self.maximum:
                raise EffectOptionError(f"{where}: {result} is above the maximum {self.maximum:g}")
        return result

    def _convert(self, value: Any) -> Any:
        kind = self.type
        if kind is OptionType.BOOL:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is OptionType.INT:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value) if isinstance(value, (int, float)) else int(str(value).strip(), 10)
        if kind is OptionType.FLOAT:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value) if isinstance(value, (int, float)) else float(str(value).strip())
        if not isinstance(value, str):
            raise TypeError(value)
        if kind is OptionType.CHOICE:
            text = value.strip().lower()
            if text not in self.choices:
                raise EffectOptionError(f"{value!r} is not one of {', '.join(self.choices)}")
            return text
        if kind is OptionType.COLOUR:
            parse_colour(value)
            return value.strip().lower()
        if len(value) > 4096:
            raise EffectOptionError("value longer than 4096 characters")
        if "\x00" in value:
            raise EffectOptionError("value contains a NUL character")
        return value


@dataclass(frozen=True, slots=True)
class EffectSpec:
    """One configured effect: its name and checked option values (every
    option of the effect present, defaults filled in). Specs compare equal
    when their settings are equal, which is how a live update keeps stages
    whose settings did not change."""

    name: str
    values: tuple[tuple[str, Any], ...] = field(default=())

    def options(self) -> dict[str, Any]:
        return dict(self.values)

    def to_settings(self) -> dict[str, Any]:
        """The JSON form: ``{"effect": name, option: value, ...}``."""
        return {"effect": self.name, **dict(self.values)}

    def to_text(self) -> str:
        """The command-line form, which :func:`split_spec_text` reads back."""
        parts = [f"{key}={_escape(str(value).lower() if isinstance(value, bool) else str(value))}"
                 for key, value in self.values]
        return self.name + (":" + ",".join(parts) if parts else "")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def split_spec_text(text: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME:key=value,...`` into the name and raw text values,
    honouring backslash escapes. Values are checked later against the
    effect's options."""
    name, sep, rest = text.partition(":")
    name = name.strip().lower()
    if not name:
        raise EffectOptionError(f"effect spec {text!r} has no effect name")
    values: dict[str, str] = {}
    if not sep or not rest.strip():
        return name, values
    for item in _split_unescaped(rest, ","):
        key, eq, value = _partition_unescaped(item, "=")
        key = _unescape(key).strip().lower()
        if not eq or not key:
            raise EffectOptionError(f"{name}: expected key=value, got {_unescape(item)!r}")
        if key in values:
            raise EffectOptionError(f"{name}: option {key} given twice")
        values[key] = _unescape(value)
    return name, values


def _split_unescaped(text: str, sep: str) -> Iterable[str]:
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            yield "".join(current)
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\\\")
    yield "".join(current)


def _partition_unescaped(text: str, sep: str) -> tuple[str, str, str]:
    escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            return text[:i], sep, text[i + 1:]
    return text, "", ""


def _unescape(text: str) -> str:
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    if escaped:
        out.append("\\")
    return "".join(out)


def check_values(effect: str, options: tuple[Option, ...], raw: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Fill defaults and check every given value against ``options``."""
    by_name = {option.name: option for option in options}
    unknown = sorted(set(raw) - set(by_name))
    if unknown:
        known = ", ".join(by_name) or "none"
        raise EffectOptionError(f"{effect}: unknown option {unknown[0]!r} (options: {known})")
    return tuple(
        (option.name, option.coerce(raw[option.name], effect) if option.name in raw else option.default)
        for option in options
    )
