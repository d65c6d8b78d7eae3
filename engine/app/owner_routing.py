"""One engine process among several on a node (``server.processes`` > 1).

Each process is a complete engine. The kernel spreads RTMP publishers and
HTTP requests over the processes (SO_REUSEPORT), so a viewer's request often
reaches a process that does not have the stream: its playlists, parts and
blocking reloads live in the memory of the process the publisher reached.
This module makes the processes act as one node:

- :class:`ClaimingPublishCheck` records in the
  :class:`~engine.directory.StreamDirectory` which process owns each live
  stream, and refuses a publish of a name another process owns, as a single
  process refuses a second publisher (:class:`StreamBusyError`);
- :class:`OwnerRouting` is the public HTTP app's middleware: a request for
  a stream this process does not have is passed over loopback to the owner's
  private port, body streamed, status and headers kept; ``/metrics`` and
  ``GET /streams`` answer for every process of the node.

The private port listens on 127.0.0.1 only and serves the same routes
without this middleware (so a passed request is never passed again). A
passed request carries the viewer's address and the node's shared secret;
the private side believes the address only with the secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from engine.auth import PublishCheck, PublishGrant, PublishRequest
from engine.directory import StreamDirectory
from engine.errors import StreamBusyError, StreamNameError
from engine.media import check_stream_name

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SECRET_HEADER = "X-Fanz-Worker-Secret"
REMOTE_HEADER = "X-Fanz-Worker-Remote"
WORKER_LABEL = "worker"
NODE_PREFIX = "/_node"
"""Routes of the private port only: what one process asks of another."""

# Paths whose second segment is a playback name.
_STREAM_PATH = re.compile(r"^/(?:hls|streams)/([^/]+)(?:/|$)")
_WHEP_OFFER = re.compile(r"^/whep/([^/]+)$")
# A WebRTC session resource; on a node of several processes its id starts
# with the owning process's index (``3.abc``), so that a DELETE reaching
# another process can be passed on.
_RESOURCE = re.compile(r"^/(whip|whep)/resource/(\d{1,3})\.([^/]+)$")
_OFFER = re.compile(r"^/(?:whip|whep)/[^/]+$")
_RESOURCE_LOCATION = re.compile(r"^/(whip|whep)/resource/([^/]+)$")
# Headers that describe one connection, not the message (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host"}
)
PROXY_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=60.0)
GATHER_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """Where one engine process stands among its node's processes."""

    index: int
    private_ports: tuple[int, ...]
    """Every process's private loopback HTTP port, by index."""
    secret: str
    """Shared by the node's processes; proves a passed request came from one."""
    supervisor_pid: int
    """The supervisor's process id: a process whose parent changes was
    orphaned (its supervisor was killed) and stops."""

    def address_of(self, index: int) -> str:
        return f"{LOOPBACK}:{self.private_ports[index]}"

    @property
    def address(self) -> str:
        return self.address_of(self.index)

    @property
    def count(self) -> int:
        return len(self.private_ports)


