"""``fanz-media recordings``: what operators see of recordings without the
API. ``list [--json]`` and ``delete ID``, reading the same configuration as
``serve`` (its storage backend, data directory and database).

A recording is listed from its manifest in storage (``recording.json``),
or from this node's journal when that says more (a recording in progress,
or one whose last manifest is still in the spool)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cluster.storage import ObjectNotFoundError, Storage, StorageError, open_storage
from control_api.db import connect
from control_api.store import streams
from control_api.store.audit import Actor
from engine.app.config import EngineConfig, load_config
from engine.errors import ConfigError
from packager.recording.errors import RecordingIdError
from packager.recording.ids import check_recording_id, recording_prefix
from packager.recording.journal import JournalState, parse_journal
from packager.recording.playlists import MANIFEST, manifest

FIELDS = ("id", "stream", "start", "duration_s", "state", "interrupted", "segments", "bytes", "stop_reason")


def journal_dirs(config: EngineConfig) -> list[Path]:
    """The journal directories of this node (one per engine process)."""
    base = Path(config.recording.journal_dir) if config.recording.journal_dir else \
        Path(config.server.data_dir) / "recordings"
    return [base, *sorted(p for p in base.glob("w*") if p.is_dir())] if base.is_dir() else []


def local_journals(config: EngineConfig) -> dict[str, tuple[Path, JournalState]]:
    found: dict[str, tuple[Path, JournalState]] = {}
    for directory in journal_dirs(config):
        for path in directory.glob("*.journal"):
            state = parse_journal(path.read_bytes())
            if state is not None:
                found[state.recording_id] = (path, state)
    return found


def _row(info: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": info["id"], "stream": info["stream"], "start": info["started_at"], "duration_s": info["duration_s"],
        "state": info["state"], "interrupted": info["interrupted"], "segments": info["segments"],
        "bytes": info["bytes"], "stop_reason": info["stop_reason"],
    }


def list_recordings(config: EngineConfig, storage: Storage) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for info in storage.list("recordings/"):
        parts = info.key.split("/")
        if len(parts) != 3 or parts[2] != MANIFEST:
            continue
        try:
            check_recording_id(parts[1])
            data = json.loads(storage.read(info.key))
            rows[parts[1]] = _row(data)
        except (RecordingIdError, ValueError, KeyError, TypeError, ObjectNotFoundError) as exc:
            print(f"fanz-media recordings: skipped {info.key}: {exc}", file=sys.stderr)
    for recording_id, (_path, state) in local_journals(config).items():
        rows[recording_id] = _row(manifest(state))
    return sorted(rows.values(), key=lambda r: (r["start"], r["id"]))


async def _delete_record(config: EngineConfig, recording_id: str) -> bool:
    api = replace(config.api, data_dir=Path(config.server.data_dir))
    db = await connect(api.resolved_database_url(), 1)
    try:
        return await streams.delete_recording(db, Actor("system", None), recording_id, time.time())
    finally:
        await db.close()


def delete(config: EngineConfig, storage: Storage, recording_id: str) -> int:
    check_recording_id(recording_id)
    journal = local_journals(config).get(recording_id)
    if journal is not None and not journal[1].closed:
        print(f"fanz-media recordings: {recording_id} is being recorded; stop its stream first", file=sys.stderr)
        return 1
    removed = storage.delete_prefix(recording_prefix(recording_id))
    record = False
    if config.http.api or config.api.database_url:
        record = asyncio.run(_delete_record(config, recording_id))
    if journal is not None:
        journal[0].unlink()
    if not removed and not record and journal is None:
        print(f"fanz-media recordings: no recording {recording_id}", file=sys.stderr)
        return 1
    print(f"deleted {recording_id}: {removed} objects{', its record' if record else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fanz-media recordings", description="list or delete recordings")
    parser.add_argument("--config", type=Path, help="TOML config file (the one serve uses)")
    parser.add_argument("--data-dir", type=Path, help="server.data_dir")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="every recording: id, stream, start, duration, state, interrupted")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    removal = sub.add_parser("delete", help="delete a recording's objects from storage and its record")
    removal.add_argument("id", help="recording id (rec_...)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.data_dir is not None:
            config = config.with_overrides(server={"data_dir": args.data_dir})
        storage = open_storage(config.storage, Path(config.server.data_dir))
    except ConfigError as exc:
        parser.exit(2, f"fanz-media recordings: configuration error: {exc}\n")
    try:
        if args.action == "list":
            rows = list_recordings(config, storage)
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                for r in rows:
                    print(f"{r['id']}  {r['stream']:<24} {r['duration_s']:>9.1f}s  {r['state']}"
                          f"{'  (interrupted)' if r['interrupted'] else ''}")
            return 0
        return delete(config, storage, args.id)
    except RecordingIdError as exc:
        parser.exit(2, f"fanz-media recordings: {exc}\n")
    except StorageError as exc:
        print(f"fanz-media recordings: storage: {exc}", file=sys.stderr)
        return 1
