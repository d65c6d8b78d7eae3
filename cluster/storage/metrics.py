"""Prometheus families of the storage spool, for ``/metrics``.

Registered with :meth:`engine.metrics.Metrics.add_source`; read from a
:class:`~cluster.storage.spool.SpoolStats` snapshot at scrape time, so the
upload path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cluster.storage.spool import SpooledUploader


def spool_metrics(uploader: SpooledUploader) -> Callable[[], Iterable[Metric]]:
    """A metric source describing ``uploader``'s spool and uploads."""

    def collect() -> Iterable[Metric]:
        s = uploader.stats()
        families: list[Metric] = []
        for name, doc, value in (
            ("fanz_storage_spool_bytes", "Bytes waiting in the upload spool.", s.bytes),
            ("fanz_storage_spool_files", "Files waiting in the upload spool.", s.files),
            ("fanz_storage_upload_lag_seconds", "How long the oldest spooled file has waited for upload.",
             s.oldest_age_s),
            ("fanz_storage_spool_max_bytes", "The spool's size limit.", uploader.max_bytes),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            families.append(gauge)
        for name, doc, value in (
            ("fanz_storage_uploaded_files", "Files the storage backend confirmed.", s.uploaded_files),
            ("fanz_storage_uploaded_bytes", "Bytes the storage backend confirmed.", s.uploaded_bytes),
            ("fanz_storage_upload_failures", "Upload tries that failed (each is retried).", s.upload_failures),
            ("fanz_storage_spool_full_rejections", "Files refused because the spool was full.", s.rejected_full),
            ("fanz_storage_spool_lost_files", "Spooled files that could not be read back for upload.", s.lost),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], value)
            families.append(counter)
        return families

    return collect
