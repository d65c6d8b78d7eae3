"""One WHEP viewer: a peer connection whose tracks read the viewer's feed
from the stream's hub.

The tracks hand aiortc encoded packets (``av.Packet``), which it only
packetises: Annex B H.264 and Opus, with no encoder per viewer. The viewer
starts on the hub's cached group of pictures (aiortc does not act on a
viewer's picture loss indication in this mode, so the keyframe must come
from the cache). An ICE or DTLS failure ends only this viewer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from fractions import Fraction

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import AnyRtcpPacket

from webrtc.config import WebRtcConfig
from webrtc.errors import WebRtcUsageError
from webrtc.feed import Lane, ViewerFeed
from webrtc.hub import StreamHub
from webrtc.ice import HostAddresses, rtc_configuration
from webrtc.negotiate import AUDIO_CODECS, WHEP_VIDEO_CODECS, offered_kinds, prefer_codecs
from webrtc.sdp import answer_offer

log = logging.getLogger(__name__)

TIME_BASES = {Lane.VIDEO: Fraction(1, 90_000), Lane.AUDIO: Fraction(1, 48_000)}


def check_library() -> None:
    """Raise :class:`WebRtcUsageError` unless aiortc's sender still handles
    each RTCP packet in ``_handle_rtcp_packet(packet)`` (the viewer's
    liveness comes from there: aiortc has no public RTCP event)."""
    handler = getattr(RTCRtpSender, "_handle_rtcp_packet", None)
    if not inspect.iscoroutinefunction(handler) or list(inspect.signature(handler).parameters) != ["self", "packet"]:
        raise WebRtcUsageError("this aiortc version's RTCRtpSender has no _handle_rtcp_packet(packet): not supported")


class FeedTrack(MediaStreamTrack):
    """A track that yields the encoded packets of one lane of a feed."""

    def __init__(self, feed: ViewerFeed, lane: Lane) -> None:
        super().__init__()
        self.kind = lane.value
        self.feed = feed
        self.lane = lane

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        out = await self.feed.get(self.lane)
        if out is None:
            self.stop()
            raise MediaStreamError
        packet = av.Packet(out.data)
        packet.pts = out.pts
        packet.time_base = TIME_BASES[self.lane]
        return packet


class WhepSession:
    """A peer connection sending one stream to one viewer.

    Call :meth:`answer` with the viewer's offer; ``on_failed(reason)`` is
    called once when the connection fails or the stream ends. :meth:`close`
    ends it and leaves the hub.
    """

    def __init__(
        self,
        session_id: str,
        hub: StreamHub,
        config: WebRtcConfig,
        on_failed: Callable[[str], None],
    ) -> None:
        self.id = session_id
        self.hub = hub
        self.config = config
        self.on_failed = on_failed
        self.feed = ViewerFeed(session_id, config.viewer_buffer_packets)
        self.pc = RTCPeerConnection(rtc_configuration(config))
        self.closed = False
        self.last_heard = asyncio.get_running_loop().time()
        """When the viewer last sent RTCP (receiver reports come about every
        second from a live viewer; a vanished one falls silent)."""
        self._reported = False
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    async def answer(self, offer_sdp: str) -> str:
        # Transceivers made before the offer is applied take the offer's
        # sections, with the codec preferences already in force.
        for kind in offered_kinds(offer_sdp):
            lane = Lane(kind)
            mimes = WHEP_VIDEO_CODECS if lane is Lane.VIDEO else AUDIO_CODECS
            transceiver = self.pc.addTransceiver(FeedTrack(self.feed, lane), direction="sendonly")
            prefer_codecs(transceiver, mimes, sender=True)
            self._watch_rtcp(transceiver.sender)
        with HostAddresses.from_config(self.config).applied():
            answer = await answer_offer(self.pc, offer_sdp)
        self.hub.add(self.feed)
        return answer.sdp

    def _watch_rtcp(self, sender: RTCRtpSender) -> None:
        """Note the time of every RTCP packet the viewer sends for ``sender``."""
        handle = sender._handle_rtcp_packet
        loop = asyncio.get_running_loop()

        async def heard(packet: AnyRtcpPacket) -> None:
            self.last_heard = loop.time()
            await handle(packet)

        sender._handle_rtcp_packet = heard  # type: ignore[method-assign]

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed") and not self.closed:
            self.report_failure(f"peer connection {state}")

    def report_failure(self, reason: str) -> None:
        if not self._reported:
            self._reported = True
            self.on_failed(reason)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.hub.remove(self.id)
        await self.pc.close()
