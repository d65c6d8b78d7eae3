"""HTTP delivery of DASH: ``/dash/NAME/manifest.mpd`` over the HLS output's
segments, and ``/dash/time`` for the players' clocks.

The manifest passes the same playback check as the HLS playlists, with the
same ``token`` query parameter, and carries the token into every segment
URL it names (the SegmentTemplate strings end in ``?token=...``: a query on
a BaseURL would be dropped when players resolve relative URLs). The
segments themselves are the HLS output's files: ``/dash/NAME/VARIANT/FILE``
is answered by the HLS handler, with its checks and caching, so a paid
segment is gated the same whichever manifest named it.

``/dash/time`` answers the server's clock as an xs:dateTime (the MPD's
``UTCTiming``, scheme ``urn:mpeg:dash:utc:http-xsdate:2014``): a live
manifest's availability times are wall-clock times, and a viewer whose
clock is off would otherwise ask for segments too early or too late.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable

from aiohttp import web

from packager.dash.manifest import Links
from packager.dash.mpd import format_datetime, render
from packager.dash.source import has_segments, manifest_of
from packager.hls.config import SegmentFormat
from packager.hls.http import NO_CACHE, HlsHttp
from packager.hls.live import HlsService

MANIFEST = "manifest.mpd"
MPD_TYPE = "application/dash+xml"
TIME_PATH = "/dash/time"


class DashHttp:
    """The ``/dash/`` routes, beside an :class:`HlsHttp` over the same
    packager. ``clearkey_path`` names the ClearKey licence endpoint (with
    ``{name}``) when key delivery is served; ``clock`` is the wall clock."""

    def __init__(
        self,
        service: HlsService,
        hls: HlsHttp,
        clearkey_path: str | None = "/drm/clearkey/{name}",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.hls = hls
        self.clearkey_path = clearkey_path
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(TIME_PATH, self.time),
            web.get("/dash/{name}/" + MANIFEST, self.manifest),
            web.get("/dash/{name}/{variant}/{file}", self.hls.media_file),
            web.route("*", "/dash/{tail:.*}", self.hls.other),
        ]

    def _headers(self) -> dict[str, str]:
        return {
            "Cache-Control": NO_CACHE,
            "Access-Control-Allow-Origin": self.service.config.cors_origin,
            "Access-Control-Expose-Headers": "Content-Length, Date",
        }

    async def time(self, request: web.Request) -> web.Response:
        return web.Response(text=format_datetime(self.clock()), content_type="text/plain", headers=self._headers())

    def _links(self, request: web.Request, name: str, token: str | None) -> Links:
        query = "?token=" + urllib.parse.quote(token, safe="") if token else ""
        # Absolute: players fetch these with XHR, which resolves a relative
        # URL against the page rather than the manifest.
        origin = f"{request.scheme}://{request.host}"
        licence = None
        if self.clearkey_path is not None:
            licence = origin + self.clearkey_path.format(name=urllib.parse.quote(name, safe="")) + query
        return Links(query=query, utc_timing_url=origin + TIME_PATH, clearkey_licence_url=licence)

    async def manifest(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        token = await self.hls.authorize(request, name)
        output = await self.hls.stream_output(name)
        if output.config.segment_format is not SegmentFormat.FMP4:
            raise web.HTTPNotFound(
                text="no DASH manifest: DASH needs fMP4 (CMAF) segments; hls.segment_format is mpegts",
                headers=self._headers(),
            )
        waited = 0.0
        deadline = self.service.config.wait_for_playlist_s
        while not has_segments(output) and not output.ended and waited < deadline:
            # A player that arrives before the first segment waits for it,
            # as the HLS multivariant playlist does.
            step = min(0.5, deadline - waited)
            await output.wait_changed(step)
            waited += step
        if not has_segments(output):
            raise self.hls.not_found("stream has no segments yet")
        if waited:
            await self.hls.authorize(request, name)
        # Any other ManifestError is the packager's own inconsistency: it
        # surfaces as a 500 and a logged traceback, never as "not found".
        manifest = manifest_of(output, self.clock(), self._links(request, name, token))
        return web.Response(text=render(manifest), content_type=MPD_TYPE, headers=self._headers())
