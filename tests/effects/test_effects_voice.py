"""The voice changer on decoded AAC frames: pitch measured with an FFT,
sample counts and timestamps unchanged, bounded added delay."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effects.chain import EffectChain
from effects.frames import audio_to_samples, samples_to_audio
from effects.voice import PitchShifter, RingModulator


def _decode(path: Path) -> list[av.AudioFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(audio=0))


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    window = samples * np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(window))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(("pitch", "expected"), [(2.0, 440.0), (0.5, 110.0), (1.5, 330.0)])
def test_tone_pitch_shifted(tone_clip: Path, pitch: float, expected: float) -> None:
    frames = _decode(tone_clip)
    chain = EffectChain([f"voice:pitch={pitch}"])
    outs = [chain.process_audio(frame) for frame in frames]
    for frame, out in zip(frames, outs, strict=True):
        assert out.samples == frame.samples
        assert out.pts == frame.pts and out.time_base == frame.time_base
        assert out.format.name == frame.format.name and out.layout.name == frame.layout.name
        assert out.sample_rate == frame.sample_rate
    before = np.concatenate([audio_to_samples(f) for f in frames], axis=1)
    after = np.concatenate([audio_to_samples(f) for f in outs], axis=1)
    rate = frames[0].sample_rate
    assert _peak_hz(before[0, rate // 4:], rate) == pytest.approx(220, abs=2)
    assert _peak_hz(after[0, rate // 4:], rate) == pytest.approx(expected, abs=2)
    # Level kept (the splices do not dip): RMS within 10 %.
    level = np.sqrt(np.mean(after[:, rate // 4:] ** 2)) / np.sqrt(np.mean(before[:, rate // 4:] ** 2))
    assert 0.9 < level < 1.1


def test_added_delay_below_50_ms() -> None:
    rate = 48000
    shifter = PitchShifter(1.5, 30.0)
    signal = np.zeros((1, rate // 2), np.float32)
    signal[0, 1000] = 1.0
    out = np.concatenate([shifter.process(signal[:, i:i + 480], rate) for i in range(0, signal.shape[1], 480)], axis=1)
    first = int(np.flatnonzero(np.abs(out[0]) > 1e-4)[0])
    assert 1000 <= first <= 1000 + shifter.max_delay_samples
    assert shifter.max_delay_samples < 0.050 * rate


def test_robot_ring_modulates(tone_clip: Path) -> None:
    frames = _decode(tone_clip)
    chain = EffectChain(["voice:robot=true,robot_hz=50"])
    after = np.concatenate([audio_to_samples(chain.process_audio(f)) for f in frames], axis=1)
    rate = frames[0].sample_rate
    spectrum = np.abs(np.fft.rfft(after[0, rate // 4:]))
    freqs = np.fft.rfftfreq(after.shape[1] - rate // 4, 1 / rate)
    # A 220 Hz tone times a 50 Hz carrier: energy at 170 and 270 Hz, not 220.
    def energy(hz: float) -> float:
        return float(spectrum[np.abs(freqs - hz) < 3].max())
    assert energy(170) > 10 * energy(220) and energy(270) > 10 * energy(220)


@settings(max_examples=25, deadline=None)
@given(
    ratio=st.floats(0.25, 4.0),
    blocks=st.lists(st.integers(0, 3000), min_size=1, max_size=8),
    channels=st.integers(1, 3),
)
def test_any_blocks_keep_sample_count(ratio: float, blocks: list[int], channels: int) -> None:
    shifter = PitchShifter(ratio, 20.0)
    robot = RingModulator(40.0, 0.5)
    rng = np.random.default_rng(1)
    for size in blocks:
        block = rng.uniform(-1, 1, (channels, size)).astype(np.float32)
        out = robot.process(shifter.process(block, 44100), 44100)
        assert out.shape == block.shape and out.dtype == np.float32
        assert np.all(np.isfinite(out)) and np.abs(out).max(initial=0) <= 2.0


@pytest.mark.parametrize("fmt", ["s16", "s16p", "fltp", "flt", "s32p"])
def test_sample_formats_round_trip(fmt: str) -> None:
    rng = np.random.default_rng(2)
    samples = rng.uniform(-0.9, 0.9, (2, 256)).astype(np.float32)
    template = av.AudioFrame(format="fltp", layout="stereo", samples=256)
    template.sample_rate = 48000
    template.pts = 1234
    frame = samples_to_audio(samples, template)
    converted = av.AudioResampler(format=fmt, layout="stereo", rate=48000).resample(frame)[0]
    back = audio_to_samples(converted)
    assert back.shape == (2, 256)
    assert np.abs(back - samples).max() < 1e-3
    again = samples_to_audio(back, converted)
    assert again.format.name == fmt and again.samples == 256
