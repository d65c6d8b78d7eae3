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

Using more than one core: the chain owns ``threads - 1`` helper threads
(:mod:`effects.workers`; by default one). Stages hand their model
inference to them (segmentation, face detection) and collect the result on
the next frame, so the networks run while the caller's thread does the
per-pixel work, and the output does not depend on the number of threads.
OpenCV's own thread pool (used inside resizes, blurs and the networks) is
process-wide and left to the program that runs the chain
(``cv2.setNumThreads``; OpenCV's default is one thread per core).

Keeping up: with ``budget_ms`` set (the frame interval, e.g. 33 ms at 30
fps), the chain plans each frame from the recent cost of each stage and of
the frame conversions, and keeps a running debt of time spent over budget.
When the planned frame would not fit in the budget less an eighth of the
debt (a spike, such as a moment of load from elsewhere on the machine, is
paid back over several frames rather than by stripping the next one bare),
it makes
the frame cheaper, in this order, until it fits: it skips the costliest
non-critical stages (counted per stage as ``skipped``: the effect is
visibly missing on that frame), then asks critical stages that can to reuse
their last analysis (``reused``: the background is composed with the last
mask, faces are tracked but not detected anew). Critical stages (face
privacy, background, voice) are never skipped, because skipping them would
reveal what the creator hid or break the audio. So the chain's time per
frame stays within the budget on average whenever the conversions and the
critical stages' cheapest form fit in it; otherwise it does the least it
may and runs late. A stage's first run (set-up: a network's first inference
allocates) is not counted as lateness, and a skipped stage's cost estimate
fades with each skip, so it is tried again now and then and comes back when
the machine has room.
"""

from __future__ import annotations

import enum
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
from effects.stage import EffectInfo, ReusingStage, StageContext, StageKind
from effects.workers import Helpers

SpecLike = EffectSpec | str | Mapping[str, Any]

_EMA = 0.1  # weight of the newest frame in a stage's running cost
_DEBT_LIMIT = 8.0  # budgets of lateness the chain remembers and pays back
_PAYBACK_FRAMES = 8.0  # frames over which a debt is paid back (a spike costs a little on many frames)
_SKIP_DECAY = 0.97  # a skipped stage's cost estimate shrinks by this per skip, so it is tried again
DEFAULT_THREADS = 2
"""Threads one chain may use: the caller's and one helper for models."""


class _Action(enum.Enum):
    RUN = "run"
    REUSE = "reuse"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class StageStats:
    """Timing of one stage, for metrics: frames processed (``reused`` of
    them from the stage's last analysis) and skipped, and milliseconds per
    processed frame (mean over the stage's life, running average of full
    runs, last and worst). ``frames + skipped`` is every frame the stage
    saw."""

    index: int
    name: str
    kind: str
    frames: int
    skipped: int
    reused: int
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
        self.reused = 0
        self.total = 0.0
        self.recent = 0.0
        self.recent_reuse = 0.0
        self.last = 0.0
        self.worst = 0.0

    @property
    def can_reuse(self) -> bool:
        return isinstance(self.impl, ReusingStage)

    def record(self, seconds: float, reused: bool = False) -> bool:
        """Count one frame; True when it was the stage's first full run,
        which includes one-off set-up (a network's first inference allocates)
        and so does not seed the running cost."""
        self.frames += 1
        self.total += seconds
        self.last = seconds
        self.worst = max(self.worst, seconds)
        if reused:
            self.reused += 1
            self.recent_reuse = _ema(self.recent_reuse, seconds, self.reused == 1)
            return False
        runs = self.frames - self.reused
        if runs > 1:
            self.recent = _ema(self.recent, seconds, runs == 2)
        return runs == 1

    def skip(self) -> None:
        # Not measured while skipped: let the estimate fade so that the
        # stage is tried again now and then, and measured afresh (a stage
        # that was slow only while the machine was busy comes back).
        self.skipped += 1
        self.recent *= _SKIP_DECAY


def _ema(current: float, sample: float, first: bool) -> float:
    return sample if first else current + _EMA * (sample - current)


