"""One WHIP publish (RFC 9725): a browser's peer connection feeding a
registry stream.

Video arrives as H.264 (kept as it came: Annex B access units become AVCC
packets, the ``avcC`` record built from the SPS and PPS seen in-band) or VP8
(decoded and encoded to H.264 once, off the event loop, because HLS carries
no VP8). Audio arrives as Opus and enters the registry as AAC (converted
once, off the event loop), because the HLS packager carries AAC only.
Timestamps stay in each RTP clock (1/90000 video, 1/48000 audio), shifted so
that both tracks start where they arrived relative to each other.

The publisher is asked for a keyframe (RTCP PLI) whenever none came for
``keyframe_request_s``: browsers send keyframes only on request, and HLS
segments start on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from fractions import Fraction

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver

from engine.media import Codec, Packet, Track
from engine.registry import Publisher
from webrtc.config import WebRtcConfig
from webrtc.errors import BitstreamError
from webrtc.h264 import AnnexBToAvcc, vp8_is_keyframe
from webrtc.ice import HostAddresses, rtc_configuration
from webrtc.negotiate import AUDIO_CODECS, VIDEO_CODECS, offered_kinds, prefer_codecs
from webrtc.sdp import answer_offer
from webrtc.tap import request_keyframe, tap_receiver
from webrtc.transcode import AUDIO_TIME_BASE, VIDEO_TIME_BASE, Coded, OpusToAac, VideoToH264

log = logging.getLogger(__name__)

QUEUE_FRAMES = 90
"""Frames waiting for a transcoder before new ones are dropped."""

class _Aligner:
    """Puts a track's RTP clock on the session's common origin: the first
    frame of each track lands at its arrival time after the session's first
    frame."""

    def __init__(self) -> None:
        self.origin: float | None = None
        self.offsets: dict[str, int] = {}

    def pts(self, kind: str, timestamp: int, time_base: Fraction, now: float) -> int:
        if self.origin is None:
            self.origin = now
        offset = self.offsets.get(kind)
        if offset is None:
            offset = round(Fraction(now - self.origin) / time_base) - timestamp
            self.offsets[kind] = offset
        return timestamp + offset


class WhipSession:
    """A peer connection receiving one publisher's media.

    Call :meth:`answer` with the offer, then let it run; ``on_activity`` is
    called on every received frame, ``on_failed(reason)`` once when the
    connection fails or the publisher is kicked. :meth:`close` ends it.
    """

    def __init__(
        self,
        session_id: str,
        publisher: Publisher,
        config: WebRtcConfig,
        on_activity: Callable[[], None],
        on_failed: Callable[[str], None],
    ) -> None:
        self.id = session_id
        self.publisher = publisher
        self.config = config
        self.on_activity = on_activity
        self.on_failed = on_failed
        self.pc = RTCPeerConnection(rtc_configuration(config))
        self.frames_in = 0
        self.packets_out = 0
        self.dropped = 0
        self.bitstream_errors = 0
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._aligner = _Aligner()
        self._h264 = AnnexBToAvcc()
        self._video_track: Track | None = None
        self._audio_track: Track | None = None
        self._has_video = False
        self._has_audio = False
        self._started = False
        self._receivers: dict[str, RTCRtpReceiver] = {}
        self._opus: OpusToAac | None = None
        self._vp8: VideoToH264 | None = None
        self._vp8_wait_key = False
        self._audio_q: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(QUEUE_FRAMES)
        self._video_q: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(QUEUE_FRAMES)
        self._tasks: list[asyncio.Task[None]] = []
        self._last_keyframe = self._loop.time()
        self._last_key_request = 0.0
        self._failed_reported = False
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        publisher.on_kick = self._on_kick

    # -- signalling --------------------------------------------------------
    async def answer(self, offer_sdp: str) -> str:
        """Apply the offer and return the SDP answer (ICE candidates
        included: WHIP has no trickle here)."""
        # Transceivers made before the offer is applied take the offer's
        # sections, with the codec preferences already in force.
        for kind in offered_kinds(offer_sdp):
            mimes = VIDEO_CODECS if kind == "video" else AUDIO_CODECS
            prefer_codecs(self.pc.addTransceiver(kind, direction="recvonly"), mimes, sender=False)
        with HostAddresses.from_config(self.config).applied():
            answer = await answer_offer(self.pc, offer_sdp)
        self._has_video = "video" in answer.kinds
        self._has_audio = "audio" in answer.kinds
        if self._has_audio:
            self._opus = OpusToAac(self.config.aac_bitrate)
            self._audio_track = Track(
                index=1 if self._has_video else 0,
                codec=Codec.AAC,
                time_base=AUDIO_TIME_BASE,
                extradata=self._opus.extradata,
                sample_rate=48_000,
                channels=self._opus.channels,
                bitrate=self.config.aac_bitrate,
            )
            self._tasks.append(self._loop.create_task(self._audio_worker(), name=f"whip-audio-{self.id}"))
        if self._has_video:
            self._tasks.append(self._loop.create_task(self._keyframe_requester(), name=f"whip-pli-{self.id}"))
        else:
            self._start_tracks()
        return answer.sdp

    def _on_track(self, track: MediaStreamTrack) -> None:
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track:
                self._receivers[track.kind] = transceiver.receiver
                tap_receiver(transceiver.receiver, functools.partial(self._on_frame, track.kind))

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed") and not self.closed:
            self._report_failure(f"peer connection {state}")

    def _on_kick(self, reason: str) -> None:
        self._report_failure(f"publisher kicked: {reason}")

    def _report_failure(self, reason: str) -> None:
        if not self._failed_reported:
            self._failed_reported = True
            self.on_failed(reason)

    # -- media -------------------------------------------------------------
    def _on_frame(self, kind: str, codec: str, clock_rate: int, data: bytes, timestamp: int) -> None:
        if self.closed:
            return
        self.frames_in += 1
        self.on_activity()
        now = self._loop.time()
        time_base = Fraction(1, clock_rate)
        pts = self._aligner.pts(kind, timestamp, time_base, now)
        try:
            if kind == "video" and codec == "H264":
                self._on_h264(data, pts, time_base, now)
            elif kind == "video" and codec == "VP8":
                self._on_vp8(data, pts, now)
            elif kind == "audio" and codec.lower() == "opus":
                self._enqueue(self._audio_q, data, pts)
        except BitstreamError as exc:
            self.bitstream_errors += 1
            if self.bitstream_errors in (1, 10, 100) or self.bitstream_errors % 1000 == 0:
                log.warning("whip %s: bad %s frame (%d so far): %s", self.id, codec, self.bitstream_errors, exc)

    def _enqueue(self, q: asyncio.Queue[tuple[bytes, int]], data: bytes, pts: int) -> bool:
        try:
            q.put_nowait((data, pts))
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    def _on_h264(self, data: bytes, pts: int, time_base: Fraction, now: float) -> None:
        unit = self._h264.push(data)
        if unit is None:
            return
        if unit.new_config is not None or self._video_track is None:
            assert self._h264.config is not None
            self._video_track = Track(
                index=0,
                codec=Codec.H264,
                time_base=time_base,
                extradata=self._h264.config,
                width=unit.width,
                height=unit.height,
            )
            self._start_tracks()
        if unit.keyframe:
            self._last_keyframe = now
        self._write(Packet(0, pts, pts, time_base, unit.avcc, keyframe=unit.keyframe))

    def _on_vp8(self, data: bytes, pts: int, now: float) -> None:
        key = vp8_is_keyframe(data)
        if key:
            self._last_keyframe = now
            self._vp8_wait_key = False
        if self._vp8_wait_key:
            self.dropped += 1
            return
        if self._vp8 is None:
            gop = max(1, round(30 * self.config.transcode_gop_s))
            self._vp8 = VideoToH264(Codec.VP8, VIDEO_TIME_BASE, gop_frames=gop)
            self._tasks.append(self._loop.create_task(self._video_worker(self._vp8), name=f"whip-vp8-{self.id}"))
        if not self._enqueue(self._video_q, data, pts):
            # A dropped VP8 frame breaks every frame after it until the next
            # key frame: skip to one and ask for it now.
            self._vp8_wait_key = True
            self._last_keyframe = 0.0

    def _start_tracks(self) -> None:
        tracks = tuple(t for t in (self._video_track, self._audio_track) if t is not None)
        if self._has_video and self._video_track is None:
            return
        self.publisher.start(tracks)
        self._started = True

    def _write(self, packet: Packet) -> None:
        if self._started and not self.closed:
            self.publisher.write(packet)
            self.packets_out += 1

    async def _audio_worker(self) -> None:
        converter = self._opus
        assert converter is not None and self._audio_track is not None
        index = self._audio_track.index
        while True:
            data, pts = await self._audio_q.get()
            try:
                coded = await self._loop.run_in_executor(None, converter.push, data, pts)
            except BitstreamError as exc:
                self.bitstream_errors += 1
                log.debug("whip %s: opus frame skipped: %s", self.id, exc)
                continue
            for c in coded:
                if c.pts >= 0:
                    self._write(Packet(index, c.pts, c.pts, AUDIO_TIME_BASE, c.data, True, c.duration))

    async def _video_worker(self, converter: VideoToH264) -> None:
        while True:
            data, pts = await self._video_q.get()
            try:
                coded: list[Coded] = await self._loop.run_in_executor(None, converter.push, data, pts)
            except BitstreamError as exc:
                self.bitstream_errors += 1
                log.debug("whip %s: VP8 frame skipped: %s", self.id, exc)
                self._vp8_wait_key = True
                continue
            for c in coded:
                try:
                    self._on_h264(c.data, c.pts, VIDEO_TIME_BASE, self._loop.time())
                except BitstreamError as exc:  # our own encoder's output: a bug if it happens
                    log.error("whip %s: H.264 from the VP8 transcode is unusable: %s", self.id, exc)

    async def _keyframe_requester(self) -> None:
        interval = self.config.keyframe_request_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(min(0.5, interval / 2))
            now = self._loop.time()
            if now - self._last_keyframe >= interval and now - self._last_key_request >= interval:
                receiver = self._receivers.get("video")
                if receiver is not None and await request_keyframe(receiver):
                    self._last_key_request = now

    async def close(self, reason: str = "publisher left") -> None:
        """End the session and release the stream (it enters the registry's
        reconnect grace window)."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.publisher.close(reason)
        await self.pc.close()
