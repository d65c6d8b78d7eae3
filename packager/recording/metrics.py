"""Prometheus families of the recorder, for ``/metrics`` (read at scrape
time from :class:`~packager.recording.recorder.RecordingService`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from packager.recording.recorder import STOP_REASONS, RecordingService


def recording_metrics(service: RecordingService) -> Callable[[], Iterable[Metric]]:
    def collect() -> Iterable[Metric]:
        progress = GaugeMetricFamily("fanz_recordings_in_progress", "Recordings being written now.")
        progress.add_metric([], service.in_progress)
        used = GaugeMetricFamily("fanz_recordings_quota_used_bytes",
                                 "Bytes counted against recording.disk_quota_bytes.")
        used.add_metric([], service.used_bytes)
        recorded = CounterMetricFamily("fanz_recorded_bytes", "Segment bytes recorded since start.")
        recorded.add_metric([], service.recorded_bytes)
        stops = CounterMetricFamily("fanz_recording_stops", "Recordings ended early, by reason.",
                                    labels=["reason"])
        for reason in STOP_REASONS:
            stops.add_metric([reason], service.stops.get(reason, 0))
        return [progress, used, recorded, stops]

    return collect
