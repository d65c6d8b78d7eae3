"""A small CPIX key service for the tests, served on loopback by aiohttp:
it answers each request with a key per (content ID, key period), the
ClearKey-less DRM system data a commercial service would give (a Widevine
``pssh``, a FairPlay ``skd://`` URI), or misbehaves as its path asks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from drm import cpix
from drm.model import SystemId


def pssh_box(system_id: uuid.UUID, data: bytes, version: int = 0) -> bytes:
    body = struct.pack(">I", len(data)) + data
    return struct.pack(">I4sB3x16s", 32 + len(data), b"pssh", version, system_id.bytes) + body


def service_key(content_id: str, index: int) -> bytes:
    return hashlib.sha256(f"service key {content_id} {index}".encode()).digest()[:16]


@dataclass
class CpixService:
    base: str = ""
    requests: list[cpix.CpixDocument] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    slow_s: float = 1.0

    def answer(self, doc: cpix.CpixDocument, *, hls_line: bool = False) -> bytes:
        (_, index), = doc.periods
        assert index is not None
        proposed = doc.keys[0].kid
        systems = []
        for system in doc.systems:
            if system.system_id == SystemId.WIDEVINE.value:
                pssh = pssh_box(system.system_id, b"wv:" + proposed)
                systems.append(cpix.CpixSystem(proposed, system.system_id, pssh=pssh))
            elif system.system_id == SystemId.FAIRPLAY.value:
                uri = f"skd://keys.example/{proposed.hex()}"
                systems.append(cpix.CpixSystem(proposed, system.system_id, hls_key_uri=uri))
            else:
                systems.append(cpix.CpixSystem(proposed, system.system_id))
        key = cpix.CpixKey(proposed, service_key(doc.content_id or "", index), iv=bytes(range(16)), scheme="cbcs")
        text = cpix.serialize(cpix.CpixDocument(doc.content_id, (key,), tuple(systems), doc.periods, doc.rules))
        if hls_line:
            # FairPlay signalled as a whole EXT-X-KEY line instead.
            uri = base64.b64encode(f"skd://keys.example/{proposed.hex()}".encode()).decode()
            line = base64.b64encode(
                f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://line.example/{proposed.hex()}",'
                'KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"'.encode()
            ).decode()
            text = text.replace(f"<cpix:URIExtXKey>{uri}</cpix:URIExtXKey>".encode(),
                                f'<cpix:HLSSignalingData playlist="media">{line}</cpix:HLSSignalingData>'.encode())
        return text

    async def handle(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        self.hits[mode] = self.hits.get(mode, 0) + 1
        doc = cpix.parse(await request.read())
        self.requests.append(doc)
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        if mode == "trickle":
            response = web.StreamResponse(headers={"Content-Type": "application/xml"})
            await response.prepare(request)
            for byte in self.answer(doc)[:200]:
                await response.write(bytes([byte]))
                await asyncio.sleep(0.05)
            return response
        if mode == "error":
            return web.Response(status=503, text="busy")
        if mode == "forbidden":
            return web.Response(status=403, text="bad API key")
        if mode == "redirect":
            raise web.HTTPFound("/cpix/good")
        if mode == "malformed":
            return web.Response(body=b"<cpix:CPIX xmlns:cpix='urn:dashif:org:cpix'><cpix:ContentKeyList>",
                                content_type="application/xml")
        if mode == "entities":
            bomb = (b'<?xml version="1.0"?><!DOCTYPE CPIX [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                    b'<CPIX xmlns="urn:dashif:org:cpix" contentId="&b;"><ContentKeyList/></CPIX>')
            return web.Response(body=bomb, content_type="application/xml")
        if mode == "other-content":
            doc = cpix.CpixDocument("someone-else", doc.keys, doc.systems, doc.periods, doc.rules)
        if mode == "no-value":
            return web.Response(body=cpix.serialize(doc), content_type="application/xml")
        if mode == "huge":
            return web.Response(body=b" " * (cpix.MAX_DOCUMENT_BYTES + 10), content_type="application/xml")
        if mode == "auth" and request.headers.get("X-Api-Key") != "sesame":
            return web.Response(status=401, text="who are you")
        return web.Response(body=self.answer(doc, hls_line=(mode == "hls-line")), content_type="application/xml")


@asynccontextmanager
async def running_service() -> AsyncIterator[CpixService]:
    service = CpixService()
    app = web.Application()
    app.router.add_post("/cpix/{mode}", service.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    service.base = f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        await runner.cleanup()
