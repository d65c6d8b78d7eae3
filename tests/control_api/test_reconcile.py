"""Start-up reconciliation of the store with the engine, on SQLite and
PostgreSQL (the engine-level test kills a real process: tests/test_crash_restart.py)."""

from __future__ import annotations

from tests.control_api.conftest import Api
from tests.control_api.test_streaming_api import creator_with_key, publish


async def test_reconcile_ends_streams_the_engine_does_not_serve(api: Api) -> None:
    _, key, ghost = await creator_with_key(api, "ghost_creator")
    await publish(api, key)
    _, key2, kept = await creator_with_key(api, "kept_creator")
    await publish(api, key2)
    _, _, pending = await creator_with_key(api, "pending_creator")
    fan = await api.register("ghost_fan")
    for stream in (ghost, kept, pending):
        await api.call("POST", f"/streaming/{stream['id']}/join", fan, expect=200)
    _, active = await api.call("GET", "/streaming/active", expect=200)
    assert {s["id"] for s in active["items"]} == {ghost["id"], kept["id"]}

    ended = await api.plane.reconcile({kept["playback_id"]})
    assert ended == [ghost["playback_id"]]
    _, active = await api.call("GET", "/streaming/active", expect=200)
    assert [(s["id"], s["viewers"]) for s in active["items"]] == [(kept["id"], 1)]
    _, row = await api.call("GET", f"/streaming/{ghost['id']}", expect=200)
    assert row["status"] == "ended" and row["viewers"] == 0 and row["ended_reason"] == "engine restarted"
    _, row = await api.call("GET", f"/streaming/{pending['id']}", expect=200)
    assert row["status"] == "pending" and row["viewers"] == 0
    assert await api.plane.reconcile({kept["playback_id"]}) == []  # idempotent
