"""/metrics: stream names appear only when the config says so."""

from __future__ import annotations

from fractions import Fraction

from prometheus_client.core import GaugeMetricFamily, Metric

from engine.media import Codec, Packet, Track
from engine.metrics import Metrics, stream_metrics
from engine.registry import StreamRegistry

TB = Fraction(1, 1000)
TRACKS = (Track(0, Codec.AAC, TB, b"\x11\x90", sample_rate=48000, channels=2),)


def two_streams() -> StreamRegistry:
    registry = StreamRegistry(grace_s=0)
    for name, packets in (("paid_show", 3), ("free_show", 2)):
        publisher = registry.claim(name)
        publisher.start(TRACKS)
        for i in range(packets):
            publisher.write(Packet(0, i, i, TB, b"a" * 10))
    return registry


def frame_times() -> list[Metric]:
    cost = GaugeMetricFamily("fanz_effect_frame_milliseconds", "ms", labels=["stream", "effect"])
    cost.add_metric(["paid_show", "blur"], 20.0)
    cost.add_metric(["free_show", "blur"], 12.0)
    return [cost]


async def test_without_stream_labels_series_are_summed_and_name_no_stream() -> None:
    metrics = Metrics(stream_labels=False)
    metrics.add_source(stream_metrics(two_streams()))
    metrics.add_source(frame_times)
    metrics.combine_by_max("fanz_effect_frame_milliseconds")
    text = metrics.render().decode()
    assert "paid_show" not in text and "free_show" not in text
    assert "fanz_stream_packets_in_total 5.0" in text
    assert "fanz_stream_bytes_in_total 50.0" in text
    assert 'fanz_streams{state="live"} 2.0' in text
    assert 'fanz_effect_frame_milliseconds{effect="blur"} 20.0' in text


async def test_with_stream_labels_each_stream_has_its_series() -> None:
    metrics = Metrics(stream_labels=True)
    metrics.add_source(stream_metrics(two_streams()))
    text = metrics.render().decode()
    assert 'fanz_stream_packets_in_total{stream="paid_show"} 3.0' in text
    assert 'fanz_stream_packets_in_total{stream="free_show"} 2.0' in text


async def test_a_snapshot_renders_the_same_after_the_streams_change() -> None:
    registry = two_streams()
    metrics = Metrics(stream_labels=True)
    metrics.add_source(stream_metrics(registry))
    snapshot = metrics.snapshot()
    before = Metrics.render_snapshot(snapshot)
    registry.claim("late_show").start(TRACKS)
    registry.kick("paid_show", "ended")
    assert Metrics.render_snapshot(snapshot) == before
