"""Key delivery over HTTP: ``GET /keys/NAME/KID`` (the 16 bytes of an
AES-128 or SAMPLE-AES key, where the playlists' ``EXT-X-KEY`` URIs point)
and ``POST /drm/clearkey/NAME`` (the W3C ClearKey licence, see
:mod:`drm.clearkey`).

NAME is a stream's playback name or a VOD asset's id. Every request passes
the same playback check as the stream's playlists and segments, with the
same ``token`` query parameter, so whoever may watch may have the keys and
nobody else: no token where one is needed, an expired one, one for
another stream, or a viewer whose access ended is answered 403; a viewer
in a country the stream's geographic rule refuses, 451. Only keys
that belong to NAME are ever answered; a key ID of another stream is
"no such key". Requests are counted per token (per address without one)
against ``drm.key_requests_per_minute``; over it, 429.

Keys never reach a log: nothing here logs a key, and the access log is
off. Every answer is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from drm import clearkey
from drm.errors import LicenceRequestError
from drm.model import KEY_BYTES, ContentKey, KeyProvider
from engine.auth import PlaybackCheck, PlaybackRequest
from engine.errors import GeoBlocked, PlaybackDenied

log = logging.getLogger(__name__)

CONTENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}$")
KID_HEX = re.compile(r"^[0-9a-fA-F]{32}$")
NO_STORE = "no-store"


class RateLimit(Protocol):
    """A limiter such as :class:`control_api.ratelimit.RateLimiter`:
    ``hit`` counts one request of ``key`` and returns 0 when it may go on,
    else the seconds until it may."""

    def hit(self, key: str, now: float) -> float: ...


@dataclass(slots=True)
class DeliveryStats:
    """Counters for ``/metrics``."""

    keys_served: int = 0
    licences_served: int = 0
    refused: int = 0
    rate_limited: int = 0


class KeyHttp:
    """The ``/keys/`` and ``/drm/`` routes."""

    def __init__(
        self,
        provider: KeyProvider,
        playback_check: PlaybackCheck,
        limiter: RateLimit,
        *,
        cors_origin: str = "*",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.check = playback_check
        self.limiter = limiter
        self.cors_origin = cors_origin
        self.clock = clock
        self.stats = DeliveryStats()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/keys/{name}/{kid}", self.key, allow_head=False),
            web.post("/drm/clearkey/{name}", self.licence),
            web.route("*", "/keys/{tail:.*}", self.other),
            web.route("*", "/drm/{tail:.*}", self.other),
        ]

    # -- helpers ---------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Cache-Control": NO_STORE, "Access-Control-Allow-Origin": self.cors_origin}

    def _fail(self, status: type[web.HTTPException], text: str, **extra: str) -> web.HTTPException:
        return status(text=text, headers={**self._headers(), **extra})

    async def _authorize(self, request: web.Request) -> str:
        """The checked content name; raises the HTTP answer when the request
        may not go on (404 name, 429 rate, 403 access, 451 country)."""
        name = request.match_info["name"]
        if not CONTENT_NAME.fullmatch(name):
            raise self._fail(web.HTTPNotFound, "no such stream")
        token = request.query.get("token")
        remote = request.remote or ""
        # Buckets are keyed by a digest: a bounded size, whatever a client sends.
        bucket = "t:" + hashlib.sha256(token.encode()).hexdigest()[:32] if token else "a:" + remote
        wait = self.limiter.hit(bucket, self.clock())
        if wait > 0:
            self.stats.rate_limited += 1
            raise self._fail(web.HTTPTooManyRequests, "too many key requests", **{"Retry-After": str(int(wait) + 1)})
        try:
            await self.check.authorize_playback(PlaybackRequest(name, token, remote))
        except GeoBlocked as exc:
            self.stats.refused += 1
            raise web.HTTPUnavailableForLegalReasons(None, text=f"key refused: {exc}", headers=self._headers()) from exc
        except PlaybackDenied as exc:
            self.stats.refused += 1
            raise self._fail(web.HTTPForbidden, f"key refused: {exc}") from exc
        return name

    async def _find(self, name: str, kids: list[bytes]) -> list[ContentKey]:
        def lookup() -> list[ContentKey]:
            found = (self.provider.find_key(name, kid) for kid in kids)
            return [key for key in found if key is not None]

        return await asyncio.get_running_loop().run_in_executor(None, lookup)

    # -- handlers ----------------------------------------------------------------
    async def other(self, request: web.Request) -> web.Response:
        """CORS preflight of the licence and key requests; 404 otherwise."""
        if request.method != "OPTIONS":
            raise self._fail(web.HTTPNotFound, "no such resource")
        headers = self._headers()
        headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        headers["Access-Control-Allow-Headers"] = request.headers.get("Access-Control-Request-Headers", "*")[:512]
        headers["Access-Control-Max-Age"] = "86400"
        return web.Response(status=204, headers=headers)

    async def key(self, request: web.Request) -> web.Response:
        name = await self._authorize(request)
        kid_text = request.match_info["kid"]
        if not KID_HEX.fullmatch(kid_text):
            raise self._fail(web.HTTPBadRequest, f"a key ID is {KEY_BYTES * 2} hex digits")
        found = await self._find(name, [bytes.fromhex(kid_text)])
        if not found:
            raise self._fail(web.HTTPNotFound, "no such key")
        self.stats.keys_served += 1
        return web.Response(body=found[0].key, content_type="application/octet-stream", headers=self._headers())

    async def licence(self, request: web.Request) -> web.Response:
        name = await self._authorize(request)
        body = await request.content.read(clearkey.MAX_REQUEST_BYTES + 1)
        try:
            kids = clearkey.parse_request(body)
        except LicenceRequestError as exc:
            raise self._fail(web.HTTPBadRequest, f"bad licence request: {exc}") from exc
        found = await self._find(name, kids)
        if not found:
            raise self._fail(web.HTTPNotFound, "none of the requested keys belongs to this stream")
        self.stats.licences_served += 1
        return web.Response(body=clearkey.answer(found), content_type="application/json", headers=self._headers())
