"""The streaming routes the platform's apps already use, under
``/streaming``."""

from __future__ import annotations

from control_api import schemas as S
from control_api.authn import actor_of
from control_api.db import Row
from control_api.errors import Conflict, Forbidden, NotFound, UnavailableForLegalReasons, ValidationFailed
from control_api.forwarded import request_origin
from control_api.plane import ControlPlane
from control_api.routing import (
    ROLES_ANY_USER,
    ROLES_CREATOR,
    ROLES_PLATFORM,
    Principal,
    Reply,
    RequestCtx,
    Router,
    paged,
)
from control_api.store import commerce, streams
from engine.geo import GeoRule, GeoRuleError

TAG = "streaming"
ID_PATH = "/streaming/{stream_id}"


def check_geo(body: dict[str, object]) -> None:
    """Refuse (422) a ``geo`` that the schema lets through but that names a
    code no country has (``ZZ``)."""
    if "geo" not in body:
        return
    try:
        GeoRule.from_json(body["geo"])
    except GeoRuleError as exc:
        raise ValidationFailed([{"path": "/geo/countries", "message": str(exc)}]) from exc


def register(router: Router, plane: ControlPlane) -> None:
    def owner_or_admin(me: Principal, stream: Row) -> None:
        if me.role not in ("admin", "service") and stream["user_id"] != me.id:
            raise Forbidden("only the stream's creator or an admin may do this")

    async def update_own_stream(ctx: RequestCtx, fields: dict[str, object]) -> Row:
        """Change ``fields`` of the path's stream for its creator (or an
        admin); an ended stream can no longer be changed."""
        me = ctx.user()
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        owner_or_admin(me, stream)
        if stream["status"] == "ended":
            raise Conflict("this stream has ended", kind="stream-ended")
        return await streams.update_stream(plane.db, actor_of(me, ctx.remote), stream["id"], fields, plane.clock())

    @router.op("POST", "/streaming/start", summary="Open a stream session (then publish with the stream key)",
               tag=TAG, roles=ROLES_CREATOR, body=S.START_STREAM, ok=(201, S.ref("LiveStream")), also_ok=(200,))
    async def start_stream(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        check_geo(ctx.body)
        actor = actor_of(me, ctx.remote)
        current = await streams.open_stream(plane.db, me.id)
        if current is not None:
            row = await streams.update_stream(plane.db, actor, current["id"], ctx.body, plane.clock())
            await plane.apply_settings(streams.stream_view(row))
            return Reply(200, streams.stream_view(row))
        row = await streams.create_stream(plane.db, actor, me.id, ctx.body, plane.clock())
        await plane.apply_settings(streams.stream_view(row))
        return Reply(201, streams.stream_view(row))

    @router.op("POST", "/streaming/stop", summary="End the current stream and disconnect the encoder", tag=TAG,
               roles=ROLES_CREATOR, ok=(200, S.ref("LiveStream")), errors=(404,))
    async def stop_stream(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        current = await streams.open_stream(plane.db, me.id)
        if current is None:
            raise NotFound("you have no open stream")
        await plane.end_stream(actor_of(me, ctx.remote), current["id"], "stopped by the creator", kick=True)
        return Reply(200, streams.stream_view(await streams.get_stream(plane.db, current["id"])))

    @router.op("GET", "/streaming/status", summary="Whether the caller is live, and the open stream", tag=TAG,
               roles=ROLES_CREATOR, ok=(200, S.ref("StreamStatus")))
    async def stream_status(ctx: RequestCtx) -> Reply:
        current = await streams.open_stream(plane.db, ctx.user().id)
        view = streams.stream_view(current) if current else None
        return Reply(200, {"live": bool(view and view["status"] == "live"), "stream": view})

    @router.op("GET", "/streaming/key", summary="The stream key (its value is shown only when first created)",
               tag=TAG, roles=ROLES_CREATOR, ok=(200, S.ref("StreamKey")))
    async def get_key(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        row = await streams.current_key(plane.db, me.id)
        if row is not None:
            return Reply(200, streams.key_view(row, None))
        row, key = await streams.new_key(plane.db, actor_of(me, ctx.remote), me.id, plane.clock())
        return Reply(200, streams.key_view(row, key))

    @router.op("POST", "/streaming/regenerate-key", summary="Replace the stream key; a publisher on the old key "
               "is disconnected", tag=TAG, roles=ROLES_CREATOR, ok=(200, S.ref("StreamKey")))
    async def regenerate_key(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        actor = actor_of(me, ctx.remote)
        row, key = await streams.new_key(plane.db, actor, me.id, plane.clock())
        current = await streams.open_stream(plane.db, me.id)
        if current is not None and current["status"] == "live":
            await plane.end_stream(actor, current["id"], "stream key regenerated", kick=True)
        return Reply(200, streams.key_view(row, key))

    @router.op("GET", "/streaming/active", summary="Streams that are live now", tag=TAG, roles=None,
               query=S.PAGE_QUERY, ok=(200, S.ref("LiveStreamPage")))
    async def active(ctx: RequestCtx) -> Reply:
        rows = await streams.list_streams(plane.db, "live", ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged([streams.stream_view(r) for r in rows], ctx.query))

    @router.op("GET", "/streaming/schedule", summary="Upcoming scheduled streams", tag=TAG, roles=None,
               query={**S.PAGE_QUERY, "creator_id": S.ID}, ok=(200, S.ref("SchedulePage")))
    async def list_schedule(ctx: RequestCtx) -> Reply:
        rows = await streams.list_schedules(plane.db, plane.clock() - 3600, ctx.query["limit"], ctx.query["offset"],
                                            ctx.query.get("creator_id"))
        return Reply(200, paged(rows, ctx.query))

    @router.op("POST", "/streaming/schedule", summary="Announce a stream", tag=TAG, roles=ROLES_CREATOR,
               body=S.SCHEDULE_BODY, ok=(201, S.ref("Schedule")))
    async def add_schedule(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        row = await streams.create_schedule(plane.db, actor_of(me, ctx.remote), me.id, ctx.body, plane.clock())
        return Reply(201, row)

    @router.op("GET", ID_PATH, summary="One stream", tag=TAG, roles=None, ok=(200, S.ref("LiveStream")))
    async def get_stream(ctx: RequestCtx) -> Reply:
        return Reply(200, streams.stream_view(await streams.get_stream(plane.db, ctx.param("stream_id"))))

    @router.op("GET", ID_PATH + "/viewers", summary="Viewer counts (and, for the creator, who is watching)",
               tag=TAG, roles=ROLES_ANY_USER, query=S.PAGE_QUERY, ok=(200, S.ref("Viewers")))
    async def viewers(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        items: list[Row] = []
        if me.role == "admin" or stream["user_id"] == me.id:
            items = await streams.list_viewers(plane.db, stream["id"], ctx.query["limit"], ctx.query["offset"])
        return Reply(200, {"stream_id": stream["id"], "concurrent": int(stream["viewers"]),
                           "peak": stream["peak_viewers"], "total_views": stream["total_views"],
                           **paged(items, ctx.query)})

    async def live_stream_for(ctx: RequestCtx, me: Principal) -> tuple[Row, float, float | None]:
        """The stream named in the path, if it has not ended and ``me`` may
        watch it (subscription, pay-per-view, or free), the time now and
        when that access ends by itself (``None``: it does not)."""
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        if stream["status"] == "ended":
            raise Conflict("this stream has ended", kind="stream-ended")
        now = plane.clock()
        until = await commerce.check_access(plane.db, stream, me.id, me.role, now)
        return stream, now, until

    @router.op("POST", ID_PATH + "/join", summary="Join a stream: returns a signed, expiring playback URL",
               tag=TAG, roles=ROLES_ANY_USER, ok=(200, S.ref("Join")), errors=(409, 451))
    async def join(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        stream, now, until = await live_stream_for(ctx, me)
        rule = streams.geo_rule(stream)
        if rule is not None:
            # The one lookup at token issue; the playback check repeats it
            # from its per-address cache for the session's requests.
            country = await plane.geo.country(ctx.remote)
            if not rule.permits(country):
                where = f"your country ({country})" if country else "your location (its country is unknown)"
                raise UnavailableForLegalReasons(f"this stream is not available in {where}")
        session_id = await streams.join(plane.db, stream["id"], me.id, ctx.remote, now)
        url, token, expires = plane.playback_url(stream["playback_id"], me.id, request_origin(ctx.request), until)
        stream = await streams.get_stream(plane.db, stream["id"])
        return Reply(200, {"playback_url": url, "token": token, "expires_at": expires,
                           "viewer_session_id": session_id, "stream": streams.stream_view(stream)})

    @router.op("POST", ID_PATH + "/leave", summary="Leave a stream", tag=TAG, roles=ROLES_ANY_USER,
               ok=(200, S.ref("Leave")))
    async def leave(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        left = await streams.leave(plane.db, stream["id"], me.id, plane.clock())
        stream = await streams.get_stream(plane.db, stream["id"])
        return Reply(200, {"stream_id": stream["id"], "left": left, "concurrent": int(stream["viewers"])})

    @router.op("POST", ID_PATH + "/gift", summary="Record a paid virtual gift (a tip) to the creator (the "
               "platform's payment service or an admin; processors use /payments/webhook)", tag=TAG,
               roles=ROLES_PLATFORM, body=S.GIFT_BODY, ok=(201, S.ref("GiftSend")), errors=(409,))
    async def gift(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        if stream["status"] == "ended":
            raise Conflict("this stream has ended", kind="stream-ended")
        row = await commerce.send_gift(plane.db, actor_of(me, ctx.remote), stream["id"], ctx.body["sender_id"],
                                       ctx.body["gift_id"], ctx.body.get("quantity", 1), ctx.body.get("message", ""),
                                       plane.clock())
        view = commerce.gift_send_view(row)
        await plane.webhooks.emit("gift.sent", {**view, "creator_id": stream["user_id"]})
        return Reply(201, view)

    @router.op("GET", ID_PATH + "/gifts", summary="The stream's gift leaderboard and recent gifts", tag=TAG,
               roles=None, query={"limit": S.PAGE_QUERY["limit"]}, ok=(200, S.ref("Leaderboard")))
    async def gifts(ctx: RequestCtx) -> Reply:
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        top, recent, total = await commerce.leaderboard(plane.db, stream["id"], ctx.query["limit"])
        return Reply(200, {"stream_id": stream["id"], "total_cents": total, "leaderboard": top,
                           "recent": [commerce.gift_send_view(r) for r in recent]})

    @router.op("POST", ID_PATH + "/record", summary="Turn recording of the stream on or off", tag=TAG,
               roles=ROLES_CREATOR, body=S.RECORD_BODY, ok=(200, S.ref("LiveStream")), errors=(409,))
    async def record(ctx: RequestCtx) -> Reply:
        row = await update_own_stream(ctx, {"recording": ctx.body["enabled"]})
        return Reply(200, streams.stream_view(row))

    @router.op("PUT", ID_PATH + "/effects", summary="Change the stream's effects; a live stream shows them at once",
               tag=TAG, roles=ROLES_CREATOR, body=S.EFFECTS_BODY, ok=(200, S.ref("LiveStream")), errors=(409,))
    async def set_effects(ctx: RequestCtx) -> Reply:
        row = await update_own_stream(ctx, {"effects": ctx.body["effects"]})
        await plane.apply_settings(streams.stream_view(row))
        return Reply(200, streams.stream_view(row))

    @router.op("PUT", ID_PATH + "/geo", summary="Set or clear the stream's geographic restriction (allowed or "
               "blocked countries); viewers it refuses get 451 from playlists, segments, keys and WHEP",
               tag=TAG, roles=ROLES_CREATOR, body=S.GEO_BODY, ok=(200, S.ref("LiveStream")), errors=(409,))
    async def set_geo(ctx: RequestCtx) -> Reply:
        check_geo(ctx.body)
        row = await update_own_stream(ctx, {"geo": ctx.body["geo"]})
        return Reply(200, streams.stream_view(row))

    @router.op("GET", ID_PATH + "/recordings", summary="Recordings of a stream", tag=TAG, roles=ROLES_ANY_USER,
               query=S.PAGE_QUERY, ok=(200, S.ref("RecordingPage")))
    async def recordings(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        await commerce.check_access(plane.db, stream, me.id, me.role, plane.clock())
        rows = await streams.list_recordings(plane.db, stream["id"], ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged(rows, ctx.query))

    @router.op("POST", ID_PATH + "/recordings", summary="Report a finished recording (recorder or platform "
               "service)", tag=TAG, roles=ROLES_PLATFORM, body=S.RECORDING_BODY, ok=(201, S.ref("Recording")),
               errors=(409,))
    async def add_recording(ctx: RequestCtx) -> Reply:
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        b = ctx.body
        row = await plane.recording_ready(actor_of(ctx.principal, ctx.remote), stream["id"], b["uri"],
                                          b["duration_s"], b["size_bytes"], recording_id=b.get("id"))
        return Reply(201, row)

    @router.op("POST", ID_PATH + "/unlock", summary="Record a paid pay-per-view purchase of the stream (the "
               "platform's payment service or an admin; processors use /payments/webhook)", tag=TAG,
               roles=ROLES_PLATFORM, body=S.UNLOCK, ok=(201, S.ref("Unlock")), errors=(409,))
    async def unlock(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        row = await commerce.unlock(plane.db, actor_of(me, ctx.remote), stream, ctx.body["user_id"], plane.clock())
        return Reply(201, row)
