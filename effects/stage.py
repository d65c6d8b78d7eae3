"""What an effect is: a stage that turns one frame's pixels or samples into
the next, plus the description ``effects list`` prints.

Stages work on NumPy arrays, never on PyAV frames, so that the chain does
the frame conversion once per frame for all stages and keeps timestamps in
one place. Video stages get and return BGR ``uint8`` arrays of shape
``(height, width, 3)`` and may change the array in place; audio stages get
and return ``float32`` arrays of shape ``(channels, samples)`` and must
return exactly as many samples as they were given, so that audio never
drifts from video.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from effects.catalog import EffectMeta, StageKind
from effects.models import ModelStore
from effects.workers import INLINE, Helpers

# OpenCV's stubs type every result as a generic array, so the alias is
# loose; the content is always BGR uint8 (height, width, 3).
Image = NDArray[Any]
Samples = NDArray[np.float32]

__all__ = ["EffectInfo", "Image", "Samples", "StageContext", "StageKind"]


class VideoStage(Protocol):
    def process(self, image: Image) -> Image:
        """Return the processed frame (the same array or a new one)."""
        ...


@runtime_checkable
class ReusingStage(Protocol):
    """A video stage that can apply its effect from its last analysis (the
    last mask, the last tracked faces) without a new one. The chain calls
    :meth:`reuse` instead of ``process`` on frames it must make cheaper, for
    stages that must not simply be skipped."""

    def reuse(self, image: Image) -> Image:
        """Return the processed frame, running no new model inference."""
        ...


class AudioStage(Protocol):
    def process(self, samples: Samples, sample_rate: int) -> Samples:
        """Return exactly ``samples.shape[1]`` processed samples."""
        ...


@dataclass(frozen=True, slots=True)
class StageContext:
    """What a stage factory may use besides its options: the shared model
    store (model bytes are read once per process, networks are per stage
    because OpenCV networks must not run on two threads at once) and the
    chain's helper threads for model inference (see :mod:`effects.workers`;
    by default none, so jobs run in the caller's thread)."""

    models: ModelStore
    helpers: Helpers = INLINE


StageFactory = Callable[[Mapping[str, Any], StageContext], Any]


@dataclass(frozen=True, slots=True)
class EffectInfo(EffectMeta):
    """One effect's metadata (:mod:`effects.catalog`) and how to build a
    stage from checked option values.

    A critical stage that is a :class:`ReusingStage` may be asked to reuse
    its last analysis when the chain runs late (counted)."""

    factory: StageFactory = field(kw_only=True)

    @classmethod
    def of(cls, meta: EffectMeta, factory: StageFactory) -> EffectInfo:
        """The catalog entry ``meta`` with its implementation."""
        return cls(meta.name, meta.kind, meta.summary, meta.options, meta.critical, factory=factory)
