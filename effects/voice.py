"""Voice changer: pitch shift up or down, and a robot voice, in real time.

Pitch shifting is the delay-line ("rotating tape head") method: two read
taps sweep through a short delay line at ``pitch`` times the write speed,
half a sweep apart, each faded in and out with a sin^2 window so the jump
at the end of a sweep is silent (sin^2 + cos^2 = 1, so the level stays
constant). Every output sample is computed from input already seen, so the
stage returns exactly as many samples as it gets and timestamps stay as
they are; the delay it adds is between 1 sample and ``window`` ms (30 ms by
default, under the 50 ms budget). All arithmetic is vectorised over the
block with NumPy; state (delay line, sweep phase, carrier phase) carries
over between blocks, so block boundaries are inaudible.

The robot voice is ring modulation: the signal multiplied by a low sine
carrier (``robot_hz``), the classic metallic, monotone sound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from effects.options import Option, OptionType
from effects.stage import EffectInfo, Samples, StageContext, StageKind


class PitchShifter:
    """Delay-line pitch shifter over ``(channels, samples)`` float blocks."""

    def __init__(self, ratio: float, window_ms: float) -> None:
        self.ratio = ratio
        self.window_ms = window_ms
        self._rate = 0
        self._channels = 0
        self._window = 0
        self._history: NDArray[np.float32] = np.zeros((0, 0), np.float32)
        self._phase = 0.0

    def _reset(self, channels: int, rate: int) -> None:
        self._rate = rate
        self._channels = channels
        self._window = max(4, round(rate * self.window_ms / 1000.0))
        self._history = np.zeros((channels, self._window + 2), np.float32)
        self._phase = 0.0

    @property
    def max_delay_samples(self) -> int:
        """The most the shifter delays any sample (window + 1)."""
        return self._window + 1

    def process(self, samples: Samples, sample_rate: int) -> Samples:
        channels, count = samples.shape
        if channels != self._channels or sample_rate != self._rate:
            self._reset(channels, sample_rate)
        if count == 0:
            return samples
        history_len = self._history.shape[1]
        buffer = np.concatenate([self._history, samples.astype(np.float32, copy=False)], axis=1)
        window = float(self._window)
        step = (1.0 - self.ratio) / window
        index = np.arange(count, dtype=np.float64)
        out = np.zeros((channels, count), np.float32)
        for offset in (0.0, 0.5):
            phase = np.mod(self._phase + offset + index * step, 1.0)
            delay = phase * window + 1.0
            position = history_len + index - delay
            lower = np.floor(position).astype(np.int64)
            frac = (position - lower).astype(np.float32)
            gain = np.sin(np.pi * phase).astype(np.float32) ** 2
            tap = buffer[:, lower] * (1.0 - frac) + buffer[:, lower + 1] * frac
            out += tap * gain
        self._phase = float(np.mod(self._phase + count * step, 1.0))
        self._history = np.ascontiguousarray(buffer[:, -history_len:])
        return out


class RingModulator:
    """Multiplies by a sine carrier whose phase carries across blocks."""

    def __init__(self, frequency: float, mix: float) -> None:
        self.frequency = frequency
        self.mix = mix
        self._phase = 0.0

    def process(self, samples: Samples, sample_rate: int) -> Samples:
        count = samples.shape[1]
        step = 2.0 * np.pi * self.frequency / sample_rate
        carrier = np.sin(self._phase + step * np.arange(count, dtype=np.float64)).astype(np.float32)
        self._phase = float(np.mod(self._phase + step * count, 2.0 * np.pi))
        wet = samples * carrier
        result: Samples = (wet * self.mix + samples * (1.0 - self.mix)).astype(np.float32)
        return result


class VoiceChanger:
    """The voice stage: pitch shift, then the robot voice if asked."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        pitch: float = options["pitch"]
        self._shifter = PitchShifter(pitch, options["window_ms"]) if pitch != 1.0 else None
        self._robot = RingModulator(options["robot_hz"], options["robot_mix"]) if options["robot"] else None

    def process(self, samples: Samples, sample_rate: int) -> Samples:
        if self._shifter is not None:
            samples = self._shifter.process(samples, sample_rate)
        if self._robot is not None:
            samples = self._robot.process(samples, sample_rate)
        return samples


def _build(options: Mapping[str, Any], context: StageContext) -> VoiceChanger:
    return VoiceChanger(options)


EFFECT = EffectInfo(
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
    factory=_build,
    critical=True,
)
