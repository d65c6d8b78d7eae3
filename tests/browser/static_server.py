"""A loopback HTTP server for a folder of HLS or DASH files, for browser tests.

The harness page is served from its own origin (see play.mjs), so media
servers that the browser reads from must answer with CORS headers; this one
does, and sends playlists uncached so a live playlist is re-read each time.
Use it as ``async with serve_directory(path) as base_url: ...``.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _cors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Adds the headers a cross-origin MSE player needs, and answers preflights."""
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # Error answers need CORS too, or the player sees a network error
            # instead of the status code the test wants it to report.
            exc.headers["Access-Control-Allow-Origin"] = "*"
            raise
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Headers"] = "*"
    response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
    if request.path.endswith(".m3u8"):
        response.headers["Cache-Control"] = "no-cache"
    return response


def _make_app(folder: Path) -> web.Application:
    root = folder.resolve()

    async def send_file(request: web.Request) -> web.StreamResponse:
        relative = Path(request.match_info["path"])
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise web.HTTPNotFound()
        content_type = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return web.FileResponse(target, headers={"Content-Type": content_type})

    app = web.Application(middlewares=[_cors])
    app.router.add_get("/{path:.+}", send_file)
    return app


@asynccontextmanager
async def serve_directory(root: Path, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serves ``root`` on an OS-chosen port of ``host``; yields the base URL
    (ending in ``/``) and stops the server on exit."""
    runner = web.AppRunner(_make_app(root))
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    try:
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()
