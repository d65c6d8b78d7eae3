"""HTTP delivery of VOD assets: ``/vod/ASSET/...``.

Routes: ``index.m3u8`` (multivariant playlist), ``VARIANT/PLAYLIST.m3u8``
and ``VARIANT/FILE`` (media playlists, init segments, segments),
``manifest.mpd`` (when the asset has one), ``download.mp4`` (one MP4,
remuxed on first request and kept) and ``poster.jpg``.

Each request first finds the asset in storage (a deleted asset is a 404 at
once, whatever token the viewer holds), then passes the playback check for
the content name ``asset:ID`` (:func:`engine.auth.asset_content`) with the
request's ``token``, which is carried into every URI of the playlists and
manifest it serves. Files are read from storage through the engine, with
byte ranges, or, with ``storage.serve_mode = presigned`` and a backend that
presigns, answered by a redirect to a short-lived URL of the object store.
Media of free assets may be kept by shared caches; anything else is private.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from aiohttp import web

from cluster.storage import ObjectNotFoundError
from engine.auth import PlaybackCheck, PlaybackGrant, PlaybackRequest, asset_content
from engine.errors import PlaybackDenied
from packager.assets.ids import is_asset_id
from packager.assets.library import DOWNLOAD, INDEX, POSTER, AssetLibrary
from packager.assets.remux import make_download, make_poster
from packager.errors import AssetEncryptedError, AssetIdError, AssetNotFoundError
from packager.hls.http import cors_preflight

Maker = Callable[[AssetLibrary, str, Path], Path]

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
CONTENT_TYPES = {
    ".m3u8": PLAYLIST_TYPE, ".mpd": "application/dash+xml", ".mp4": "video/mp4", ".m4s": "video/iso.segment",
    ".ts": "video/mp2t", ".jpg": "image/jpeg",
}
NO_CACHE = "no-cache, no-store, max-age=0"
MANIFEST = "manifest.mpd"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_URI_ATTR = re.compile(r'URI="([^"]*)"')
_MPD_ATTR = re.compile(r'\b(media|initialization)="([^"]*)"')


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The half-open byte range ``[start, end)`` that a single-range
    ``Range`` header asks of a ``size``-byte file; ``None`` for no (or an
    unsupported) range, ``ValueError`` when it cannot be satisfied."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise ValueError("range outside the file")
    return start, end


class VodHttp:
    """The ``/vod/`` routes over an :class:`AssetLibrary`."""

    def __init__(self, library: AssetLibrary, playback_check: PlaybackCheck, *, presigned: bool = False,
                 cors_origin: str = "*", cache_s: int = 86400) -> None:
        self.library = library
        self.check = playback_check
        self.presigned = presigned
        self.cors_origin = cors_origin
        self.cache_s = cache_s

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/vod/{asset}/" + DOWNLOAD, self.download),
            web.get("/vod/{asset}/" + POSTER, self.poster),
            web.get("/vod/{asset}/{file}", self.top_file),
            web.get("/vod/{asset}/{variant}/{file}", self.variant_file),
            web.route("*", "/vod/{tail:.*}", self.other),
        ]

    # -- helpers ---------------------------------------------------------
    def _headers(self, cache: str) -> dict[str, str]:
        return {
            "Cache-Control": cache,
            "Access-Control-Allow-Origin": self.cors_origin,
            "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, Date",
        }

    def _not_found(self, why: str = "no such asset") -> web.HTTPNotFound:
        return web.HTTPNotFound(text=why, headers=self._headers(NO_CACHE))

    async def _open(self, request: web.Request) -> tuple[str, str | None, PlaybackGrant | None]:
        """The asset's storage prefix, the viewer's token and the grant; 404
        for an unknown or deleted asset, 403 when the check refuses."""
        asset = request.match_info["asset"]
        if not is_asset_id(asset):
            raise self._not_found()
        try:
            prefix = await asyncio.to_thread(self.library.locate, asset)
        except AssetNotFoundError as exc:
            raise self._not_found() from exc
        token = request.query.get("token")
        try:
            grant = await self.check.authorize_playback(PlaybackRequest(asset_content(asset), token,
                                                                        request.remote or ""))
        except PlaybackDenied as exc:
            raise web.HTTPForbidden(text=f"playback refused: {exc}", headers=self._headers(NO_CACHE)) from exc
        return prefix, token, grant

    def _media_cache(self, grant: PlaybackGrant | None) -> str:
        scope = "public" if grant is not None and grant.public else "private"
        return f"{scope}, max-age={self.cache_s}, immutable"

    @staticmethod
    def _with_token(token: str | None) -> Callable[[str], str]:
        if not token:
            return lambda uri: uri
        suffix = "token=" + urllib.parse.quote(token, safe="")
        return lambda uri: f"{uri}{'&' if '?' in uri else '?'}{suffix}"

    def _key(self, prefix: str, variant: str | None, name: str) -> str:
        try:
            return self.library.file_key(prefix, variant, name)
        except AssetIdError as exc:
            raise self._not_found("no such file") from exc

    # -- handlers --------------------------------------------------------
    async def other(self, request: web.Request) -> web.Response:
        """CORS preflight for any VOD path; 404 for every path not served."""
        if request.method != "OPTIONS":
            raise self._not_found("no such file")
        return cors_preflight(request, self._headers(NO_CACHE))

    async def top_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        if name not in (INDEX, MANIFEST):
            raise self._not_found("no such file")
        prefix, token, _ = await self._open(request)
        return await self._text(prefix + name, token, mpd=name == MANIFEST)

    async def variant_file(self, request: web.Request) -> web.StreamResponse:
        prefix, token, grant = await self._open(request)
        variant, name = request.match_info["variant"], request.match_info["file"]
        key = self._key(prefix, variant, name)
        if name.endswith(".m3u8"):
            return await self._text(key, token)
        return await self._object(request, key, self._media_cache(grant))

    async def download(self, request: web.Request) -> web.StreamResponse:
        return await self._derived(request, DOWNLOAD, make_download)

    async def poster(self, request: web.Request) -> web.StreamResponse:
        return await self._derived(request, POSTER, make_poster)

    async def _derived(self, request: web.Request, name: str, make: Maker) -> web.StreamResponse:
        _, _, grant = await self._open(request)
        asset = request.match_info["asset"]
        try:
            key = await asyncio.to_thread(self.library.derived, asset, name, make)
        except AssetNotFoundError as exc:
            raise self._not_found() from exc
        except AssetEncryptedError as exc:
            raise self._not_found(f"no {name}: {exc}") from exc
        return await self._object(request, key, self._media_cache(grant))

    async def _text(self, key: str, token: str | None, mpd: bool = False) -> web.Response:
        try:
            text = await asyncio.to_thread(self.library.text, key)
        except ObjectNotFoundError as exc:
            raise self._not_found("no such file") from exc
        rewrite = self._with_token(token)
        if token:
            text = rewrite_mpd(text, rewrite) if mpd else rewrite_playlist(text, rewrite)
        content_type = CONTENT_TYPES[".mpd" if mpd else ".m3u8"]
        return web.Response(text=text, content_type=content_type, headers=self._headers(NO_CACHE))

    async def _object(self, request: web.Request, key: str, cache: str) -> web.StreamResponse:
        headers = self._headers(cache)
        if self.presigned:
            url = await asyncio.to_thread(self.library.storage.url, key)
            if url is not None:
                try:
                    await asyncio.to_thread(self.library.stat, key)
                except ObjectNotFoundError as exc:
                    raise self._not_found("no such file") from exc
                headers["Cache-Control"] = NO_CACHE
                raise web.HTTPFound(url, headers=headers)
        try:
            info = await asyncio.to_thread(self.library.stat, key)
        except ObjectNotFoundError as exc:
            raise self._not_found("no such file") from exc
        headers["Content-Type"] = CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")
        headers["Accept-Ranges"] = "bytes"
        start, end, status = 0, info.size, 200
        if "Range" in request.headers:
            try:
                found = parse_range(request.headers["Range"], info.size)
            except ValueError as exc:
                headers["Content-Range"] = f"bytes */{info.size}"
                raise web.HTTPRequestRangeNotSatisfiable(headers=headers) from exc
            if found is not None:
                start, end = found
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        headers["Content-Length"] = str(end - start)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD" or end == start:
            await response.write_eof()
            return response
        chunks: Iterator[bytes] = self.library.storage.iter_range(key, start, end - start)
        try:
            while True:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    break
                await response.write(chunk)
        finally:
            # A viewer that goes away mid-file: the backend's file or
            # connection is released now, not when the generator is collected.
            close = getattr(chunks, "close", None)
            if close is not None:
                await asyncio.to_thread(close)
        await response.write_eof()
        return response


def rewrite_playlist(text: str, rewrite: Callable[[str], str]) -> str:
    """Every URI of an HLS playlist (URI lines and ``URI="..."``
    attributes) passed through ``rewrite``."""
    lines = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            line = rewrite(line)
        elif line.startswith("#"):
            line = _URI_ATTR.sub(lambda m: f'URI="{rewrite(m.group(1))}"', line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def rewrite_mpd(text: str, rewrite: Callable[[str], str]) -> str:
    """The SegmentTemplate ``media`` and ``initialization`` URLs of a DASH
    manifest passed through ``rewrite`` (``&`` written as XML wants it)."""
    return _MPD_ATTR.sub(lambda m: f'{m.group(1)}="{rewrite(m.group(2)).replace("&", "&amp;")}"', text)
