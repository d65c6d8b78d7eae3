"""Recordings as VOD assets in the control API, on SQLite and PostgreSQL:
roles, validation, the playback check for ``asset:ID``, and deletion
reaching the engine's hook."""

from __future__ import annotations

import pytest

from engine.auth import PlaybackRequest, asset_content
from engine.errors import PlaybackDenied
from tests.control_api.conftest import Api


async def test_recordings_lifecycle(api: Api) -> None:
    admin = await api.admin()
    creator = await api.register("maker", "creator")
    other = await api.register("rival", "creator")
    fan = await api.register("watcher")
    _, stream = await api.call("POST", "/streaming/start", creator, {"title": "Show", "visibility": "pay_per_view",
                                                                     "price_cents": 300}, expect=201)
    _, rec = await api.call("POST", f"/streaming/{stream['id']}/recordings", admin,
                            {"uri": "recordings/x/", "duration_s": 60.0, "size_bytes": 10}, expect=201)
    asset = rec["id"]
    deleted: list[str] = []

    async def remove(asset_id: str) -> None:
        deleted.append(asset_id)

    api.plane.on_asset_deleted(remove)

    _, mine = await api.call("GET", "/recordings", creator, expect=200)
    assert [r["id"] for r in mine["items"]] == [asset]
    assert mine["items"][0]["visibility"] == "pay_per_view" and mine["items"][0]["price_cents"] == 300
    assert mine["items"][0]["playlist"] == f"/vod/{asset}/index.m3u8"
    _, none = await api.call("GET", "/recordings", other, expect=200)
    assert none["items"] == []
    await api.call("GET", f"/recordings/{asset}", fan, expect=403)
    await api.call("PATCH", f"/recordings/{asset}", other, {"title": "mine now"}, expect=403)
    await api.call("PATCH", f"/recordings/{asset}", creator, {"visibility": "everyone"}, expect=422)
    await api.call("PATCH", f"/recordings/{asset}", creator, {"price_cents": -1}, expect=422)
    await api.call("PATCH", f"/recordings/{asset}", creator, {"path": "../x"}, expect=422)
    await api.call("GET", "/recordings/..%2F..%2Fetc", creator, expect=404)

    # The playback check: no token refused; a watch token opens the asset only.
    request = PlaybackRequest(asset_content(asset), None, "127.0.0.1")
    with pytest.raises(PlaybackDenied):
        await api.checks.authorize_playback(request)
    await api.call("POST", f"/recordings/{asset}/watch", fan, expect=403)
    await api.call("POST", f"/recordings/{asset}/unlock", fan, {"user_id": fan.id}, expect=403)
    await api.call("POST", f"/recordings/{asset}/unlock", admin, {"user_id": fan.id}, expect=201)
    _, watch = await api.call("POST", f"/recordings/{asset}/watch", fan, expect=200)
    grant = await api.checks.authorize_playback(PlaybackRequest(asset_content(asset), watch["token"], "x"))
    assert grant is not None and not grant.public
    with pytest.raises(PlaybackDenied):
        await api.checks.authorize_playback(PlaybackRequest(stream["playback_id"], watch["token"], "x"))

    _, changed = await api.call("PATCH", f"/recordings/{asset}", creator,
                                {"title": "Best of", "visibility": "free"}, expect=200)
    assert changed["title"] == "Best of" and changed["visibility"] == "free"
    assert (await api.checks.authorize_playback(request)).public
    _, back = await api.call("PATCH", f"/recordings/{asset}", creator, {"visibility": None}, expect=200)
    assert back["visibility"] == "pay_per_view"

    await api.call("DELETE", f"/recordings/{asset}", fan, expect=403)
    await api.call("DELETE", f"/recordings/{asset}", creator, expect=204)
    assert deleted == [asset]
    with pytest.raises(PlaybackDenied, match="no such asset"):
        await api.checks.authorize_playback(PlaybackRequest(asset_content(asset), watch["token"], "x"))
    await api.call("GET", f"/recordings/{asset}", admin, expect=404)
    await api.call("DELETE", f"/recordings/{asset}", admin, expect=404)
