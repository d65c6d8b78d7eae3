"""The HTTP face of WebRTC: WHIP ingest, WHEP playback and the two pages.

* ``POST /whip/{stream key}`` with an SDP offer (``application/sdp``):
  the publish check decides (403 refused, 409 the stream is already live,
  503 a limit is reached), then 201 with the SDP answer and a ``Location``
  naming the session resource; ``DELETE`` on it ends the publish.
* ``POST /whep/{playback name}`` (token as ``?token=`` or
  ``Authorization: Bearer``): the playback check decides (401 without a
  token, 403 refused, 404 no such live stream), then 201 with the answer and
  a ``Location``; ``DELETE`` ends the viewer.
* ``GET /publish`` and ``GET /watch/{name}``: plain pages, no build step,
  nothing loaded from outside the engine (hls.js is served from a vendored
  copy under ``/webrtc/static/``).

Trickle ICE and ICE restarts are not offered: answers carry every
candidate, and ``PATCH`` is answered 405 (RFC 9725 §4.3.1). Sessions that
go quiet (no media from a publisher; no RTCP from a viewer, or no
connection) for
``session_idle_timeout_s`` are reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.auth import PlaybackCheck, PlaybackRequest, PublishCheck, PublishRequest, grant_settings
from engine.errors import GeoBlocked, PlaybackDenied, PublishDenied, StreamBusyError, StreamNameError
from engine.registry import StreamRegistry, StreamState
from webrtc import ice, tap, whep
from webrtc.config import WebRtcConfig
from webrtc.errors import OfferError, SessionLimitError
from webrtc.hub import StreamHub
from webrtc.negotiate import offered_kinds
from webrtc.sessions import SessionKind, SessionTable
from webrtc.whep import WhepSession
from webrtc.whip import WhipSession

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}$")
STREAM_KEY = re.compile(r"^[A-Za-z0-9_\-.~+=]{1,256}$")
STATIC_FILES = {
    "whip.js": "text/javascript",
    "whep.js": "text/javascript",
    "hls.min.js": "text/javascript",
}
SDP_TYPE = "application/sdp"
REAP_INTERVAL_S = 1.0


@dataclass(slots=True)
class WebRtcStats:
    """Counters for the metrics endpoint."""

    whip_sessions: int = 0
    whep_sessions: int = 0
    refused: int = 0
    reaped: int = 0
    reencoded_streams: int = 0
    """Hubs that had to re-encode video for WebRTC (B-frames, not H.264)."""
    viewer_drops: int = 0
    """Packets dropped for slow viewers, over every finished viewer."""


class WebRtcHttp:
    """The WHIP/WHEP endpoints and pages of one engine.

    Constructing it makes the ICE library offer the configured host
    addresses (see :mod:`webrtc.ice`); :meth:`close` ends every session and
    undoes that.
    """

    def __init__(
        self,
        registry: StreamRegistry,
        publish_check: PublishCheck,
        playback_check: PlaybackCheck,
        config: WebRtcConfig,
    ) -> None:
        self.registry = registry
        self.publish_check = publish_check
        self.playback_check = playback_check
        self.config = config
        self.table = SessionTable(
            config.max_publishers, config.max_viewers, config.max_viewers_per_stream, config.session_idle_timeout_s
        )
        self.publishers: dict[str, WhipSession] = {}
        self.viewers: dict[str, WhepSession] = {}
        self.hubs: dict[str, StreamHub] = {}
        self.closed = False
        self.stats = WebRtcStats()
        # aiortc and aioice internals this package relies on: checked once,
        # so that an unsupported version stops the start, not a session.
        ice.check_library()
        tap.check_library()
        whep.check_library()
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("OPTIONS", "/whip/{tail:.*}", self.preflight),
            web.route("OPTIONS", "/whep/{tail:.*}", self.preflight),
            web.post("/whip/{key}", self.whip_offer),
            web.delete("/whip/resource/{id}", self.whip_delete),
            web.patch("/whip/resource/{id}", self.not_allowed),
            web.post("/whep/{name}", self.whep_offer),
            web.delete("/whep/resource/{id}", self.whep_delete),
            web.patch("/whep/resource/{id}", self.not_allowed),
            web.get("/publish", self.publish_page),
            web.get("/watch/{name}", self.watch_page),
            web.get("/webrtc/static/{file}", self.static_file),
        ]

    # -- helpers -------------------------------------------------------------
    def _cors(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {
            "Access-Control-Allow-Origin": self.config.cors_origin,
            "Access-Control-Expose-Headers": "Location, Content-Type",
            "Cache-Control": "no-store",
        }
        if extra:
            headers.update(extra)
        return headers

    def _error(self, status: int, text: str, extra: dict[str, str] | None = None) -> web.Response:
        if status in (401, 403, 409, 451, 503):
            self.stats.refused += 1
        return web.Response(status=status, text=text + "\n", headers=self._cors(extra))

    async def _read_offer(self, request: web.Request) -> str | web.Response:
        if self.closed:
            return self._error(503, "shutting down")
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != SDP_TYPE:
            return self._error(415, "the offer must be sent as application/sdp")
        if request.content_length is not None and request.content_length > self.config.max_sdp_bytes:
            return self._error(413, "SDP offer too large")
        body = await request.content.read(self.config.max_sdp_bytes + 1)
        if len(body) > self.config.max_sdp_bytes:
            return self._error(413, "SDP offer too large")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(400, "the SDP offer is not UTF-8 text")
        if not text.startswith("v=0"):
            return self._error(400, "the body is not an SDP offer")
        try:
            offered_kinds(text)
        except OfferError as exc:
            return self._error(400, str(exc))
        self._ensure_reaper()
        return text

    def _created(self, sdp: str, location: str) -> web.Response:
        return web.Response(
            status=201,
            text=sdp,
            content_type=SDP_TYPE,
            headers=self._cors({"Location": location, "ETag": '"' + location.rsplit("/", 1)[-1] + '"'}),
        )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- WHIP ----------------------------------------------------------------
    async def whip_offer(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        # The name first: a request for a name that cannot exist is refused
        # whatever its body holds.
        if not STREAM_KEY.fullmatch(key):
            return self._error(403, "publish refused: malformed stream key")
        offer = await self._read_offer(request)
        if isinstance(offer, web.Response):
            return offer
        remote = request.remote or ""
        try:
            grant = await self.publish_check.authorize_publish(PublishRequest("whip", key, "whip", remote))
        except PublishDenied as exc:
            return self._error(403, f"publish refused: {exc}")
        except StreamBusyError as exc:
            # The name is live in another process of this node.
            log.info("whip from %s: publish refused: %s", remote, exc)
            return self._error(409, "stream is already being published")
        try:
            self.table.check_room(SessionKind.WHIP, grant.playback_name)
            publisher = self.registry.claim(grant.playback_name, grant_settings(grant))
        except SessionLimitError as exc:
            return self._error(503, str(exc), {"Retry-After": "10"})
        except StreamNameError as exc:
            log.warning("whip from %s: publish refused: %s", remote, exc)
            return self._error(400, f"publish refused: {exc}")
        except StreamBusyError:
            return self._error(409, f"stream {grant.playback_name!r} is already being published")
        record = self.table.open(SessionKind.WHIP, grant.playback_name, asyncio.get_running_loop().time())
        publisher.stream.publisher_info = {"protocol": "whip", "remote": remote, "app": "whip"}
        loop = asyncio.get_running_loop()
        session = WhipSession(
            record.id,
            publisher,
            self.config,
            on_activity=lambda: self.table.touch(record.id, loop.time()),
            on_failed=lambda reason: self._spawn(self._end_publisher(record.id, reason), f"whip-end-{record.id}"),
        )
        self.publishers[record.id] = session
        try:
            answer = await session.answer(offer)
        except OfferError as exc:
            await self._end_publisher(record.id, "unusable offer")
            return self._error(400, str(exc))
        except Exception:
            log.exception("whip %s: answering the offer failed", record.id)
            await self._end_publisher(record.id, "internal error")
            return self._error(500, "internal error while answering the offer")
        publisher.stream.on_ended("publish-check", functools.partial(self.publish_check.publish_ended, grant))
        self.stats.whip_sessions += 1
        log.info("whip %s: publishing %s from %s", record.id, grant.playback_name, remote)
        return self._created(answer, f"/whip/resource/{record.id}")

    async def whip_delete(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if sid not in self.publishers:
            return self._error(404, "no such WHIP session")
        await self._end_publisher(sid, "publisher ended the session")
        return web.Response(status=200, headers=self._cors())

    async def _end_publisher(self, sid: str, reason: str) -> None:
        self.table.close(sid)
        session = self.publishers.pop(sid, None)
        if session is not None:
            log.info("whip %s: ended (%s)", sid, reason)
            await session.close(reason)

    # -- WHEP ----------------------------------------------------------------
    async def whep_offer(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not STREAM_NAME.fullmatch(name):
            return self._error(404, "no such stream")
        offer = await self._read_offer(request)
        if isinstance(offer, web.Response):
            return offer
        token = request.query.get("token")
        auth = request.headers.get("Authorization", "")
        if token is None and auth.lower().startswith("bearer "):
            token = auth[7:].strip() or None
        try:
            await self.playback_check.authorize_playback(PlaybackRequest(name, token, request.remote or ""))
        except GeoBlocked as exc:
            return self._error(451, f"playback refused: {exc}")
        except PlaybackDenied as exc:
            if token is None:
                return self._error(401, f"playback refused: {exc} (send a token)", {"WWW-Authenticate": "Bearer"})
            return self._error(403, f"playback refused: {exc}")
        stream = self.registry.get(name)
        if stream is None or stream.state is StreamState.ENDED:
            return self._error(404, "no such live stream")
        try:
            self.table.check_room(SessionKind.WHEP, name)
        except SessionLimitError as exc:
            return self._error(503, str(exc), {"Retry-After": "10"})
        hub = self.hubs.get(name)
        if hub is None or hub.finished or hub.stream is not stream:
            hub = StreamHub(
                stream, self._hub_idle, gop_s=self.config.transcode_gop_s, opus_bitrate=self.config.opus_bitrate
            )
            self.hubs[name] = hub
        record = self.table.open(SessionKind.WHEP, name, asyncio.get_running_loop().time())
        session = WhepSession(
            record.id,
            hub,
            self.config,
            on_failed=lambda reason: self._spawn(self._end_viewer(record.id, reason), f"whep-end-{record.id}"),
        )
        self.viewers[record.id] = session
        try:
            answer = await session.answer(offer)
        except OfferError as exc:
            await self._end_viewer(record.id, "unusable offer")
            return self._error(400, str(exc))
        except Exception:
            log.exception("whep %s: answering the offer failed", record.id)
            await self._end_viewer(record.id, "internal error")
            return self._error(500, "internal error while answering the offer")
        self.stats.whep_sessions += 1
        return self._created(answer, f"/whep/resource/{record.id}")

    def _hub_idle(self, hub: StreamHub) -> None:
        if hub.transcoded_frames:
            self.stats.reencoded_streams += 1
        if self.hubs.get(hub.stream.name) is hub:
            del self.hubs[hub.stream.name]
        for sid in list(hub.feeds):
            session = self.viewers.get(sid)
            if session is not None:
                session.report_failure("stream ended")

    async def whep_delete(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if sid not in self.viewers:
            return self._error(404, "no such WHEP session")
        await self._end_viewer(sid, "viewer ended the session")
        return web.Response(status=200, headers=self._cors())

    async def _end_viewer(self, sid: str, reason: str) -> None:
        self.table.close(sid)
        session = self.viewers.pop(sid, None)
        if session is not None:
            dropped = sum(session.feed.dropped.values())
            self.stats.viewer_drops += dropped
            if dropped:
                log.info("whep %s: ended (%s); %d packets were dropped for being behind", sid, reason, dropped)
            else:
                log.debug("whep %s: ended (%s)", sid, reason)
            await session.close()

    # -- shared ----------------------------------------------------------------
    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers=self._cors(
                {
                    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
                    "Access-Control-Allow-Headers": request.headers.get(
                        "Access-Control-Request-Headers", "Content-Type, Authorization"
                    ),
                    "Access-Control-Max-Age": "86400",
                    "Accept-Post": SDP_TYPE,
                }
            ),
        )

    async def not_allowed(self, request: web.Request) -> web.Response:
        return self._error(405, "trickle ICE and ICE restarts are not supported", {"Allow": "DELETE"})

    async def publish_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "publish.html", headers={"Cache-Control": "no-cache"})

    async def watch_page(self, request: web.Request) -> web.StreamResponse:
        if not STREAM_NAME.fullmatch(request.match_info["name"]):
            raise web.HTTPNotFound(text="no such stream")
        return web.FileResponse(STATIC / "watch.html", headers={"Cache-Control": "no-cache"})

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        content_type = STATIC_FILES.get(name)
        if content_type is None:
            raise web.HTTPNotFound(text="no such file")
        return web.FileResponse(STATIC / name, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})

    # -- reaping and shutdown ----------------------------------------------------
    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="webrtc-reaper")

    async def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            now = loop.time()
            for sid, viewer in self.viewers.items():
                if viewer.connected:
                    self.table.touch(sid, viewer.last_heard)
            for record in self.table.expired(now):
                log.info("%s %s: quiet for %.0fs, closing", record.kind.value, record.id, now - record.last_active)
                self.stats.reaped += 1
                if record.kind is SessionKind.WHIP:
                    await self._end_publisher(record.id, "no media")
                else:
                    await self._end_viewer(record.id, "not connected")

    async def close(self) -> None:
        """End every session and hub; undo the ICE host-address override."""
        if self.closed:
            return
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for sid in list(self.viewers):
            await self._end_viewer(sid, "server shutting down")
        for sid in list(self.publishers):
            await self._end_publisher(sid, "server shutting down")
        for hub in list(self.hubs.values()):
            await hub.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
