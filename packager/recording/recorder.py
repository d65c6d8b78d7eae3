"""Recordings of live streams, kept from the segments the HLS output writes.

:class:`RecordingService` is one per engine: it owns the journal directory,
the quota and the metrics, and hands each packaged stream a
:class:`StreamRecorder` (the HLS output's segment sink). A stream recorder
runs only in its stream's job queue (a worker thread, in order), where the
segments were just written: it spools each init segment and segment to
storage (:class:`~cluster.storage.SpooledUploader`, a local write and
fsync, never the backend), appends a journal line (fsynced), then spools
the variant's refreshed playlist. Nothing here runs on the event loop
except the report of a closed recording to the control plane.

A recording ends with its stream (after the reconnect grace: a publisher
that comes back within it continues the same recording, behind a
discontinuity and its new init segment), when the record flag is turned
off, or early, on a limit (``max_duration``, ``disk_quota``) or a fault
(``spool_full``, ``disk_full``, ``storage_error``): the recording is then
closed where it stands, a ``recording.stopped`` event names the reason,
and the live stream goes on untouched.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from cluster.storage import SpooledUploader, SpoolFullError, Storage, StorageError
from engine.codecs import CodecError, codec_string
from engine.media import MediaKind, Track
from packager.recording.config import RecordingConfig
from packager.recording.errors import JournalError, RecordingError
from packager.recording.ids import check_recording_id, new_recording_id, recording_prefix
from packager.recording.journal import (
    JournalState,
    encode_line,
    init_record,
    parse_journal,
    segment_record,
    start_record,
)
from packager.recording.playlists import (
    MANIFEST,
    MEDIA_PLAYLIST,
    MULTIVARIANT,
    manifest,
    render_media,
    render_multivariant,
)

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"
CLOSE_RETRY_S = 2.0
"""How often a recording whose final playlists could not be spooled is
tried again."""
STOP_REASONS = ("max_duration", "disk_quota", "spool_full", "disk_full", "storage_error", "turned_off")


@dataclass(frozen=True, slots=True)
class RecordingReport:
    """A closed recording, for the control plane (``recording.ready``)."""

    recording_id: str
    stream: str
    started_at: float
    ended_at: float
    duration_s: float
    segments: int
    bytes: int
    interrupted: bool
    stop_reason: str | None
    uri: str
    """Storage key of the multivariant playlist."""


@dataclass(frozen=True, slots=True)
class RecordingStopped:
    """A recording ended early (``recording.stopped``)."""

    recording_id: str
    stream: str
    reason: str
    detail: str


ReadyHandler = Callable[[RecordingReport], Coroutine[Any, Any, None]]
StoppedHandler = Callable[[RecordingStopped], Coroutine[Any, Any, None]]


def report_of(state: JournalState) -> RecordingReport:
    return RecordingReport(
        recording_id=state.recording_id, stream=state.stream, started_at=state.started_at,
        ended_at=state.closed_at or state.started_at, duration_s=round(float(state.duration), 3),
        segments=state.segments, bytes=state.bytes, interrupted=state.interrupted,
        stop_reason=state.stop_reason, uri=recording_prefix(state.recording_id) + MULTIVARIANT,
    )


class _Stop(Exception):
    """Ends the recording early with ``reason`` (internal)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Journal:
    """One recording's journal file: appended, flushed and fsynced per line."""

    def __init__(self, path: Path, valid_bytes: int | None = None) -> None:
        self.path = path
        self._file = open(path, "ab")  # held open for the recording's life
        if valid_bytes is not None:
            # Drop a damaged tail so that lines appended now are read back.
            self._file.truncate(valid_bytes)

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(encode_line(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class _Active:
    """The recording in progress of one stream (queue thread only)."""

    def __init__(self, state: JournalState, journal: Journal) -> None:
        self.state = state
        self.journal = journal
        self.prefix = recording_prefix(state.recording_id)

    def record(self, record: dict[str, Any]) -> None:
        """Journal ``record`` (synced), then add it to the state."""
        self.journal.append(record)
        self.state.apply(record)


class RecordingService:
    """Every recording of this engine: start-up recovery, quota, metrics."""

    def __init__(
        self,
        config: RecordingConfig,
        storage: Storage,
        uploader: SpooledUploader,
        journal_dir: Path,
        *,
        count_disk: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.storage = storage
        self.uploader = uploader
        self.journal_dir = journal_dir
        self.count_disk = count_disk
        """Quota counts bytes in storage (local backend) rather than bytes
        recorded since the journals began (S3)."""
        self.clock = clock
        self.on_ready: ReadyHandler | None = None
        self.on_stopped: StoppedHandler | None = None
        self._lock = threading.Lock()
        self.used_bytes = 0
        self.recorded_bytes = 0
        self.in_progress = 0
        self.stops: Counter[str] = Counter()
        self.completed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: set[asyncio.Task[None]] = set()

    # -- start-up ---------------------------------------------------------------
    async def start(self) -> None:
        """Measure the quota's use and close what a crash left open, then
        report every recording the control plane has not heard of."""
        self._loop = asyncio.get_running_loop()
        pending = await asyncio.to_thread(self.recover)
        for state in pending:
            await self.report(state)

    def recover(self) -> list[JournalState]:
        """Blocking: close interrupted recordings (final playlists spooled,
        ``close`` journalled) and return those not yet reported."""
        self.journal_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pending: list[JournalState] = []
        used = 0
        for path in sorted(self.journal_dir.glob("*" + JOURNAL_SUFFIX)):
            data = path.read_bytes()
            state = parse_journal(data)
            if state is None or path.name != state.recording_id + JOURNAL_SUFFIX:
                log.error("recording journal %s is unreadable (not even its start); set aside as .bad", path)
                path.rename(path.with_suffix(".bad"))
                continue
            used += state.bytes
            if not state.closed:
                state.interrupted = state.stop_reason is None
                try:
                    journal = Journal(path, state.valid_bytes)
                    try:
                        self._finalize(state, journal)
                    finally:
                        journal.close()
                except (OSError, StorageError) as exc:
                    # A full spool or disk must not stop the engine: tried again at the next start.
                    log.error("recording %s of %s: cannot be closed now (%s); tried again at the next start",
                              state.recording_id, state.stream, exc)
                    continue
                log.warning("recording %s of %s was interrupted%s; closed with %d segments (%.1fs)",
                            state.recording_id, state.stream, " (journal damaged)" if state.damaged else "",
                            state.segments, float(state.duration))
            if not state.reported:
                pending.append(state)
        if self.count_disk:
            used = sum(info.size for info in self.storage.list("recordings/"))
        with self._lock:
            self.used_bytes = used
        return pending

    def _finalize(self, state: JournalState, journal: Journal) -> None:
        """Spool the final playlists and manifest, then journal ``close``."""
        closed_at = self.clock()
        state.closed_at = closed_at  # the manifest shows the closed state
        try:
            prefix = recording_prefix(state.recording_id)
            for variant in state.variants.values():
                self.uploader.submit_bytes(f"{prefix}{variant.name}/{MEDIA_PLAYLIST}",
                                           render_media(variant, ended=True).encode())
            multivariant = render_multivariant(state)
            if multivariant is not None:
                self.uploader.submit_bytes(prefix + MULTIVARIANT, multivariant.encode())
            self.uploader.submit_bytes(prefix + MANIFEST, json.dumps(manifest(state), indent=1).encode())
        except BaseException:
            state.closed_at = None
            raise
        journal.append({"t": "close", "at": closed_at, "interrupted": state.interrupted})

    # -- reports (event loop) ---------------------------------------------------
    async def report(self, state: JournalState) -> None:
        """Tell the control plane; journal ``reported`` once it has the record."""
        report = report_of(state)
        if self.on_ready is not None:
            try:
                await self.on_ready(report)
            except Exception:
                log.exception("recording %s: the control plane did not take the record; "
                              "retried at the next start", state.recording_id)
                return
        log.info("recording %s of %s ready: %d segments, %.1fs, %d bytes%s", report.recording_id, report.stream,
                 report.segments, report.duration_s, report.bytes, " (interrupted)" if report.interrupted else "")
        path = self.journal_dir / (state.recording_id + JOURNAL_SUFFIX)
        await asyncio.to_thread(_append_reported, path)

    def _closed(self, state: JournalState, stopped: RecordingStopped | None) -> None:
        """On the loop: a stream recorder closed its recording."""
        task = asyncio.get_running_loop().create_task(self._after_close(state, stopped))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _after_close(self, state: JournalState, stopped: RecordingStopped | None) -> None:
        if stopped is not None and self.on_stopped is not None:
            try:
                await self.on_stopped(stopped)
            except Exception:
                log.exception("recording %s: recording.stopped could not be sent", stopped.recording_id)
        await self.report(state)

    def _closed_unfinished(self, state: JournalState, path: Path, stopped: RecordingStopped | None) -> None:
        """On the loop: a recording ended but its final playlists could not
        be spooled (the spool or its disk is full). Say why it stopped, and
        try the close again every ``CLOSE_RETRY_S`` until it is done (or the
        next start does it)."""
        task = asyncio.get_running_loop().create_task(self._retry_close(state, path, stopped))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _retry_close(self, state: JournalState, path: Path, stopped: RecordingStopped | None) -> None:
        if stopped is not None and self.on_stopped is not None:
            try:
                await self.on_stopped(stopped)
            except Exception:
                log.exception("recording %s: recording.stopped could not be sent", stopped.recording_id)
        while True:
            await asyncio.sleep(CLOSE_RETRY_S)
            try:
                await asyncio.to_thread(self._finalize_at, state, path)
            except (OSError, StorageError) as exc:
                log.debug("recording %s: close retried later: %s", state.recording_id, exc)
                continue
            break
        await self.report(state)

    def _finalize_at(self, state: JournalState, path: Path) -> None:
        journal = Journal(path)
        try:
            self._finalize(state, journal)
        finally:
            journal.close()

    async def close(self) -> None:
        """Wait (bounded) for the reports in flight."""
        await asyncio.sleep(0)  # let closes that were just queued from writer threads start
        if self._reports:
            await asyncio.wait(tuple(self._reports), timeout=10.0)

    # -- streams ----------------------------------------------------------------
    def recorder(self, stream: str, wanted: bool) -> StreamRecorder:
        """A sink for ``stream``'s HLS output; it records while ``wanted``."""
        return StreamRecorder(self, stream, wanted)

    def reserve(self, size: int) -> bool:
        """Count ``size`` more bytes against the quota; False when they do not fit."""
        with self._lock:
            quota = self.config.disk_quota_bytes
            if quota and self.used_bytes + size > quota:
                return False
            self.used_bytes += size
            self.recorded_bytes += size
            return True

    def _count(self, started: int = 0, stopped: str | None = None) -> None:
        with self._lock:
            self.in_progress += started
            if stopped is not None:
                self.stops[stopped] += 1

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)


def _append_reported(path: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(encode_line({"t": "reported"}))
        fh.flush()
        os.fsync(fh.fileno())


@dataclass(slots=True)
class _InitSeen:
    file: str
    data: bytes
    codecs: list[str]
    resolution: tuple[int, int] | None


class StreamRecorder:
    """The segment sink of one stream's HLS output (see
    :class:`packager.hls.output.SegmentSink`). Its methods run in the
    stream's job queue, one at a time; ``wanted`` may be set from the loop."""

    def __init__(self, service: RecordingService, stream: str, wanted: bool) -> None:
        self.service = service
        self.stream = stream
        self.wanted = wanted
        self.protected = False
        """Encrypted segments are not recorded (their keys rotate and stay
        with the live stream)."""
        self._inits: dict[str, _InitSeen] = {}
        self._active: _Active | None = None
        self._stopped_early = False
        self.recording_id: str | None = None
        self.finished = False
        """The stream ended; nothing more comes."""

    @property
    def recording(self) -> bool:
        return self._active is not None

    # -- the sink ---------------------------------------------------------------
    def init_written(self, variant: str, file: str, data: bytes, tracks: tuple[Track, ...]) -> None:
        codecs = []
        resolution = None
        for track in tracks:
            try:
                codecs.append(codec_string(track))
            except CodecError as exc:  # no RFC 6381 string: left out of CODECS
                log.debug("stream %s: no codec string for a track: %s", self.stream, exc)
            if track.kind is MediaKind.VIDEO and track.width and track.height:
                resolution = (track.width, track.height)
        self._inits[variant] = _InitSeen(file, data, codecs, resolution)
        active = self._active
        if active is not None:
            self._guard(lambda: self._add_init(active, variant))

    def segment_written(self, variant: str, file: str, data: bytes, duration: Fraction, discontinuity: bool) -> None:
        if not self.wanted:
            if self._active is not None:
                self._stop("turned_off", "the stream's record flag was turned off")
            return
        if self._active is None:
            if self._stopped_early or self.protected:
                return
            self._guard(self._begin)
        active = self._active
        if active is not None:
            self._guard(lambda: self._add_segment(active, variant, file, data, duration, discontinuity))

    def finish(self) -> None:
        """The stream ended (after its grace): close the recording."""
        self.finished = True
        if self._active is not None:
            self._close(None)

    # -- in the queue -----------------------------------------------------------
    def _guard(self, step: Callable[[], None]) -> None:
        """Run ``step``; a limit or a storage fault ends the recording
        cleanly (never the stream: nothing is raised to the packager)."""
        try:
            step()
        except _Stop as stop:
            self._stop(stop.reason, stop.detail)
        except SpoolFullError as exc:
            cause = exc.__cause__
            full_disk = isinstance(cause, OSError) and cause.errno == errno.ENOSPC
            self._stop("disk_full" if full_disk else "spool_full", str(exc))
        except OSError as exc:
            self._stop("disk_full" if exc.errno == errno.ENOSPC else "storage_error", str(exc))
        except (StorageError, RecordingError) as exc:
            self._stop("storage_error", str(exc))

    def _begin(self) -> None:
        service = self.service
        recording_id = new_recording_id()
        path = service.journal_dir / (check_recording_id(recording_id) + JOURNAL_SUFFIX)
        journal = Journal(path)
        segment_format = "fmp4" if self._inits else "ts"
        start = start_record(recording_id, self.stream, service.clock(), segment_format)
        try:
            journal.append(start)
        except BaseException:
            journal.close()
            path.unlink(missing_ok=True)
            raise
        state = JournalState(recording_id, self.stream, start["at"], segment_format)
        self._active = _Active(state, journal)
        self.recording_id = recording_id
        service._count(started=1)
        log.info("stream %s: recording %s started", self.stream, recording_id)

    def _add_init(self, active: _Active, variant: str) -> None:
        seen = self._inits[variant]
        self.service.uploader.submit_bytes(f"{active.prefix}{variant}/{seen.file}", seen.data)
        active.record(init_record(variant, seen.file, seen.codecs, seen.resolution))

    def _add_segment(self, active: _Active, variant: str, file: str, data: bytes, duration: Fraction,
                     discontinuity: bool) -> None:
        service = self.service
        state = active.state
        log_ = state.variants.get(variant)
        limit = service.config.max_duration_s
        if limit and log_ is not None and float(log_.duration + duration) > limit:
            raise _Stop("max_duration", f"the recording reached recording.max_duration_s ({limit:g}s)")
        first = log_ is None or not log_.segments
        seen = self._inits.get(variant)
        if seen is not None and (log_ is None or log_.init != seen.file):
            self._add_init(active, variant)
        if not service.reserve(len(data)):
            raise _Stop("disk_quota", f"recordings reached recording.disk_quota_bytes "
                                      f"({service.config.disk_quota_bytes} bytes)")
        service.uploader.submit_bytes(f"{active.prefix}{variant}/{file}", data)
        # A first segment after the recording began mid-stream is no discontinuity.
        active.record(segment_record(variant, file, duration, discontinuity and not first, len(data)))
        service.uploader.submit_bytes(f"{active.prefix}{variant}/{MEDIA_PLAYLIST}",
                                      render_media(state.variants[variant], ended=False).encode())
        if first:
            multivariant = render_multivariant(state)
            if multivariant is not None:
                service.uploader.submit_bytes(active.prefix + MULTIVARIANT, multivariant.encode())
            service.uploader.submit_bytes(active.prefix + MANIFEST, json.dumps(manifest(state), indent=1).encode())

    def _stop(self, reason: str, detail: str) -> None:
        active = self._active
        if active is None:
            # The recording could not even begin: not retried this broadcast.
            log.warning("stream %s: recording not started (%s): %s; the live stream goes on",
                        self.stream, reason, detail)
            self._stopped_early = True
            self.service._count(stopped=reason)
            return
        log.warning("stream %s: recording %s stopped (%s): %s; the live stream goes on",
                    self.stream, active.state.recording_id, reason, detail)
        self._stopped_early = reason != "turned_off"
        try:
            active.record({"t": "stop", "reason": reason})
        except OSError as exc:
            log.error("recording %s: its stop could not be journalled (%s); closed at the next start",
                      active.state.recording_id, exc)
        self._close(RecordingStopped(active.state.recording_id, self.stream, reason, detail))

    def _close(self, stopped: RecordingStopped | None) -> None:
        active = self._active
        assert active is not None
        self._active = None
        service = self.service
        service._count(started=-1, stopped=stopped.reason if stopped is not None else None)
        try:
            service._finalize(active.state, active.journal)
        except (OSError, StorageError, JournalError) as exc:
            # The journal stays open-ended: closed later, or at the next start.
            log.error("recording %s could not be closed now (%s); tried again every %gs",
                      active.state.recording_id, exc, CLOSE_RETRY_S)
            active.journal.close()
            service.call_soon(service._closed_unfinished, active.state, active.journal.path, stopped)
            return
        active.journal.close()
        service.call_soon(service._closed, active.state, stopped)
