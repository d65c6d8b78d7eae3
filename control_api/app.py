"""The aiohttp application of the control API.

``create_app(config, registry)`` returns an application meant to be mounted
at :data:`API_PREFIX` (``root.add_subapp(API_PREFIX, app)``) inside the
engine's HTTP server; :func:`get_checks` then gives the engine its publish
and playback checks. ``run_api`` serves it alone (``fanz-media api``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from control_api import openapi
from control_api.authn import authenticator
from control_api.checks import StoreChecks
from control_api.config import ApiConfig
from control_api.db import Database
from control_api.errors import ProblemError, StoreError
from control_api.forwarded import forwarded_middleware, networks
from control_api.plane import ControlPlane, NotReady
from control_api.revocations import RevocationFeed
from control_api.routes import admin, auth, payments, people, recordings, streaming
from control_api.routing import MAX_BODY_BYTES, Reply, RequestCtx, Router
from engine.app.geodb import open_wheel_database
from engine.auth import asset_content
from engine.geo import CountryCache
from engine.registry import StreamRegistry

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
PLANE = web.AppKey("control_plane", ControlPlane)
CHECKS = web.AppKey("control_checks", StoreChecks)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _problem(request: web.Request, status: int, kind: str, title: str, detail: str,
             headers: dict[str, str] | None = None, extra: dict[str, object] | None = None) -> web.Response:
    body = {"type": f"/problems/{kind}", "title": title, "status": status, "detail": detail,
            "instance": request.path, **(extra or {})}
    return web.json_response(body, status=status, headers=headers, content_type="application/problem+json")


@web.middleware
async def problem_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every error leaves as RFC 9457 problem details."""
    try:
        return await handler(request)
    except ProblemError as e:
        body = e.body(request.path)
        return web.json_response(body, status=e.status, headers=e.headers, content_type="application/problem+json")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "retry-after")}
        kind = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}.get(e.status, "http-error")
        detail = {404: f"nothing at {request.path}", 405: f"{request.method} is not allowed on {request.path}"}
        return _problem(request, e.status, kind, e.reason, detail.get(e.status, e.reason), headers)
    except NotReady as e:
        return _problem(request, 503, "not-ready", "Service unavailable", str(e))
    except StoreError:
        log.exception("control API: database error on %s %s", request.method, request.path)
        return _problem(request, 500, "store-error", "Internal error", "the database failed; see the server log")


async def _drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp names itself and its version in ``Server`` on every response;
    that tells an attacker which advisories to try and a client nothing."""
    response.headers.popall("Server", None)


def hide_server_header(app: web.Application) -> None:
    """Strip ``Server`` from every response that ``app`` (and any
    application mounted in it) sends."""
    app.on_response_prepare.append(_drop_server_header)


def build_router(plane: ControlPlane) -> Router:
    router = Router()
    for module in (auth, streaming, recordings, people, admin, payments):
        module.register(router, plane)
    return router


def create_app(config: ApiConfig, registry: StreamRegistry | None,
               revocation_feed: Callable[[Database], RevocationFeed] | None = None,
               geo: CountryCache | None = None) -> web.Application:
    """The control API, to mount at :data:`API_PREFIX`. The database opens on
    the application's start-up and closes on its clean-up.
    ``revocation_feed`` makes the feed that carries playback revocations
    between nodes (default: the shared database, polled). ``geo`` maps
    viewers' addresses to countries for the streams' geographic rules
    (default: none, so every address maps to no country)."""
    plane = ControlPlane(config, registry, feed_factory=revocation_feed, geo=geo)
    trusted = networks(config.trusted_proxies)
    app = web.Application(middlewares=[problem_middleware, forwarded_middleware(trusted)],
                          client_max_size=MAX_BODY_BYTES)
    hide_server_header(app)
    router = build_router(plane)
    document: dict[str, object] = {}

    @router.op("GET", "/openapi.json", summary="This API's OpenAPI 3.1 document", tag="meta", roles=None,
               ok=(200, {"type": "object"}))
    async def openapi_document(ctx: RequestCtx) -> Reply:
        return Reply(200, document)

    document.update(openapi.build(router, API_PREFIX))
    router.install(app, authenticator(plane))
    app[PLANE] = plane
    checks = StoreChecks(plane)
    app[CHECKS] = checks
    plane.on_asset_changed(lambda asset_id: checks.forget(asset_content(asset_id)))

    async def on_startup(_: web.Application) -> None:
        await plane.open()

    async def on_cleanup(_: web.Application) -> None:
        await plane.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def get_checks(app: web.Application) -> StoreChecks:
    """The publish and playback checks backed by this API's store."""
    return app[CHECKS]


def root_app(config: ApiConfig, registry: StreamRegistry | None = None,
             geo: CountryCache | None = None) -> web.Application:
    """A root application with the API under :data:`API_PREFIX` and a
    ``/health`` probe: what ``fanz-media api`` serves."""
    root = web.Application()
    hide_server_header(root)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    root.router.add_get("/health", health)
    root.add_subapp(API_PREFIX, create_app(config, registry, geo=geo))
    return root


async def run_api(config: ApiConfig, host: str, port: int) -> None:
    """Serve the API alone until cancelled."""
    runner = web.AppRunner(root_app(config, None, CountryCache(open_wheel_database())))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("control API listening on http://%s:%d%s", host, port, API_PREFIX)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
