"""Recordings as VOD assets, under ``/recordings``: list the caller's own
(an admin sees every one), read, rename, price, delete, and ``watch``
(a signed playback URL for ``/vod/ID/index.m3u8``).

Playing, the MP4 download and the poster are the engine's ``/vod/ID/``
routes, gated by the same playback check as live streams with a token from
``watch``.
"""

from __future__ import annotations

from control_api import schemas as S
from control_api.authn import actor_of
from control_api.db import Row
from control_api.errors import Forbidden
from control_api.forwarded import request_origin
from control_api.plane import ControlPlane
from control_api.routing import ROLES_ANY_USER, ROLES_PLATFORM, Principal, Reply, RequestCtx, Router, paged
from control_api.store import commerce, recordings

TAG = "recordings"
ID_PATH = "/recordings/{recording_id}"


def register(router: Router, plane: ControlPlane) -> None:
    def owner_or_admin(me: Principal, row: Row) -> None:
        if me.role != "admin" and row["user_id"] != me.id:
            raise Forbidden("only the recording's creator or an admin may do this")

    @router.op("GET", "/recordings", summary="Recordings of the caller's streams (an admin: every recording)",
               tag=TAG, roles=ROLES_ANY_USER, query=S.PAGE_QUERY, ok=(200, S.ref("VodAssetPage")))
    async def list_recordings(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        owner = None if me.role == "admin" else me.id
        rows = await recordings.list_for(plane.db, owner, ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged([recordings.recording_view(r) for r in rows], ctx.query))

    @router.op("GET", ID_PATH, summary="A recording (its creator, an admin, or a viewer who may watch it)",
               tag=TAG, roles=ROLES_ANY_USER, ok=(200, S.ref("VodAsset")))
    async def get_recording(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        row = await recordings.get(plane.db, ctx.param("recording_id"))
        await commerce.check_access(plane.db, recordings.access_row(row), me.id, me.role, plane.clock())
        return Reply(200, recordings.recording_view(row))

    @router.op("PATCH", ID_PATH, summary="Rename a recording, or set its visibility or price (null: the stream's)",
               tag=TAG, roles=ROLES_ANY_USER, body=S.RECORDING_PATCH, ok=(200, S.ref("VodAsset")))
    async def update_recording(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        row = await recordings.get(plane.db, ctx.param("recording_id"))
        owner_or_admin(me, row)
        row = await recordings.update(plane.db, actor_of(me, ctx.remote), row["id"], ctx.body, plane.clock())
        await plane.asset_changed(row["id"])
        return Reply(200, recordings.recording_view(row))

    @router.op("DELETE", ID_PATH, summary="Delete a recording and its stored files; its URLs answer 404 at once",
               tag=TAG, roles=ROLES_ANY_USER, ok=(204, None))
    async def delete_recording(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        row = await recordings.get(plane.db, ctx.param("recording_id"))
        owner_or_admin(me, row)
        await recordings.delete(plane.db, actor_of(me, ctx.remote), row["id"], plane.clock())
        await plane.asset_deleted(row["id"])
        return Reply(204, None)

    @router.op("POST", ID_PATH + "/watch", summary="Watch a recording: a signed, expiring playback URL "
               "(/vod/ID/index.m3u8; the same token opens download.mp4 and poster.jpg)", tag=TAG,
               roles=ROLES_ANY_USER, ok=(200, S.ref("Watch")))
    async def watch(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        row = await recordings.get(plane.db, ctx.param("recording_id"))
        until = await commerce.check_access(plane.db, recordings.access_row(row), me.id, me.role, plane.clock())
        url, token, expires = plane.playback_url(row["playback_id"], me.id, request_origin(ctx.request), until,
                                                 asset_id=row["id"])
        return Reply(200, {"playback_url": url, "token": token, "expires_at": expires,
                           "asset": recordings.recording_view(row)})

    @router.op("POST", ID_PATH + "/unlock", summary="Record a paid pay-per-view purchase of a recording at its "
               "price (the platform's payment service or an admin); it is an unlock of the recording's stream, "
               "so it opens the stream and all of its recordings", tag=TAG, roles=ROLES_PLATFORM, body=S.UNLOCK,
               ok=(201, S.ref("Unlock")), errors=(409,))
    async def unlock_recording(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        row = await recordings.get(plane.db, ctx.param("recording_id"))
        unlocked = await commerce.unlock(plane.db, actor_of(me, ctx.remote), recordings.access_row(row),
                                         ctx.body["user_id"], plane.clock())
        return Reply(201, unlocked)
