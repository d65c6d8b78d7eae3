"""aiortc WHIP and WHEP clients for the tests and the load benchmark.

Every client uses no ICE servers (nothing leaves the machine) and relies on
the engine's host-address override (installed by ``WebRtcHttp``) to offer
loopback candidates.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass, field

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from webrtc.ice import HostAddresses

LOOPBACK = HostAddresses(["127.0.0.1"], include_interfaces=False)
"""The test peers gather loopback candidates only, as the engine is told to."""

VIDEO_CLOCK = 90_000


class CounterVideoTrack(VideoStreamTrack):
    """Frames whose top rows encode the frame number and the wall-clock
    send time in milliseconds (black/white blocks), so a receiver can read
    back glass-to-glass latency."""

    BITS = 48
    BLOCK = 8

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.count = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.time()
        target = self._start + self.count / self.fps
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        img = np.full((self.height, self.width, 3), 96, dtype=np.uint8)
        img[:, :, 1] = (self.count * 4) % 256
        stamp = int(time.time() * 1000) & ((1 << self.BITS) - 1)
        write_stamp(img, stamp, self.BITS, self.BLOCK)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = int(self.count * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.count += 1
        return frame


def write_stamp(img: np.ndarray, value: int, bits: int, block: int) -> None:
    """Draw ``value`` as ``bits`` blocks across the top of ``img`` (two
    rows of blocks when the width needs it)."""
    per_row = img.shape[1] // block
    for i in range(bits):
        bit = (value >> (bits - 1 - i)) & 1
        row, col = divmod(i, per_row)
        img[row * block : (row + 1) * block, col * block : (col + 1) * block] = 255 if bit else 0


def read_stamp(img: np.ndarray, bits: int = CounterVideoTrack.BITS, block: int = CounterVideoTrack.BLOCK) -> int:
    """Read back what :func:`write_stamp` drew (the centre of each block)."""
    per_row = img.shape[1] // block
    value = 0
    for i in range(bits):
        row, col = divmod(i, per_row)
        y, x = row * block + block // 2, col * block + block // 2
        value = (value << 1) | int(img[y, x].mean() > 128)
    return value


def force_codec(pc: RTCPeerConnection, kind: str, mime: str) -> None:
    caps = RTCRtpSender.getCapabilities(kind)
    assert caps is not None
    chosen = [c for c in caps.codecs if c.mimeType.lower() == mime.lower()]
    for t in pc.getTransceivers():
        if t.kind == kind:
            t.setCodecPreferences(chosen)


@dataclass
class WhipClient:
    """A publisher; ``location`` is the session resource after :meth:`start`."""

    url: str
    video: MediaStreamTrack | None = None
    audio: MediaStreamTrack | None = None
    video_codec: str = "video/H264"
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))
    location: str | None = None
    status: int = 0
    body: str = ""

    async def start(self, session: aiohttp.ClientSession) -> int:
        if self.video is not None:
            self.pc.addTransceiver(self.video, direction="sendonly")
            force_codec(self.pc, "video", self.video_codec)
        if self.audio is not None:
            self.pc.addTransceiver(self.audio, direction="sendonly")
        with LOOPBACK.applied():
            await self.pc.setLocalDescription(await self.pc.createOffer())
        async with session.post(
            self.url, data=self.pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        ) as resp:
            self.status = resp.status
            self.body = await resp.text()
            self.location = resp.headers.get("Location")
        if self.status == 201:
            await self.pc.setRemoteDescription(RTCSessionDescription(self.body, "answer"))
        return self.status

    async def stop(self, session: aiohttp.ClientSession, base: str) -> int | None:
        status = None
        if self.location:
            async with session.delete(base + self.location) as resp:
                status = resp.status
        await self.pc.close()
        return status


@dataclass
class WhepClient:
    """A viewer that counts (and optionally decodes) what it receives."""

    url: str
    decode: bool = True
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))
    location: str | None = None
    status: int = 0
    body: str = ""
    video_frames: int = 0
    audio_frames: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    measure_latency: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, session: aiohttp.ClientSession, headers: dict[str, str] | None = None) -> int:
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.on("track", self._on_track)
        with LOOPBACK.applied():
            await self.pc.setLocalDescription(await self.pc.createOffer())
        async with session.post(
            self.url,
            data=self.pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", **(headers or {})},
        ) as resp:
            self.status = resp.status
            self.body = await resp.text()
            self.location = resp.headers.get("Location")
        if self.status == 201:
            await self.pc.setRemoteDescription(RTCSessionDescription(self.body, "answer"))
        return self.status

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.video_frames += 1
                    if self.measure_latency and isinstance(frame, av.VideoFrame):
                        img = frame.to_ndarray(format="rgb24")
                        sent = read_stamp(img)
                        now = int(time.time() * 1000) & ((1 << CounterVideoTrack.BITS) - 1)
                        self.latencies_ms.append(now - sent)
                else:
                    self.audio_frames += 1
        except MediaStreamError:
            return

    async def stop(self, session: aiohttp.ClientSession | None = None, base: str = "") -> int | None:
        status = None
        if session is not None and self.location:
            async with session.delete(base + self.location) as resp:
                status = resp.status
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        return status


__all__ = ["AudioStreamTrack", "CounterVideoTrack", "WhepClient", "WhipClient", "read_stamp", "write_stamp"]
