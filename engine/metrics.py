"""Prometheus metrics, read from live state at scrape time.

Packet paths count in plain integers on the objects they already touch
(stream stats, subscriptions, sessions); this collector turns those counters
into Prometheus families only when ``/metrics`` is scraped, so the hot path
pays nothing for metrics. Other packages add their own families with
:meth:`Metrics.add_source`.

A scrape happens in two steps: :meth:`Metrics.snapshot` calls every source
on the event loop, the only thread that changes the dicts they read, and
copies their values into families; :meth:`Metrics.render_snapshot` turns
those (now private) families into the text format, which may run in a worker
thread. Rendering never touches live state, so a stream that starts or ends
mid-scrape cannot change a dict while it is iterated.

Series labelled with a stream name (``stream``, ``rendition``) name every
live playback id, paid ones included. With ``stream_labels`` off those
labels are dropped and the series summed over streams (gauges named with
:meth:`Metrics.combine_by_max` take the largest value instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.registry import StreamRegistry, StreamState

MetricSource = Callable[[], Iterable[Metric]]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STREAM_LABELS = frozenset({"stream", "rendition"})
"""Labels whose values are stream or rendition names."""


class _FrozenCollector(Collector):
    """Hands out families that were collected earlier."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class Metrics:
    """One registry per engine instance (no process-global state)."""

    def __init__(self, stream_labels: bool = True) -> None:
        self.stream_labels = stream_labels
        self._sources: list[MetricSource] = []
        self._by_max: set[str] = set()

    def add_source(self, source: MetricSource) -> None:
        self._sources.append(source)

    def combine_by_max(self, family: str) -> None:
        """Without stream labels, report the largest value of the gauge
        ``family`` over streams rather than their sum (a time per frame)."""
        self._by_max.add(family)

    def snapshot(self) -> list[Metric]:
        """Every source's families, values copied; call on the event loop."""
        families: list[Metric] = []
        for source in self._sources:
            families.extend(source())
        if not self.stream_labels:
            families = [self._without_stream_labels(f) for f in families]
        return families

    @staticmethod
    def render_snapshot(families: Sequence[Metric]) -> bytes:
        """The text format of a snapshot; safe in any thread."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_FrozenCollector(families))
        return generate_latest(registry)

    def render(self) -> bytes:
        """Snapshot and render in one step (on the event loop)."""
        return self.render_snapshot(self.snapshot())

    def _without_stream_labels(self, family: Metric) -> Metric:
        if not any(STREAM_LABELS & sample.labels.keys() for sample in family.samples):
            return family
        use_max = family.name in self._by_max
        combined: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in STREAM_LABELS))
            key = (sample.name, labels)
            if key in combined:
                old = combined[key]
                combined[key] = max(old, sample.value) if use_max else old + sample.value
            else:
                combined[key] = sample.value
        out = Metric(family.name, family.documentation, family.type)
        for (name, labels), value in combined.items():
            out.add_sample(name, dict(labels), value)
        return out


def stream_metrics(registry: StreamRegistry) -> MetricSource:
    """Families describing the registry: live streams, bytes in, fan-out drops."""

    def collect() -> Iterable[Metric]:
        streams = registry.streams()
        live = GaugeMetricFamily("fanz_streams", "Streams by state.", labels=["state"])
        for state in StreamState:
            live.add_metric([state.value], sum(1 for s in streams if s.state is state))
        packets = CounterMetricFamily("fanz_stream_packets_in", "Packets received from publishers.", labels=["stream"])
        received = CounterMetricFamily("fanz_stream_bytes_in", "Media bytes received.", labels=["stream"])
        dropped = CounterMetricFamily(
            "fanz_fanout_dropped_packets",
            "Packets a consumer lost because it fell behind its bounded buffer.",
            labels=["stream", "consumer"],
        )
        buffered = GaugeMetricFamily(
            "fanz_fanout_buffered_packets", "Packets waiting in each consumer's buffer.", labels=["stream", "consumer"]
        )
        subscribers = GaugeMetricFamily("fanz_stream_consumers", "Consumers reading each stream.", labels=["stream"])
        for s in streams:
            packets.add_metric([s.name], s.stats.packets_in)
            received.add_metric([s.name], s.stats.bytes_in)
            for consumer, n in tuple(s.stats.dropped.items()):
                dropped.add_metric([s.name, consumer], n)
            subs = s.subscriptions
            subscribers.add_metric([s.name], len(subs))
            for sub in subs:
                buffered.add_metric([s.name, sub.consumer], sub.buffered)
        return [live, packets, received, dropped, buffered, subscribers]

    return collect
