"""The effect chain: the stage between decode and the transcode ladder.

A chain is built from effect specs (command-line text, JSON settings or
:class:`EffectSpec` values) and processes one stream's frames in order:
:meth:`EffectChain.process_video` and :meth:`EffectChain.process_audio`
take and return PyAV frames with the same size, format, ``pts`` and
``time_base``. Work happens in NumPy/OpenCV/OpenCV-DNN, all of which
release the GIL, so the caller runs the chain in a worker thread (for
example ``loop.run_in_executor``), never on the event loop.

Live changes: :meth:`EffectChain.update` builds the new stages (loading
models and files, which may take a while) without holding the lock, then
swaps them in; the next frame uses them. Stages whose spec did not change
are kept with their state (face tracks, masks, audio delay line) and their
statistics. One thread processes a chain's frames at a time; ``update`` and
``stats`` may be called from any thread.

Keeping up: with ``budget_ms`` set (the frame interval, e.g. 33 ms at 30
fps), the chain keeps a running debt of time spent over budget. While in
debt it skips whole frames of its costliest non-critical stages (counted
per stage as ``skipped``: the effect is visibly missing on that frame)
instead of falling further behind. Critical stages (face privacy,
background, voice) always run, because skipping them would reveal what the
creator hid or break the audio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import av

from effects.errors import EffectOptionError
from effects.frames import VideoConverter, audio_to_samples, samples_to_audio
from effects.models import ModelStore
from effects.options import EffectSpec
from effects.registry import EffectRegistry, default_registry
from effects.stage import EffectInfo, StageContext, StageKind

SpecLike = EffectSpec | str | Mapping[str, Any]

_EMA = 0.1  # weight of the newest frame in a stage's running cost


@dataclass(frozen=True, slots=True)
class StageStats:
    """Timing of one stage, for metrics: frames processed and skipped, and
    milliseconds per processed frame (mean over the stage's life, running
    average, last and worst)."""

    index: int
    name: str
    kind: str
    frames: int
    skipped: int
    mean_ms: float
    recent_ms: float
    last_ms: float
    max_ms: float


class _Stage:
    """A built stage with its counters."""

    def __init__(self, spec: EffectSpec, info: EffectInfo, impl: Any) -> None:
        self.spec = spec
        self.info = info
        self.impl = impl
        self.frames = 0
        self.skipped = 0
        self.total = 0.0
        self.recent = 0.0
        self.last = 0.0
        self.worst = 0.0

    def record(self, seconds: float) -> None:
        self.frames += 1
        self.total += seconds
        self.last = seconds
        self.worst = max(self.worst, seconds)
        self.recent = seconds if self.frames == 1 else self.recent + _EMA * (seconds - self.recent)


class EffectChain:
    """Effects applied to one stream, changeable while live."""

    def __init__(
        self,
        specs: Iterable[SpecLike] = (),
        *,
        registry: EffectRegistry | None = None,
        models: ModelStore | None = None,
        budget_ms: float | None = None,
    ) -> None:
        self._registry = registry if registry is not None else default_registry()
        self._context = StageContext(models if models is not None else ModelStore())
        self._budget = None if budget_ms is None else budget_ms / 1000.0
        self._lock = threading.Lock()
        self._video_debt = 0.0
        self._converter = VideoConverter()
        self._stages: tuple[_Stage, ...] = self._build(self._normalise(specs), ())

    @classmethod
    def from_settings(
        cls,
        settings: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        registry: EffectRegistry | None = None,
        models: ModelStore | None = None,
    ) -> EffectChain:
        """Build from the JSON form: ``{"effects": [{"effect": NAME, ...},
        ...], "budget_ms": 33}`` (``budget_ms`` optional), or just the list."""
        effects, budget = _read_settings(settings)
        return cls(effects, registry=registry, models=models, budget_ms=budget)

    def to_settings(self) -> dict[str, Any]:
        """The JSON form that :meth:`from_settings` reads back."""
        settings: dict[str, Any] = {"effects": [stage.spec.to_settings() for stage in self._stages]}
        if self._budget is not None:
            settings["budget_ms"] = self._budget * 1000.0
        return settings

    @property
    def specs(self) -> tuple[EffectSpec, ...]:
        return tuple(stage.spec for stage in self._stages)

    def has(self, kind: StageKind) -> bool:
        return any(stage.info.kind is kind for stage in self._stages)

    def update(self, specs: Iterable[SpecLike] | Mapping[str, Any]) -> None:
        """Replace the effects; takes effect on the next frame.

        Accepts specs or the settings mapping. Every spec is checked and
        every stage built before anything changes, so a bad update raises
        :class:`EffectOptionError` and leaves the running chain as it was.
        """
        if isinstance(specs, Mapping):
            effects, budget = _read_settings(specs)
            new_specs = self._normalise(effects)
        else:
            new_specs = self._normalise(specs)
            budget = None if self._budget is None else self._budget * 1000.0
        with self._lock:
            current = self._stages
        stages = self._build(new_specs, current)
        with self._lock:
            self._stages = stages
            self._budget = None if budget is None else budget / 1000.0

    def process_video(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Apply the video effects to one frame (call in order, off the
        event loop). Returns ``frame`` itself when no video effect is set."""
        with self._lock:
            stages = [stage for stage in self._stages if stage.info.kind is StageKind.VIDEO]
            budget = self._budget
        if not stages:
            return frame
        skip = self._choose_skips(stages, budget)
        started = time.perf_counter()
        image = self._converter.to_image(frame)
        for stage in stages:
            if stage in skip:
                stage.skipped += 1
                continue
            before = time.perf_counter()
            image = stage.impl.process(image)
            stage.record(time.perf_counter() - before)
        out = self._converter.to_frame(image, frame)
        if budget is not None:
            spent = time.perf_counter() - started
            self._video_debt = min(max(0.0, self._video_debt + spent - budget), 8 * budget)
        return out

    def process_audio(self, frame: av.AudioFrame) -> av.AudioFrame:
        """Apply the audio effects to one frame: same sample count, format
        and timestamps. Returns ``frame`` itself when no audio effect is
        set."""
        with self._lock:
            stages = [stage for stage in self._stages if stage.info.kind is StageKind.AUDIO]
        if not stages:
            return frame
        samples = audio_to_samples(frame)
        for stage in stages:
            before = time.perf_counter()
            samples = stage.impl.process(samples, frame.sample_rate)
            stage.record(time.perf_counter() - before)
        return samples_to_audio(samples, frame)

    def stats(self) -> list[StageStats]:
        """Per-stage counters and timings (milliseconds)."""
        with self._lock:
            stages = self._stages
        return [
            StageStats(
                index=index,
                name=stage.info.name,
                kind=stage.info.kind.value,
                frames=stage.frames,
                skipped=stage.skipped,
                mean_ms=1000.0 * stage.total / stage.frames if stage.frames else 0.0,
                recent_ms=1000.0 * stage.recent,
                last_ms=1000.0 * stage.last,
                max_ms=1000.0 * stage.worst,
            )
            for index, stage in enumerate(stages)
        ]

    def _choose_skips(self, stages: list[_Stage], budget: float | None) -> set[_Stage]:
        """While in debt, skip the costliest non-critical stages until their
        running cost covers the debt."""
        if budget is None or self._video_debt <= 0:
            return set()
        skippable = sorted((s for s in stages if not s.info.critical), key=lambda s: s.recent, reverse=True)
        chosen: set[_Stage] = set()
        saved = 0.0
        for stage in skippable:
            if saved >= self._video_debt:
                break
            chosen.add(stage)
            saved += stage.recent
        return chosen

    def _normalise(self, specs: Iterable[SpecLike]) -> list[EffectSpec]:
        if isinstance(specs, (str, bytes)) or isinstance(specs, Mapping):
            raise EffectOptionError("effects must be given as a list of specs")
        return [self._registry.coerce(spec) for spec in specs]

    def _build(self, specs: list[EffectSpec], current: Sequence[_Stage]) -> tuple[_Stage, ...]:
        spare = list(current)
        built: list[_Stage] = []
        for spec in specs:
            reuse = next((stage for stage in spare if stage.spec == spec), None)
            if reuse is not None:
                spare.remove(reuse)
                built.append(reuse)
                continue
            info = self._registry.get(spec.name)
            built.append(_Stage(spec, info, info.factory(spec.options(), self._context)))
        return tuple(built)


def _read_settings(settings: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> tuple[list[Any], float | None]:
    if isinstance(settings, Mapping):
        effects = settings.get("effects", [])
        budget = settings.get("budget_ms")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
            raise EffectOptionError(f"budget_ms must be a positive number, got {budget!r}")
        unknown = set(settings) - {"effects", "budget_ms"}
        if unknown:
            raise EffectOptionError(f"unknown effects setting {sorted(unknown)[0]!r} (settings: effects, budget_ms)")
    else:
        effects, budget = settings, None
    if isinstance(effects, (str, bytes)) or not isinstance(effects, Sequence):
        raise EffectOptionError("\"effects\" must be a list of {\"effect\": NAME, ...} objects")
    return list(effects), None if budget is None else float(budget)
