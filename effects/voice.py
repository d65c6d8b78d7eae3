"""Voice changer: pitch shift up or down, and a robot voice, in real time.

Pitch shifting is the delay-line method with correlation-aligned splices
(see :class:`PitchShifter`). Every output sample is computed from input
already seen, so the stage returns exactly as many samples as it gets and
timestamps stay as they are; the delay it adds never exceeds ``window_ms``
(30 ms by default, under the 50 ms budget). The arithmetic between splices
is vectorised with NumPy; state (delay line, tap, carrier phase) carries
over between blocks, so block boundaries are inaudible.

The robot voice is ring modulation: the signal multiplied by a low sine
carrier (``robot_hz``), the classic metallic, monotone sound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from effects import catalog
from effects.stage import EffectInfo, Samples, StageContext


class PitchShifter:
    """Delay-line pitch shifter over ``(channels, samples)`` float blocks.

    One read tap moves through a delay line at ``ratio`` times the write
    speed, so its delay shrinks (pitch up) or grows (pitch down) by
    ``|1 - ratio|`` samples per sample. When the delay nears its limit the
    tap jumps by ``L`` samples and the old and new taps are crossfaded for a
    few milliseconds. ``L`` is chosen where the waveform best matches the
    one at the current position (normalised cross-correlation over the
    allowed range), i.e. a whole number of pitch periods, so the splice
    keeps the phase and the output pitch is exact rather than smeared.
    All channels share one tap (decided on their mix) to keep the stereo
    image.
    """

    def __init__(self, ratio: float, window_ms: float) -> None:
        self.ratio = ratio
        self.window_ms = window_ms
        self._rate = 0
        self._channels = 0
        self._history: NDArray[np.float32] = np.zeros((0, 0), np.float32)
        self._delay = 0.0
        self._old_delay = 0.0
        self._fade_left = 0
        self.jumps = 0

    def _reset(self, channels: int, rate: int) -> None:
        self._rate = rate
        self._channels = channels
        self._window = max(64, round(rate * self.window_ms / 1000.0))
        self._corr = max(8, min(round(rate * 0.005), self._window // 4))
        slope = abs(1.0 - self.ratio)
        # A crossfade of about 4 ms, shorter for large ratios: both taps
        # drift by fade * slope during it, and that must fit the window
        # several times over.
        self._fade = max(4, min(round(rate * 0.004), int(self._window / (4 * max(slope, 1e-6)))))
        if self.ratio > 1.0:
            self._low = max(1.0 + self._fade * slope, float(self._corr))
            self._high = float(self._window)
        else:
            self._low = float(self._corr)
            self._high = self._window - 1.0 - self._fade * slope
        span = max(2, int(self._high - self._low) - 1)
        self._jump_max = span
        # A jump must leave the new tap room to drift for a whole fade before
        # it reaches the limit again.
        self._jump_min = min(span, max(1, span // 2, int(np.ceil(self._fade * slope)) + 1))
        capacity = self._window + self._corr + 4
        self._history = np.zeros((channels, capacity), np.float32)
        self._delay = (self._low + self._high) / 2
        self._old_delay = self._delay
        self._fade_left = 0

    @property
    def max_delay_samples(self) -> int:
        """The most the shifter delays any sample."""
        return self._window

    def process(self, samples: Samples, sample_rate: int) -> Samples:
        channels, count = samples.shape
        if channels != self._channels or sample_rate != self._rate:
            self._reset(channels, sample_rate)
        if count == 0:
            return samples
        base = self._history.shape[1]
        buffer = np.concatenate([self._history, samples.astype(np.float32, copy=False)], axis=1)
        out = np.empty((channels, count), np.float32)
        drift = 1.0 - self.ratio  # change of delay per output sample
        i = 0
        while i < count:
            if self._fade_left > 0:
                n = min(count - i, self._fade_left)
                done = self._fade - self._fade_left
                ramp = (np.arange(done, done + n, dtype=np.float32) + 0.5) / self._fade
                gain_new = 0.5 - 0.5 * np.cos(np.pi * ramp)
                old = self._read(buffer, base + i, n, self._old_delay, drift)
                new = self._read(buffer, base + i, n, self._delay, drift)
                out[:, i:i + n] = old * (1.0 - gain_new) + new * gain_new
                self._old_delay += n * drift
                self._delay += n * drift
                self._fade_left -= n
                i += n
                continue
            n = self._samples_before_jump(drift, count - i)
            if n == 0:
                self._jump(buffer, base + i)
                continue
            out[:, i:i + n] = self._read(buffer, base + i, n, self._delay, drift)
            self._delay += n * drift
            i += n
        self._history = np.ascontiguousarray(buffer[:, -base:])
        return out

    def _samples_before_jump(self, drift: float, remaining: int) -> int:
        if drift < 0:
            room = (self._delay - self._low) / -drift
        elif drift > 0:
            room = (self._high - self._delay) / drift
        else:
            return remaining
        return max(0, min(remaining, int(room)))

    @staticmethod
    def _read(buffer: NDArray[np.float32], start: int, n: int, delay: float, drift: float) -> NDArray[np.float32]:
        """Samples read by a tap whose delay starts at ``delay`` and changes
        by ``drift`` per sample, for output samples ``start .. start+n``
        (buffer coordinates), with linear interpolation."""
        steps = np.arange(n, dtype=np.float64)
        position = start + steps - (delay + steps * drift)
        # The clip is a guard only: delays stay within [1, window] by
        # construction, so it never moves a valid position.
        position = np.clip(position, 0.0, buffer.shape[1] - 1.000001)
        lower = np.floor(position).astype(np.int64)
        frac = (position - lower).astype(np.float32)
        result: NDArray[np.float32] = buffer[:, lower] * (1.0 - frac) + buffer[:, lower + 1] * frac
        return result

    def _jump(self, buffer: NDArray[np.float32], now: int) -> None:
        """Start a crossfade from the current tap to one ``L`` samples back
        (pitch up) or ahead (pitch down), ``L`` picked by correlation."""
        mono = buffer.mean(axis=0)
        here = int(now - self._delay)
        reference = mono[here:here + self._corr]
        lo, hi = self._jump_min, self._jump_max
        if self.ratio > 1.0:
            region = mono[here - hi:here - lo + self._corr]
        else:
            region = mono[here + lo:here + hi + self._corr]
        windows = np.lib.stride_tricks.sliding_window_view(region, self._corr)
        energy = np.einsum("ij,ij->i", windows, windows) + 1e-9
        score = (windows @ reference) / np.sqrt(energy)
        if self.ratio > 1.0:
            best = hi - int(np.argmax(score))  # window k starts at here - hi + k
            new_delay = self._delay + best
        else:
            best = lo + int(np.argmax(score))
            new_delay = self._delay - best
        self._old_delay = self._delay
        self._delay = new_delay
        self._fade_left = self._fade
        self.jumps += 1


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


EFFECT = EffectInfo.of(catalog.VOICE, _build)