class EffectChain:
    """Effects applied to one stream, changeable while live."""

    def __init__(
        self,
        specs: Iterable[SpecLike] = (),
        *,
        registry: EffectRegistry | None = None,
        models: ModelStore | None = None,
        budget_ms: float | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self._registry = registry if registry is not None else default_registry()
        self._helpers = Helpers(threads)
        self._context = StageContext(models if models is not None else ModelStore(), self._helpers)
        self._budget = None if budget_ms is None else budget_ms / 1000.0
        self._lock = threading.Lock()
        self._video_debt = 0.0
        self._overhead = 0.0  # recent time per frame outside the stages (conversions)
        self._converter = VideoConverter()
        self._stages: tuple[_Stage, ...] = self._build(self._normalise(specs), ())

    @classmethod
    def from_settings(
        cls,
        settings: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        registry: EffectRegistry | None = None,
        models: ModelStore | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> EffectChain:
        """Build from the JSON form: ``{"effects": [{"effect": NAME, ...},
        ...], "budget_ms": 33}`` (``budget_ms`` optional), or just the list."""
        effects, budget = _read_settings(settings)
        return cls(effects, registry=registry, models=models, budget_ms=budget, threads=threads)

    def to_settings(self) -> dict[str, Any]:
        """The JSON form that :meth:`from_settings` reads back."""
        settings: dict[str, Any] = {"effects": [stage.spec.to_settings() for stage in self._stages]}
        if self._budget is not None:
            settings["budget_ms"] = self._budget * 1000.0
        return settings

    @property
    def threads(self) -> int:
        """Threads this chain may use, the caller's included."""
        return self._helpers.threads

    def close(self) -> None:
        """Let the helper threads end (model runs in flight finish first).
        The chain must not be used afterwards."""
        self._helpers.close()

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
        plan = self._plan(stages, budget)
        started = time.perf_counter()
        image = self._converter.to_image(frame)
        in_stages = 0.0
        warm_up = 0.0
        for stage in stages:
            action = plan.get(stage, _Action.RUN)
            if action is _Action.SKIP:
                stage.skip()
                continue
            before = time.perf_counter()
            if action is _Action.REUSE:
                assert isinstance(stage.impl, ReusingStage)
                image = stage.impl.reuse(image)
            else:
                image = stage.impl.process(image)
            took = time.perf_counter() - before
            in_stages += took
            if stage.record(took, reused=action is _Action.REUSE):
                warm_up += took
        out = self._converter.to_frame(image, frame)
        spent = time.perf_counter() - started
        self._overhead = _ema(self._overhead, spent - in_stages, self._overhead == 0.0)
        if budget is not None:
            # A stage's first run is set-up, paid once (the transcoder's queue
            # absorbs it), not a sign that the chain is running late.
            late = spent - warm_up - budget
            self._video_debt = min(max(0.0, self._video_debt + late), _DEBT_LIMIT * budget)
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
                reused=stage.reused,
                mean_ms=1000.0 * stage.total / stage.frames if stage.frames else 0.0,
                recent_ms=1000.0 * stage.recent,
                last_ms=1000.0 * stage.last,
                max_ms=1000.0 * stage.worst,
            )
            for index, stage in enumerate(stages)
        ]

    def _plan(self, stages: list[_Stage], budget: float | None) -> dict[_Stage, _Action]:
        """What each stage does on the next frame so that the frame's
        predicted cost fits the budget less the part of the debt due now:
        skip the costliest non-critical stages first, then have critical
        stages reuse their last analysis, the largest saving first (reuse
        comes last because a face that enters while no detection runs stays
        uncovered). Empty: run everything."""
        if budget is None:
            return {}
        allowance = budget - self._video_debt / _PAYBACK_FRAMES
        predicted = self._overhead + sum(stage.recent for stage in stages)
        plan: dict[_Stage, _Action] = {}
        if predicted <= allowance:
            return plan
        for stage in sorted((s for s in stages if not s.info.critical), key=lambda s: s.recent, reverse=True):
            if predicted <= allowance:
                return plan
            plan[stage] = _Action.SKIP
            predicted -= stage.recent
        reusable = [s for s in stages if s.info.critical and s.can_reuse]
        for stage in sorted(reusable, key=lambda s: s.recent - s.recent_reuse, reverse=True):
            if predicted <= allowance:
                break
            plan[stage] = _Action.REUSE
            predicted -= stage.recent - stage.recent_reuse
        return plan

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
