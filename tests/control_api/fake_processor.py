"""A fake payment processor, for the tests only: it builds events and signs
them the way a processor signs its webhooks (HMAC-SHA256 over
"<timestamp>.<body>", sent as ``Payment-Signature: t=...,v1=...``), so the
API's real verification and recording run against it. The signing here is
written out independently of the API's own code on purpose."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from tests.control_api.conftest import PROCESSOR, PROCESSOR_SECRET, Api


class FakeProcessor:
    def __init__(self, api: Api, name: str = PROCESSOR, secret: str = PROCESSOR_SECRET) -> None:
        self.api = api
        self.name = name
        self.secret = secret

    @staticmethod
    def event(event_type: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
        doc = {"id": event_id or f"evt_{secrets.token_hex(8)}", "type": event_type, "created": int(time.time()),
               "data": data}
        return json.dumps(doc).encode()

    def sign(self, body: bytes, at: float | None = None, secret: str | None = None) -> dict[str, str]:
        t = int(time.time() if at is None else at)
        mac = hmac.new((secret or self.secret).encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Payment-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}

    async def deliver(self, body: bytes, headers: dict[str, str] | None = None,
                      provider: str | None = None) -> tuple[int, Any]:
        """POST one event as the processor would; ``headers`` default to a
        fresh valid signature."""
        path = f"/api/v1/payments/webhook/{provider or self.name}"
        async with self.api.client.post(path, data=body, headers=headers or self.sign(body)) as resp:
            return resp.status, await resp.json(content_type=None)

    async def send(self, event_type: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """Sign and deliver an event; it must be accepted."""
        body = self.event(event_type, data, event_id)
        status, receipt = await self.deliver(body)
        assert status == 200, receipt
        return receipt  # type: ignore[no-any-return]
