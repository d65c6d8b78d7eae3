"""Users, subscriptions and the gift catalogue: the records that playback
authorisation reads."""

from __future__ import annotations

from control_api import schemas as S
from control_api.authn import actor_of
from control_api.errors import Forbidden, NotFound
from control_api.plane import ControlPlane
from control_api.revocations import Revocation, creator_scope, subscription_scope
from control_api.routing import (
    ROLES_ADMIN,
    ROLES_ANY_USER,
    ROLES_CREATOR,
    ROLES_PLATFORM,
    Reply,
    RequestCtx,
    Router,
    paged,
)
from control_api.store import commerce, users

TAG = "users"


def register(router: Router, plane: ControlPlane) -> None:
    @router.op("GET", "/users/me", summary="The caller's own profile", tag=TAG, roles=ROLES_ANY_USER,
               ok=(200, S.ref("Me")))
    async def me(ctx: RequestCtx) -> Reply:
        return Reply(200, users.me_view(await users.get_user(plane.db, ctx.user().id)))

    @router.op("PATCH", "/users/me", summary="Edit the caller's display name or bio", tag=TAG,
               roles=ROLES_ANY_USER, body=S.PROFILE_PATCH, ok=(200, S.ref("Me")))
    async def edit_me(ctx: RequestCtx) -> Reply:
        principal = ctx.user()
        row = await users.update_user(plane.db, actor_of(principal, ctx.remote), principal.id, ctx.body,
                                      plane.clock())
        return Reply(200, users.me_view(row))

    def is_admin(ctx: RequestCtx) -> bool:
        return ctx.principal is not None and ctx.principal.role == "admin"

    @router.op("GET", "/users", summary="Public profiles of fans and creators, optionally of one role "
               "(admin accounts are listed to admins only)", tag=TAG, roles=None,
               query={**S.PAGE_QUERY, "role": S.ROLE}, ok=(200, S.ref("UserPage")), errors=(403,))
    async def list_users(ctx: RequestCtx) -> Reply:
        # Who the admins are is of use to an attacker and to nobody else.
        role = ctx.query.get("role")
        if role == "admin" and not is_admin(ctx):
            raise Forbidden("only an admin may list admin accounts")
        rows = await users.list_users(plane.db, ctx.query["limit"], ctx.query["offset"], role,
                                      include_admins=is_admin(ctx))
        return Reply(200, paged([users.user_view(r) for r in rows], ctx.query))

    @router.op("GET", "/users/{user_id}", summary="A public profile (of an admin: to admins only)", tag=TAG,
               roles=None, ok=(200, S.ref("User")))
    async def get_user(ctx: RequestCtx) -> Reply:
        row = await users.get_user(plane.db, ctx.param("user_id"))
        if row["role"] == "admin" and not is_admin(ctx):
            raise NotFound(f"no user {ctx.param('user_id')!r}")
        return Reply(200, users.user_view(row))

    @router.op("POST", "/subscriptions", summary="Record a paid subscription period of a fan to a creator "
               "(the platform's payment service or an admin; processors use /payments/webhook)",
               tag="subscriptions", roles=ROLES_PLATFORM, body=S.SUBSCRIBE, ok=(201, S.ref("Subscription")),
               errors=(404, 409))
    async def subscribe(ctx: RequestCtx) -> Reply:
        principal = ctx.user()
        period = plane.config.subscription_period_days * 86400.0
        row = await commerce.subscribe(plane.db, actor_of(principal, ctx.remote), ctx.body["fan_id"],
                                       ctx.body["creator_id"], ctx.body.get("tier", "standard"), plane.clock(),
                                       period)
        return Reply(201, row)

    @router.op("GET", "/subscriptions", summary="The caller's subscriptions", tag="subscriptions",
               roles=ROLES_ANY_USER, query=S.PAGE_QUERY, ok=(200, S.ref("SubscriptionPage")))
    async def my_subscriptions(ctx: RequestCtx) -> Reply:
        rows = await commerce.list_subscriptions(plane.db, ctx.user().id, ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged(rows, ctx.query))

    @router.op("DELETE", "/subscriptions/{subscription_id}", summary="Cancel a subscription now",
               tag="subscriptions", roles=ROLES_ANY_USER | ROLES_PLATFORM, ok=(200, S.ref("Subscription")))
    async def cancel(ctx: RequestCtx) -> Reply:
        principal = ctx.user()
        own_only = None if principal.role in ("admin", "service") else principal.id
        now = plane.clock()
        row, was_active = await commerce.cancel_subscription(plane.db, actor_of(principal, ctx.remote),
                                                             ctx.param("subscription_id"), own_only, now)
        if was_active:
            await plane.revoke([Revocation(row["fan_id"], subscription_scope(row["creator_id"]), now,
                                           "subscription cancelled")])
        return Reply(200, row)

    @router.op("GET", "/users/me/blocks", summary="Users the calling creator has blocked", tag=TAG,
               roles=ROLES_CREATOR, query=S.PAGE_QUERY, ok=(200, S.ref("BlockPage")))
    async def list_blocks(ctx: RequestCtx) -> Reply:
        rows = await commerce.list_blocks(plane.db, ctx.user().id, ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged([commerce.block_view(r) for r in rows], ctx.query))

    @router.op("POST", "/users/me/blocks", summary="Block a user from the calling creator's streams; their "
               "playback ends at once", tag=TAG, roles=ROLES_CREATOR, body=S.BLOCK_BODY, ok=(201, S.ref("Block")),
               errors=(404, 409))
    async def add_block(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        now = plane.clock()
        row = await commerce.block(plane.db, actor_of(me, ctx.remote), me.id, ctx.body["user_id"], now)
        await plane.revoke([Revocation(row["user_id"], creator_scope(me.id), now, "blocked by the creator")])
        return Reply(201, commerce.block_view(row))

    @router.op("DELETE", "/users/me/blocks/{user_id}", summary="Lift a block", tag=TAG, roles=ROLES_CREATOR,
               ok=(204, None))
    async def remove_block(ctx: RequestCtx) -> Reply:
        me = ctx.user()
        await commerce.unblock(plane.db, actor_of(me, ctx.remote), me.id, ctx.param("user_id"), plane.clock())
        return Reply(204, None)

    @router.op("GET", "/gifts", summary="The gift catalogue", tag="gifts", roles=None, query=S.PAGE_QUERY,
               ok=(200, S.ref("GiftPage")))
    async def gift_catalogue(ctx: RequestCtx) -> Reply:
        rows = await commerce.catalogue(plane.db, ctx.query["limit"], ctx.query["offset"])
        return Reply(200, paged([commerce.gift_view(r) for r in rows], ctx.query))

    @router.op("POST", "/gifts", summary="Add a gift to the catalogue", tag="gifts", roles=ROLES_ADMIN,
               body=S.GIFT_CATALOGUE_BODY, ok=(201, S.ref("Gift")), errors=(409,))
    async def add_gift(ctx: RequestCtx) -> Reply:
        b = ctx.body
        row = await commerce.add_gift(plane.db, actor_of(ctx.principal, ctx.remote), b["id"], b["name"],
                                      b["price_cents"], plane.clock())
        return Reply(201, commerce.gift_view(row))
