"""``GET /streams`` and ``GET /streams/{name}``: what each live stream is
doing, as JSON, for operators and the platform's dashboards.

Read-only and secret-free: playback names, tracks, consumers, the ladder and
which encoder each rendition uses, and the counters that /metrics exports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from engine.media import Track
from engine.registry import LiveStream, StreamRegistry


def track_view(track: Track) -> dict[str, Any]:
    view: dict[str, Any] = {"index": track.index, "kind": track.kind.value, "codec": track.codec.value}
    for name in ("width", "height", "sample_rate", "channels", "bitrate"):
        value = getattr(track, name)
        if value:
            view[name] = value
    if track.frame_rate:
        view["frame_rate"] = float(track.frame_rate)
    return view


def stream_view(stream: LiveStream) -> dict[str, Any]:
    return {
        "name": stream.name,
        "state": stream.state.value,
        "publishes": stream.publish_count,
        "tracks": [track_view(t) for t in stream.tracks],
        "packets_in": stream.stats.packets_in,
        "bytes_in": stream.stats.bytes_in,
        "consumers": [
            {"consumer": s.consumer, "buffered": s.buffered, "dropped": s.dropped} for s in stream.subscriptions
        ],
    }


Extra = Callable[[str], Mapping[str, Any]]


class StatusHttp:
    """The routes; ``extras`` add sections per stream (the transcoder's
    renditions and encoders, the HLS output)."""

    def __init__(self, registry: StreamRegistry, extras: Mapping[str, Extra]) -> None:
        self.registry = registry
        self.extras = extras

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/streams", self.list_streams), web.get("/streams/{name:.+}", self.one_stream)]

    def view(self, stream: LiveStream) -> dict[str, Any]:
        view = stream_view(stream)
        for key, extra in self.extras.items():
            section = extra(stream.name)
            if section:
                view[key] = dict(section)
        return view

    async def list_streams(self, request: web.Request) -> web.Response:
        return web.json_response({"streams": [self.view(s) for s in self.registry.streams()]})

    async def one_stream(self, request: web.Request) -> web.Response:
        stream = self.registry.get(request.match_info["name"])
        if stream is None:
            raise web.HTTPNotFound(text="no such stream")
        return web.json_response(self.view(stream))
