"""Payment processors post their signed events here: the only way, besides
the platform's payment service and admins, that paid access and tips are
recorded."""

from __future__ import annotations

from control_api import schemas as S
from control_api.errors import NotFound
from control_api.plane import ControlPlane
from control_api.routing import Reply, RequestCtx, Router
from control_api.store import payments
from control_api.store.commerce import gift_send_view

TAG = "payments"


def register(router: Router, plane: ControlPlane) -> None:
    @router.op("POST", "/payments/webhook/{provider}", summary="Receive a payment processor's signed event "
               "(subscription paid or cancelled, pay-per-view paid, tip paid, payment refunded)", tag=TAG,
               roles=None, params={"provider": S.PROVIDER}, raw_body=S.PAYMENT_EVENT_BODY,
               ok=(200, S.ref("PaymentReceipt")), errors=(404,))
    async def payment_event(ctx: RequestCtx) -> Reply:
        name = ctx.param("provider")
        processor = plane.processors.get(name)
        if processor is None:
            raise NotFound(f"no payment processor {name!r} is configured")
        now = plane.clock()
        event = processor.verify(ctx.request.headers, ctx.body, now)
        period = plane.config.subscription_period_days * 86400.0
        outcome = await payments.record_event(plane.db, event, now, period)
        if outcome.revocations:
            await plane.revoke(outcome.revocations)
        if outcome.gift is not None:
            await plane.webhooks.emit("gift.sent", {**gift_send_view(outcome.gift),
                                                    "creator_id": outcome.gift["creator_id"]})
        return Reply(200, outcome.receipt)