class ClaimingPublishCheck:
    """A publish check that also takes the stream's name in the directory.

    The inner check decides first (it maps the key to the playback name);
    then the name is claimed for this process. When another process owns
    it, that process is asked to yield it (``ask_to_yield``): it does when
    the stream only waits in its grace window for its publisher, which has
    just come back here. Otherwise :class:`StreamBusyError` is raised, which
    the ingests answer as they answer a second publisher on one process.
    The claim is given up when the stream ends (:meth:`release`, wired by
    the engine).
    """

    def __init__(
        self,
        inner: PublishCheck,
        directory: StreamDirectory,
        address: str,
        ask_to_yield: Callable[[str, str], Awaitable[bool]],
    ) -> None:
        self.inner = inner
        self.directory = directory
        self.address = address
        self.ask_to_yield = ask_to_yield

    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        grant = await self.inner.authorize_publish(request)
        try:
            check_stream_name(grant.playback_name)
        except StreamNameError:
            return grant  # refused by the registry, as on one process
        owner = await self.directory.claim(grant.playback_name, self.address)
        if owner != self.address and await self.ask_to_yield(grant.playback_name, owner):
            log.info("stream %s: its publisher returned to this process; the one it left ended the stream",
                     grant.playback_name)
            owner = await self.directory.claim(grant.playback_name, self.address)
        if owner != self.address:
            raise StreamBusyError(f"stream {grant.playback_name!r} is published to another process ({owner})")
        return grant

    async def publish_ended(self, grant: PublishGrant) -> None:
        await self.inner.publish_ended(grant)

    async def release(self, name: str) -> None:
        await self.directory.release(name, self.address)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OwnerRouting:
    """Routes requests to the process that owns their stream.

    ``has_stream(name)`` says whether this process serves ``name`` itself
    (a live stream, or an ended one whose HLS it still keeps).
    """

    def __init__(
        self, identity: WorkerIdentity, directory: StreamDirectory, has_stream: Callable[[str], bool]
    ) -> None:
        self.identity = identity
        self.directory = directory
        self.has_stream = has_stream
        self._index_of = {identity.address_of(i): i for i in range(identity.count)}
        self._session: aiohttp.ClientSession | None = None
        self.passed = 0
        """Requests passed to another process (a counter for /metrics)."""
        self.failed = 0
        """Passed requests whose owner did not answer."""

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=PROXY_TIMEOUT, auto_decompress=False, connector=aiohttp.TCPConnector(limit=0)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the public side ---------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        resource = _RESOURCE.match(path)
        if resource is not None:
            kind, index, sid = resource.group(1), int(resource.group(2)), resource.group(3)
            if index >= self.identity.count:
                raise web.HTTPNotFound(text=f"no such {kind.upper()} session")
            return await self.forward(request, self.identity.address_of(index), f"/{kind}/resource/{sid}")
        name = self._stream_name(request)
        if name is not None and not self.has_stream(name):
            owner = await self.directory.owner(name)
            if owner is not None and owner != self.identity.address and owner in self._index_of:
                response = await self.forward(request, owner, request.rel_url.raw_path_qs)
                return self._mark_location(response, self._index_of[owner])
        response = await handler(request)
        if path == "/streams" and request.method == "GET" and isinstance(response, web.Response) and response.text:
            local = json.loads(response.text)["streams"]
            return web.json_response({"streams": await self.node_streams(local)})
        if _OFFER.match(path) and request.method == "POST":
            return self._mark_location(response, self.identity.index)
        return response

    @staticmethod
    def _stream_name(request: web.Request) -> str | None:
        """The playback name a request is for; ``None`` for other requests
        and for names no stream can have (the handler answers those)."""
        match = _STREAM_PATH.match(request.path)
        if match is None and request.method == "POST":
            match = _WHEP_OFFER.match(request.path)
        if match is None:
            return None
        try:
            return check_stream_name(match.group(1))
        except StreamNameError:
            return None

    @staticmethod
    def _mark_location(response: web.StreamResponse, index: int) -> web.StreamResponse:
        """Prefix a created WebRTC session's id with its owner's index."""
        location = response.headers.get("Location")
        match = _RESOURCE_LOCATION.match(location) if location else None
        if match is not None and not response.prepared:
            response.headers["Location"] = f"/{match.group(1)}/resource/{index}.{match.group(2)}"
        return response

    async def forward(self, request: web.Request, address: str, path_qs: str) -> web.StreamResponse:
        """Pass ``request`` to ``address`` and stream the answer back."""
        ours = {SECRET_HEADER.lower(), REMOTE_HEADER.lower()}
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | ours]
        headers += [(REMOTE_HEADER, request.remote or ""), (SECRET_HEADER, self.identity.secret)]
        body = request.content if request.body_exists else None
        self.passed += 1
        response: web.StreamResponse | None = None
        try:
            async with self.session().request(
                request.method, f"http://{address}{path_qs}", headers=headers, data=body, allow_redirects=False
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        response.headers.add(key, value)
                if request.method == "HEAD":
                    return response
                if not _RESOURCE_LOCATION.match(response.headers.get("Location", "")):
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                    return response
                # A created session: its Location is rewritten before the
                # answer starts, so the (small) body is read first.
                return web.Response(
                    status=upstream.status, reason=upstream.reason, body=await upstream.read(),
                    headers=response.headers,
                )
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            self.failed += 1
            log.warning("could not pass %s %s to the process at %s: %s", request.method, request.path, address, exc)
            if response is not None and response.prepared:
                # Cut off midway (the owner died): the viewer's connection is
                # closed, so it sees a short answer rather than a whole one.
                if request.protocol is not None:
                    request.protocol.force_close()
                return response
            raise web.HTTPBadGateway(text="the process that owns this stream did not answer") from exc

    # -- the control API's live actions -------------------------------------------------
    async def _owner_elsewhere(self, name: str) -> str | None:
        try:
            check_stream_name(name)
        except StreamNameError:
            return None
        owner = await self.directory.owner(name)
        if owner is None or owner == self.identity.address or owner not in self._index_of:
            return None
        return owner

    async def _post(self, owner: str, path: str, body: dict[str, object]) -> dict[str, Any] | None:
        """``None`` when the owner did not answer: it died, and its streams
        with it (the supervisor releases them)."""
        try:
            async with self.session().post(
                f"http://{owner}{path}", json=body, headers={SECRET_HEADER: self.identity.secret},
                timeout=GATHER_TIMEOUT,
            ) as resp:
                resp.raise_for_status()
                answer: dict[str, Any] = await resp.json()
                return answer
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.failed += 1
            log.warning("the process at %s did not take %s: %s", owner, path, exc)
            return None

    async def kick(self, name: str, reason: str) -> bool:
        """:class:`control_api.plane.LiveElsewhere`: disconnect ``name``'s
        publisher in the process that owns it."""
        owner = await self._owner_elsewhere(name)
        if owner is None:
            return False
        answer = await self._post(owner, f"{NODE_PREFIX}/streams/{name}/kick", {"reason": reason})
        return answer is not None and bool(answer.get("kicked"))

    async def ask_to_yield(self, name: str, owner: str) -> bool:
        """Ask ``owner`` to give ``name`` up if its publisher is gone (the
        stream waits in its grace window); whether it did."""
        if owner not in self._index_of or owner == self.identity.address:
            return False
        answer = await self._post(owner, f"{NODE_PREFIX}/streams/{name}/yield", {})
        return answer is not None and bool(answer.get("yielded"))

    async def configure(self, name: str, key: str, value: object) -> None:
        """:class:`control_api.plane.LiveElsewhere`: a live setting (effects)
        for a stream another process owns."""
        owner = await self._owner_elsewhere(name)
        if owner is not None:
            await self._post(owner, f"{NODE_PREFIX}/streams/{name}/settings", {"key": key, "value": value})

    # -- answers for the whole node ---------------------------------------------------
    async def gather(self, path: str) -> list[tuple[int, bytes | None]]:
        """``path`` from every other process's private port: (index, body
        or ``None`` when it did not answer)."""

        async def one(index: int) -> tuple[int, bytes | None]:
            try:
                async with self.session().get(
                    f"http://{self.identity.address_of(index)}{path}",
                    headers={SECRET_HEADER: self.identity.secret},
                    timeout=GATHER_TIMEOUT,
                ) as resp:
                    if resp.status != 200:
                        return index, None
                    return index, await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                return index, None

        others = [i for i in range(self.identity.count) if i != self.identity.index]
        return list(await asyncio.gather(*(one(i) for i in others)))

    async def node_streams(self, local: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``GET /streams`` for the node: every process's streams."""
        streams = [dict(s, worker=self.identity.index) for s in local]
        for index, body in await self.gather("/streams"):
            if body is not None:
                streams.extend(dict(s, worker=index) for s in json.loads(body)["streams"])
        return streams


def merge_worker_metrics(
    parts: Sequence[tuple[int, Sequence[Metric] | bytes | None]]
) -> list[Metric]:
    """One exposition for a node: every process's families, each sample
    labelled ``worker``, and ``fanz_worker_up`` saying which processes
    answered. ``parts`` holds each process's own families or text (``None``
    for one that did not answer). Runs in a worker thread."""
    merged: dict[str, Metric] = {}
    up = GaugeMetricFamily("fanz_worker_up", "Whether each engine process of the node answered.", labels=["worker"])
    for index, part in sorted(parts, key=lambda p: p[0]):
        up.add_metric([str(index)], 0 if part is None else 1)
        if part is None:
            continue
        families = text_string_to_metric_families(part.decode()) if isinstance(part, bytes) else part
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                into.add_sample(sample.name, {**sample.labels, WORKER_LABEL: str(index)}, sample.value)
    return [up, *merged.values()]


def private_side(secret: str) -> Middleware:
    """The private port's middleware: only the node's processes may use it
    (they send its ``secret``), and a passed request's viewer address is
    the one they name."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get(SECRET_HEADER) != secret:
            raise web.HTTPForbidden(text="this port serves the node's own processes only")
        remote = request.headers.get(REMOTE_HEADER)
        if remote:
            request = request.clone(remote=remote)
        return await handler(request)

    return middleware
