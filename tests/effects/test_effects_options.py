"""Spec parsing and option checking, including hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from effects.errors import EffectOptionError
from effects.options import EffectSpec, split_spec_text
from effects.registry import default_registry


def test_parse_spec_with_escapes_and_defaults() -> None:
    registry = default_registry()
    spec = registry.parse("watermark:text=Hello\\, world\\=1,position=BOTTOM-left,opacity=0.5")
    options = spec.options()
    assert options["text"] == "Hello, world=1"
    assert options["position"] == "bottom-left"
    assert options["opacity"] == 0.5
    assert options["scale"] == 0.2
    assert registry.parse(spec.to_text()) == spec


def test_voice_example_from_the_docs() -> None:
    assert default_registry().parse("voice:pitch=1.5").options()["pitch"] == 1.5
    assert default_registry().parse("voice:robot=yes").options()["robot"] is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no effect name"),
        ("sparkle", "unknown effect"),
        ("voice:pitch", "expected key=value"),
        ("voice:pitch=2,pitch=3", "given twice"),
        ("voice:speed=2", "unknown option 'speed'"),
        ("voice:pitch=nan", "finite"),
        ("voice:pitch=10", "above the maximum"),
        ("voice:robot=maybe", "expected bool"),
        ("face_privacy:interval=2.5", "expected int"),
        ("watermark:position=middle", "not one of"),
        ("background:colour=#12345", "not a colour"),
    ],
)
def test_bad_specs_say_why(text: str, message: str) -> None:
    with pytest.raises(EffectOptionError, match=message):
        default_registry().parse(text)


def test_option_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        default_registry().parse("voice:pitch=-1")


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_option_error(text: str) -> None:
    registry = default_registry()
    try:
        spec = registry.parse(text)
    except EffectOptionError:
        return
    assert spec.name in registry
    assert registry.parse(spec.to_text()) == spec


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), st.text(max_size=20), min_size=1, max_size=5))
def test_split_round_trips_escaped_values(values: dict[str, str]) -> None:
    spec = EffectSpec("x", tuple(values.items()))
    name, parsed = split_spec_text(spec.to_text())
    assert name == "x"
    assert parsed == values


@given(st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.booleans(), st.lists(st.integers())))
def test_json_values_are_checked(value: object) -> None:
    registry = default_registry()
    try:
        spec = registry.from_settings({"effect": "voice", "pitch": value})
    except EffectOptionError:
        return
    assert 0.25 <= spec.options()["pitch"] <= 4.0
