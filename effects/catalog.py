"""What each built-in effect is called, what it works on and which options
it takes: the effects' metadata, without their implementations.

This module imports no image or media library (no NumPy, OpenCV, Pillow or
PyAV), so the config loader and the control API can check effect specs
whether or not the ``effects`` extra is installed. Each implementation
module builds its :class:`~effects.stage.EffectInfo` from its entry here
(:meth:`EffectInfo.of`), so the metadata exists once.

:class:`EffectCatalog` parses and checks specs against any table of
entries: :func:`default_catalog` (metadata only) or
:func:`effects.registry.default_registry` (entries that can also build
stages).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from effects.errors import EffectOptionError
from effects.options import EffectSpec, Option, OptionType, check_values, split_spec_text


class StageKind(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class EffectMeta:
    """One effect's name, kind, summary and options.

    ``critical`` stages are never skipped when the chain runs late (a face
    blur that skipped a frame would show the face); the others are skipped
    whole frames at a time, counted, so a slow stage cannot stall the
    stream.
    """

    name: str
    kind: StageKind
    summary: str
    options: tuple[Option, ...]
    critical: bool = False

    def describe(self) -> str:
        lines = [f"{self.name} ({self.kind.value}): {self.summary}"]
        lines += [f"    {option.describe()}" for option in self.options]
        return "\n".join(lines)


E = TypeVar("E", bound=EffectMeta)


class EffectCatalog(Generic[E]):
    """Effects by name, and spec parsing against them."""

    def __init__(self, effects: Iterable[E]) -> None:
        self._effects: dict[str, E] = {}
        for info in effects:
            if info.name in self._effects:
                raise ValueError(f"effect {info.name} registered twice")
            self._effects[info.name] = info

    def __iter__(self) -> Iterator[E]:
        return iter(self._effects.values())

    def __contains__(self, name: object) -> bool:
        return name in self._effects

    def get(self, name: str) -> E:
        try:
            return self._effects[name]
        except KeyError:
            known = ", ".join(self._effects)
            raise EffectOptionError(f"unknown effect {name!r} (effects: {known})") from None

    def spec(self, name: str, values: Mapping[str, Any] | None = None) -> EffectSpec:
        """A checked spec for effect ``name`` with ``values`` (text or JSON
        values; missing options take their defaults)."""
        info = self.get(name)
        return EffectSpec(info.name, check_values(info.name, info.options, values or {}))

    def parse(self, text: str) -> EffectSpec:
        """Parse ``NAME:key=value,...``."""
        name, values = split_spec_text(text)
        return self.spec(name, values)

    def from_settings(self, item: Mapping[str, Any]) -> EffectSpec:
        """Parse the JSON form ``{"effect": NAME, key: value, ...}``."""
        if not isinstance(item, Mapping):
            raise EffectOptionError(f"an effect setting must be an object, got {type(item).__name__}")
        name = item.get("effect")
        if not isinstance(name, str):
            raise EffectOptionError(f"an effect setting needs \"effect\": NAME, got {dict(item)!r}")
        values = {key: value for key, value in item.items() if key != "effect"}
        return self.spec(name.strip().lower(), values)

    def coerce(self, spec: EffectSpec | str | Mapping[str, Any]) -> EffectSpec:
        """Accept any of the three forms."""
        if isinstance(spec, EffectSpec):
            return self.spec(spec.name, spec.options())
        if isinstance(spec, str):
            return self.parse(spec)
        return self.from_settings(spec)

    def describe(self) -> str:
        """Every effect with its options, for ``effects list``."""
        return "\n\n".join(info.describe() for info in self)


ARTWORK_NAMES = ("glasses", "mask", "crown", "whiskers")
COLOR_PRESETS = ("none", "warm", "cool", "mono", "vintage")
WATERMARK_POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")

BACKGROUND = EffectMeta(
    name="background",
    kind=StageKind.VIDEO,
    summary="replace the background with a colour or an image, or blur it (never skipped)",
    options=(
        Option("mode", OptionType.CHOICE, "blur", "what to show behind the person",
               choices=("blur", "colour", "image")),
        Option("colour", OptionType.COLOUR, "green", "backdrop colour for mode=colour"),
        Option("image", OptionType.PATH, "", "backdrop picture for mode=image (scaled to cover)"),
        Option("blur", OptionType.FLOAT, 0.6, "blur strength for mode=blur", 0.0, 1.0),
        Option("threshold", OptionType.FLOAT, 0.5, "person probability at the edge", 0.05, 0.95),
        Option("softness", OptionType.FLOAT, 0.3, "width of the soft edge in probability", 0.0, 1.0),
        Option("smoothing", OptionType.FLOAT, 0.4, "weight of the previous mask (0 = none)", 0.0, 0.95),
        Option("interval", OptionType.INT, 2, "run the segmentation model every N frames, reuse it between", 1, 10),
    ),
    critical=True,
)

FACE_PRIVACY = EffectMeta(
    name="face_privacy",
    kind=StageKind.VIDEO,
    summary="detect faces and blur or pixelate them (never skipped)",
    options=(
        Option("mode", OptionType.CHOICE, "blur", "how to hide a face", choices=("blur", "pixelate")),
        Option("strength", OptionType.FLOAT, 0.7, "0 light .. 1 strongest", 0.0, 1.0),
        Option("grow", OptionType.FLOAT, 0.2, "enlarge each face box by this fraction per side", 0.0, 1.0),
        Option("interval", OptionType.INT, 5, "run the detector every N frames, track between", 1, 60),
        Option("threshold", OptionType.FLOAT, 0.6, "detector score needed", 0.05, 0.99),
    ),
    critical=True,
)

BEAUTY = EffectMeta(
    name="beauty",
    kind=StageKind.VIDEO,
    summary="skin smoothing (edge-preserving, skin only), brightness and warmth",
    options=(
        Option("smooth", OptionType.FLOAT, 0.5, "skin smoothing strength", 0.0, 1.0),
        Option("brightness", OptionType.FLOAT, 0.0, "-1 darker .. 1 brighter", -1.0, 1.0),
        Option("warmth", OptionType.FLOAT, 0.0, "-1 cooler .. 1 warmer", -1.0, 1.0),
    ),
)

COLOR = EffectMeta(
    name="color",
    kind=StageKind.VIDEO,
    summary="colour presets (warm, cool, mono, vintage) and .cube LUT files (1D or 3D)",
    options=(
        Option("preset", OptionType.CHOICE, "none", "a built-in look", choices=COLOR_PRESETS),
        Option("lut", OptionType.PATH, "", ".cube file, applied after the preset"),
        Option("strength", OptionType.FLOAT, 1.0, "mix with the original: 0 none .. 1 full", 0.0, 1.0),
    ),
)

FACE_FILTER = EffectMeta(
    name="face_filter",
    kind=StageKind.VIDEO,
    summary="AR artwork anchored to each face (landmarks from BlazeFace, tracked between detections)",
    options=(
        Option("overlay", OptionType.STR, "glasses",
               f"artwork, several joined with '+': {', '.join(ARTWORK_NAMES)}"),
        Option("interval", OptionType.INT, 3, "run the detector every N frames, track between", 1, 60),
        Option("threshold", OptionType.FLOAT, 0.6, "detector score needed", 0.05, 0.99),
    ),
)

WATERMARK = EffectMeta(
    name="watermark",
    kind=StageKind.VIDEO,
    summary="brand every frame with an image (PNG with alpha) and/or text",
    options=(
        Option("text", OptionType.STR, "", "text to draw"),
        Option("image", OptionType.PATH, "", "PNG file (alpha respected)"),
        Option("position", OptionType.CHOICE, "bottom-right", "where to place it", choices=WATERMARK_POSITIONS),
        Option("margin", OptionType.FLOAT, 0.03, "gap to the frame edge, fraction of frame height", 0.0, 0.5),
        Option("opacity", OptionType.FLOAT, 0.85, "0 transparent .. 1 opaque", 0.0, 1.0),
        Option("scale", OptionType.FLOAT, 0.2, "watermark width as a fraction of frame width", 0.01, 1.0),
        Option("colour", OptionType.COLOUR, "white", "text colour (#RRGGBB or a name)"),
        Option("font", OptionType.PATH, "", "TrueType font file (default: Pillow's built-in font)"),
    ),
)

VOICE = EffectMeta(
    name="voice",
    kind=StageKind.AUDIO,
    summary="voice changer for privacy: pitch shift and robot voice (adds at most window_ms of delay)",
    options=(
        Option("pitch", OptionType.FLOAT, 1.0, "pitch ratio: 2 = an octave up, 0.5 = an octave down", 0.25, 4.0),
        Option("window_ms", OptionType.FLOAT, 30.0, "delay-line length; the most delay added", 5.0, 45.0),
        Option("robot", OptionType.BOOL, False, "ring-modulated robot voice"),
        Option("robot_hz", OptionType.FLOAT, 50.0, "robot carrier frequency", 5.0, 500.0),
        Option("robot_mix", OptionType.FLOAT, 1.0, "robot effect mix: 0 dry .. 1 full", 0.0, 1.0),
    ),
    critical=True,
)

BUILTIN = (BACKGROUND, FACE_PRIVACY, BEAUTY, COLOR, FACE_FILTER, WATERMARK, VOICE)
"""Every built-in effect, in the order a creator would usually chain them
(privacy first, so later stages never see the hidden parts)."""


def default_catalog() -> EffectCatalog[EffectMeta]:
    """The built-in effects' metadata (no implementation is imported)."""
    return EffectCatalog(BUILTIN)
