"""HTTP delivery of HLS: playlists from memory, segments from disk.

Every request passes the playback check; a ``token`` query parameter is
handed to it and, when present, carried into every URI of the playlists the
viewer receives so that segment requests are authorised too. A viewer
whose country the stream's geographic rule refuses is answered 451. A request held
open (a player early for the first segment, an LL-HLS blocking reload, a
preload hint) is checked again when it is answered, so access that ends
while it waits ends for it too.

Segments and parts are immutable, and cached for ``hls.segment_cache_s``:
by anyone (``public``) when the playback check says the stream is free,
only by the viewer's own browser (``private``) otherwise, so that a shared
cache never hands paid media to a viewer without a token.

Only names the packager itself writes are served: stream names and file
names are matched against strict patterns and the final path is checked to
lie under the HLS root, so no request can reach another file.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from pathlib import Path

from aiohttp import web

from engine.auth import PlaybackCheck, PlaybackGrant, PlaybackRequest
from engine.errors import GeoBlocked, PlaybackDenied
from packager.hls.live import HlsService
from packager.hls.output import MEDIA_PLAYLIST, StreamOutput

STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}$")
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,31}$")
MEDIA_FILE = re.compile(r"^(?:init_[0-9a-f]+_\d+\.mp4|seg_[0-9a-f]+_\d+\.(?:m4s|ts))$")
PART_FILE = re.compile(r"^part_[0-9a-f]+_\d+_\d+\.(?:m4s|ts)$")

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
CONTENT_TYPES = {".mp4": "video/mp4", ".m4s": "video/iso.segment", ".ts": "video/mp2t"}
NO_CACHE = "no-cache, no-store, max-age=0"



def cors_preflight(request: web.Request, headers: dict[str, str]) -> web.Response:
    """The answer to a CORS preflight of a read-only media route: the
    route's usual ``headers`` plus the methods and request headers allowed,
    which browsers may keep for a day."""
    headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
    headers["Access-Control-Allow-Headers"] = request.headers.get("Access-Control-Request-Headers", "*")
    headers["Access-Control-Max-Age"] = "86400"
    return web.Response(status=204, headers=headers)

class HlsHttp:
    """The ``/hls/`` routes."""

    def __init__(self, service: HlsService, playback_check: PlaybackCheck) -> None:
        self.service = service
        self.check = playback_check
        self.root = service.root.resolve()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/hls/{name}/index.m3u8", self.multivariant),
            web.get("/hls/{name}/{variant}/" + MEDIA_PLAYLIST, self.media_playlist),
            web.get("/hls/{name}/{variant}/{file}", self.media_file),
            web.route("*", "/hls/{tail:.*}", self.other),
        ]

    # -- helpers ---------------------------------------------------------
    def _headers(self, cache: str) -> dict[str, str]:
        return {
            "Cache-Control": cache,
            "Access-Control-Allow-Origin": self.service.config.cors_origin,
            "Access-Control-Expose-Headers": "Content-Length, Date",
        }

    def not_found(self, why: str = "no such stream") -> web.HTTPNotFound:
        """A 404 with this server's headers (the DASH routes share it)."""
        return web.HTTPNotFound(text=why, headers=self._headers(NO_CACHE))

    async def authorize(self, request: web.Request, name: str) -> str | None:
        """Run the playback check for ``name``; the viewer's token, or 403."""
        token, _ = await self._check(request, name)
        return token

    async def _check(self, request: web.Request, name: str) -> tuple[str | None, PlaybackGrant | None]:
        if not STREAM_NAME.fullmatch(name):
            raise self.not_found()
        token = request.query.get("token")
        remote = request.remote or ""
        try:
            grant = await self.check.authorize_playback(PlaybackRequest(name, token, remote))
        except GeoBlocked as exc:
            raise web.HTTPUnavailableForLegalReasons(
                link=None, text=f"playback refused: {exc}", headers=self._headers(NO_CACHE)
            ) from exc
        except PlaybackDenied as exc:
            raise web.HTTPForbidden(text=f"playback refused: {exc}", headers=self._headers(NO_CACHE)) from exc
        return token, grant

    def _media_cache(self, grant: PlaybackGrant | None) -> str:
        """Cache-Control of a segment or part: shared caches may keep the
        media of free streams only."""
        scope = "public" if grant is not None and grant.public else "private"
        return f"{scope}, max-age={self.service.config.segment_cache_s}, immutable"

    @staticmethod
    def _rewriter(token: str | None):  # type: ignore[no-untyped-def]
        if not token:
            return lambda uri: uri
        suffix = "token=" + urllib.parse.quote(token, safe="")
        return lambda uri: f"{uri}{'&' if '?' in uri else '?'}{suffix}"

    async def stream_output(self, name: str) -> StreamOutput:
        """The output of stream ``name``, or 404."""
        output = self.service.outputs.get(name)
        if output is None:
            raise self.not_found()
        return output

    # -- handlers --------------------------------------------------------
    async def other(self, request: web.Request) -> web.Response:
        """CORS preflight for any HLS path; 404 for every path not served."""
        if request.method != "OPTIONS":
            raise self.not_found("no such file")
        return cors_preflight(request, self._headers(NO_CACHE))

    async def multivariant(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        token = await self.authorize(request, name)
        output = await self.stream_output(name)
        rewrite = self._rewriter(token)
        text = output.render_multivariant(rewrite)
        waited = 0.0
        deadline = self.service.config.wait_for_playlist_s
        while text is None and not output.ended and waited < deadline:
            # A player that arrives before the first segment waits for it
            # rather than getting an error it may not retry.
            step = min(0.5, deadline - waited)
            await output.wait_changed(step)
            waited += step
            text = output.render_multivariant(rewrite)
        if text is None:
            raise self.not_found("stream has no segments yet")
        if waited:
            await self.authorize(request, name)
        return web.Response(text=text, content_type=PLAYLIST_TYPE, headers=self._headers(NO_CACHE))

    def _bad_request(self, why: str) -> web.HTTPBadRequest:
        return web.HTTPBadRequest(text=why, headers=self._headers(NO_CACHE))

    def _blocking_params(self, request: web.Request) -> tuple[int | None, int | None]:
        msn_text, part_text = request.query.get("_HLS_msn"), request.query.get("_HLS_part")
        try:
            msn = int(msn_text) if msn_text is not None else None
            part = int(part_text) if part_text is not None else None
        except ValueError as exc:
            raise self._bad_request("_HLS_msn and _HLS_part must be integers") from exc
        if part is not None and msn is None:
            raise self._bad_request("_HLS_part needs _HLS_msn")
        if (msn is not None and msn < 0) or (part is not None and part < 0):
            raise self._bad_request("_HLS_msn and _HLS_part must not be negative")
        return msn, part

    async def media_playlist(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        token = await self.authorize(request, name)
        output = await self.stream_output(name)
        variant = output.variants.get(request.match_info["variant"])
        if variant is None or not (variant.playlist.segments or variant.playlist.ended):
            raise self.not_found("no such variant")
        playlist = variant.playlist
        msn, part = self._blocking_params(request)
        if msn is not None and playlist.low_latency:
            # 6.2.5.2: hold the request until the asked-for segment or part
            # exists; refuse requests too far ahead; give up after three
            # target durations.
            last_msn, _ = playlist.last_position()
            if msn > last_msn + 2:
                raise self._bad_request("_HLS_msn is more than two segments ahead of the live edge")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3 * playlist.target_duration
            held = False
            while not playlist.has(msn, part):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise web.HTTPServiceUnavailable(text="segment not ready in time", headers=self._headers(NO_CACHE))
                held = True
                await output.wait_changed(remaining)
            if held:
                await self.authorize(request, name)
        skip = request.query.get("_HLS_skip") in ("YES", "v2")
        text = output.render_media(variant, self._rewriter(token), skip=skip)
        return web.Response(text=text, content_type=PLAYLIST_TYPE, headers=self._headers(NO_CACHE))

    async def part_file(
        self, request: web.Request, name: str, variant_name: str, filename: str, cache: str
    ) -> web.Response:
        """A partial segment, from memory; the one the preload hint names is
        held until it exists (4.4.5.3)."""
        output = await self.stream_output(name)
        variant = output.variants.get(variant_name)
        if variant is None:
            raise self.not_found("no such variant")
        playlist = variant.playlist
        found = playlist.part(filename)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3 * playlist.target_duration
        held = False
        while found is None and filename == playlist.next_part_uri and not playlist.ended:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            held = True
            await output.wait_changed(remaining)
            found = playlist.part(filename)
        if found is None:
            raise self.not_found("no such part")
        if held:
            await self.authorize(request, name)
        headers = self._headers(cache)
        return web.Response(body=found.data, content_type=CONTENT_TYPES[Path(filename).suffix], headers=headers)

    async def media_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        variant, filename = request.match_info["variant"], request.match_info["file"]
        if not VARIANT_NAME.fullmatch(variant):
            raise self.not_found("no such file")
        if PART_FILE.fullmatch(filename):
            _, grant = await self._check(request, name)
            return await self.part_file(request, name, variant, filename, self._media_cache(grant))
        if not MEDIA_FILE.fullmatch(filename):
            raise self.not_found("no such file")
        _, grant = await self._check(request, name)
        path = (self.root / name / variant / filename).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise self.not_found("no such file")
        suffix = Path(filename).suffix
        headers = self._headers(self._media_cache(grant))
        headers["Content-Type"] = CONTENT_TYPES[suffix]
        return web.FileResponse(path, headers=headers)
