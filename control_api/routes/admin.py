"""Admin routes (live streams, users, bans, the audit log) and webhook
endpoints."""

from __future__ import annotations

from control_api import schemas as S
from control_api.authn import actor_of
from control_api.errors import Conflict
from control_api.plane import ControlPlane
from control_api.revocations import EVERY_STREAM, Revocation
from control_api.routing import ROLES_ADMIN, ROLES_PLATFORM, Reply, RequestCtx, Router, paged
from control_api.store import audit, streams, users
from control_api.store import webhooks as hooks
from control_api.webhooks import check_target

TAG = "admin"


def register(router: Router, plane: ControlPlane) -> None:
    @router.op("GET", "/admin/streams", summary="Live streams (admin view)", tag=TAG, roles=ROLES_ADMIN,
               query={**S.PAGE_QUERY, "status": {"type": "string", "enum": ["pending", "live", "ended"],
                                                 "default": "live"}},
               ok=(200, S.ref("LiveStreamPage")))
    async def admin_streams(ctx: RequestCtx) -> Reply:
        rows = await streams.list_streams(plane.db, ctx.query["status"], ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged([streams.stream_view(r) for r in rows], ctx.query))

    @router.op("POST", "/admin/streams/{stream_id}/kick", summary="End a live stream and disconnect its encoder",
               tag=TAG, roles=ROLES_ADMIN, body=S.KICK_BODY, ok=(200, S.ref("Kicked")))
    async def kick(ctx: RequestCtx) -> Reply:
        stream = await streams.get_stream(plane.db, ctx.param("stream_id"))
        reason = ctx.body.get("reason", "ended by an admin")
        disconnected = await plane.kick(stream["playback_id"], reason)
        await plane.end_stream(actor_of(ctx.principal, ctx.remote), stream["id"], reason, kick=False)
        return Reply(200, {"stream_id": stream["id"], "disconnected": disconnected})

    @router.op("GET", "/admin/users", summary="Every user", tag=TAG, roles=ROLES_ADMIN,
               query={**S.PAGE_QUERY, "role": S.ROLE}, ok=(200, S.ref("UserPage")))
    async def admin_users(ctx: RequestCtx) -> Reply:
        rows = await users.list_users(plane.db, ctx.query["limit"], ctx.query["offset"], ctx.query.get("role"))
        return Reply(200, paged([users.user_view(r) for r in rows], ctx.query))

    @router.op("PATCH", "/admin/users/{user_id}", summary="Change a user's role, creator status or verified flag",
               tag=TAG, roles=ROLES_ADMIN, body=S.ADMIN_USER_PATCH, ok=(200, S.ref("User")), errors=(409,))
    async def admin_edit_user(ctx: RequestCtx) -> Reply:
        if ctx.param("user_id") == ctx.user().id and ctx.body.get("role", "admin") != "admin":
            raise Conflict("an admin cannot take away their own admin role")
        row = await users.update_user(plane.db, actor_of(ctx.principal, ctx.remote), ctx.param("user_id"),
                                      ctx.body, plane.clock())
        return Reply(200, users.user_view(row))

    @router.op("POST", "/admin/users/{user_id}/ban", summary="Ban a user: their sessions, their playback and "
               "their live stream end at once", tag=TAG, roles=ROLES_ADMIN, body=S.BAN_BODY, ok=(200, S.ref("Kicked")),
               errors=(409,))
    async def ban(ctx: RequestCtx) -> Reply:
        if ctx.param("user_id") == ctx.user().id:
            raise Conflict("an admin cannot ban themselves")
        actor = actor_of(ctx.principal, ctx.remote)
        now = plane.clock()
        user = await users.set_banned(plane.db, actor, ctx.param("user_id"), ctx.body["reason"], now)
        await plane.revoke([Revocation(user["id"], EVERY_STREAM, now, "banned")])
        current = await streams.open_stream(plane.db, user["id"])
        disconnected = False
        if current is not None:
            disconnected = await plane.kick(current["playback_id"], "creator banned")
            await plane.end_stream(actor, current["id"], "creator banned", kick=False)
        return Reply(200, {"stream_id": current["id"] if current else None, "disconnected": disconnected})

    @router.op("POST", "/admin/users/{user_id}/unban", summary="Lift a ban", tag=TAG, roles=ROLES_ADMIN,
               ok=(200, S.ref("User")))
    async def unban(ctx: RequestCtx) -> Reply:
        row = await users.set_banned(plane.db, actor_of(ctx.principal, ctx.remote), ctx.param("user_id"), None,
                                     plane.clock())
        return Reply(200, users.user_view(row))

    @router.op("GET", "/admin/audit", summary="The audit log, newest first", tag=TAG, roles=ROLES_ADMIN,
               query={**S.PAGE_QUERY, "target_id": S.ID}, ok=(200, S.ref("AuditPage")))
    async def audit_log(ctx: RequestCtx) -> Reply:
        rows = await audit.list_entries(plane.db, ctx.query["limit"], ctx.query["offset"], ctx.query.get("target_id"))
        return Reply(200, paged([audit.audit_view(r) for r in rows], ctx.query))

    @router.op("POST", "/webhooks", summary="Register a webhook endpoint (host must be allow-listed)",
               tag="webhooks", roles=ROLES_PLATFORM, body=S.WEBHOOK_BODY, ok=(201, S.ref("Webhook")))
    async def add_webhook(ctx: RequestCtx) -> Reply:
        check_target(ctx.body["url"], plane.config.webhook_allowed_hosts)
        events = sorted(set(ctx.body.get("events") or S.EVENTS))
        row, secret = await hooks.create_endpoint(plane.db, actor_of(ctx.principal, ctx.remote), ctx.body["url"],
                                                  events, plane.clock(), plane.sealer)
        return Reply(201, hooks.endpoint_view(row, secret))

    @router.op("GET", "/webhooks", summary="Webhook endpoints", tag="webhooks", roles=ROLES_PLATFORM,
               query=S.PAGE_QUERY, ok=(200, S.ref("WebhookPage")))
    async def list_webhooks(ctx: RequestCtx) -> Reply:
        rows = await hooks.list_endpoints(plane.db, ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged([hooks.endpoint_view(r) for r in rows], ctx.query))

    @router.op("DELETE", "/webhooks/{webhook_id}", summary="Remove a webhook endpoint", tag="webhooks",
               roles=ROLES_PLATFORM, ok=(204, None))
    async def delete_webhook(ctx: RequestCtx) -> Reply:
        await hooks.deactivate_endpoint(plane.db, actor_of(ctx.principal, ctx.remote), ctx.param("webhook_id"),
                                        plane.clock())
        return Reply(204, None)

    @router.op("GET", "/webhooks/{webhook_id}/deliveries", summary="Delivery attempts and outcomes",
               tag="webhooks", roles=ROLES_PLATFORM, query=S.PAGE_QUERY, ok=(200, S.ref("DeliveryPage")))
    async def deliveries(ctx: RequestCtx) -> Reply:
        rows = await hooks.list_deliveries(plane.db, ctx.param("webhook_id"), ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged([hooks.delivery_view(r) for r in rows], ctx.query))
