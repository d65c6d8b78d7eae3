"""Prometheus metrics, read from live state at scrape time.

Packet paths count in plain integers on the objects they already touch
(stream stats, subscriptions, sessions); this collector turns those counters
into Prometheus families only when ``/metrics`` is scraped, so the hot path
pays nothing for metrics. Other packages add their own families with
:meth:`Metrics.add_source`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.registry import StreamRegistry, StreamState

MetricSource = Callable[[], Iterable[Metric]]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _SourceCollector(Collector):
    def __init__(self, sources: list[MetricSource]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source()


class Metrics:
    """One registry per engine instance (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._sources: list[MetricSource] = []
        self.registry.register(_SourceCollector(self._sources))

    def add_source(self, source: MetricSource) -> None:
        self._sources.append(source)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
            for consumer, n in s.stats.dropped.items():
                dropped.add_metric([s.name, consumer], n)
            subs = s.subscriptions
            subscribers.add_metric([s.name], len(subs))
            for sub in subs:
                buffered.add_metric([s.name, sub.consumer], sub.buffered)
        return [live, packets, received, dropped, buffered, subscribers]

    return collect
