"""Settings of the recorder (``[recording]``)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings import doc

GIB = 1024 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    default: bool = doc(
        "Record every stream unless its record flag (POST /api/v1/streaming/ID/record) says otherwise.", False
    )
    max_duration_s: float = doc(
        "Longest recording of one stream, in seconds; reaching it stops the recording (never the stream). "
        "0: no limit.", 4 * 3600.0
    )
    disk_quota_bytes: int = doc(
        "Most bytes all recordings together may hold (local backend: bytes on disk; S3: bytes recorded); "
        "reaching it stops the recordings in progress. 0: no limit.", 100 * GIB
    )
    journal_dir: str = doc("Directory of the recorders' journals. Empty: DATA_DIR/recordings.", "")

    def __post_init__(self) -> None:
        if self.max_duration_s < 0:
            raise ValueError("recording.max_duration_s must not be negative")
        if self.disk_quota_bytes < 0:
            raise ValueError("recording.disk_quota_bytes must not be negative")
