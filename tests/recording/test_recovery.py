"""Start-up recovery over cut and garbled journals (hypothesis): the real
service, a real local storage and spool; recovery never raises, closes each
recording with what can be read (final playlists in storage, ``close`` in
the journal, read back), and sets aside a journal without a readable start."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.storage import LocalStorage, RetrySettings, SpooledUploader
from packager.recording.config import RecordingConfig
from packager.recording.journal import parse_journal
from packager.recording.recorder import RecordingService
from tests.recording.test_journal import REC, sample_journal


def recover(journal: bytes) -> tuple[Path, RecordingService, list[object]]:
    base = Path(tempfile.mkdtemp(prefix="fanz-recovery-"))
    storage = LocalStorage(base / "storage")
    uploader = SpooledUploader(storage, base / "spool", 10_000_000, RetrySettings(3, 0.01, 0.05), fsync=False)
    uploader.start()
    (base / "journals").mkdir()
    (base / "journals" / f"{REC}.journal").write_bytes(journal)
    service = RecordingService(RecordingConfig(), storage, uploader, base / "journals")
    try:
        pending = service.recover()
        assert uploader.wait_empty(30)
    finally:
        uploader.close(10)
    return base, service, list(pending)


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=1500), junk=st.binary(max_size=30),
       at=st.integers(min_value=0, max_value=1500))
def test_damaged_journals_never_stop_start_up(cut: int, junk: bytes, at: int) -> None:
    data = sample_journal(segments=6)[:cut]
    at = min(at, len(data))
    data = data[:at] + junk + data[at:]
    readable = parse_journal(data)
    base, _service, pending = recover(data)
    try:
        path = base / "journals" / f"{REC}.journal"
        if readable is None:
            assert not path.exists() and (base / "journals" / f"{REC}.bad").exists()
            assert pending == []
            return
        after = parse_journal(path.read_bytes())
        assert after is not None and after.closed and after.interrupted and not after.damaged
        assert after.segments == readable.segments
        assert len(pending) == 1
        prefix = base / "storage" / "recordings" / REC
        for variant in after.variants.values():
            text = (prefix / variant.name / "media.m3u8").read_text()
            assert text.count("#EXTINF") == len(variant.segments) and text.endswith("#EXT-X-ENDLIST\n")
        assert (prefix / "recording.json").is_file()
    finally:
        shutil.rmtree(base)
