"""One stream's WebRTC fan-out: a single registry subscription turned into
ready-to-send packets for every WHEP viewer of that stream.

H.264 without B-frames is relayed as it is (AVCC to Annex B, SPS and PPS
before every keyframe): no viewer costs an encoder. A source with B-frames,
or in another video codec, is re-encoded once per stream with libx264
(``ultrafast``, ``zerolatency``: WebRTC carries one timestamp per frame, so
frames must come in display order). AAC is converted to Opus once per
stream. The hub lives only while the stream has viewers, so none of that
work runs for a stream nobody watches over WebRTC.

Timestamps on the way out are continuous across a publisher's reconnect
(the registry's ``discontinuity``): each lane is rebased so that it carries
on a frame after where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from engine.codecs import CodecError, nal_length_size, parameter_sets
from engine.media import Codec, MediaKind, Packet, StreamEnded, StreamStarted, Track, rescale
from engine.registry import GopCache, LiveStream
from webrtc.errors import BitstreamError
from webrtc.feed import Lane, OutPacket, ViewerFeed
from webrtc.h264 import avcc_to_annexb_keyframe
from webrtc.transcode import AUDIO_TIME_BASE, VIDEO_TIME_BASE, AacToOpus, Coded, VideoToH264

log = logging.getLogger(__name__)



class _Rebase:
    """Maps one lane's source timestamps to a continuous output clock."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.offset: int | None = None
        self.last: int | None = None

    def restart(self) -> None:
        self.offset = None

    def map(self, pts: int) -> int:
        if self.offset is None:
            self.offset = 0 if self.last is None else self.last + self.step - pts
        out = pts + self.offset
        self.last = out if self.last is None else max(out, self.last)
        return out


class StreamHub:
    """Owns the subscription, the transcoders and the viewers' feeds of one
    stream. :meth:`add` and :meth:`remove` viewers; ``on_idle`` is called
    when the last viewer leaves or the stream ends, after which the hub is
    finished and a new one must be made."""

    def __init__(
        self,
        stream: LiveStream,
        on_idle: Callable[[StreamHub], None],
        gop_s: float = 1.0,
        opus_bitrate: int = 96_000,
        subscription_size: int = 1024,
    ) -> None:
        self.stream = stream
        self.on_idle = on_idle
        self.gop_frames = max(1, round(30 * gop_s))
        self.opus_bitrate = opus_bitrate
        self.feeds: dict[str, ViewerFeed] = {}
        self.mode = "waiting"
        self.packets_out = 0
        self.transcoded_frames = 0
        self.finished = False
        self._loop = asyncio.get_running_loop()
        self._video: Track | None = None
        self._audio: Track | None = None
        self._param_sets: list[bytes] = []
        self._length_size = 4
        self._reencoder: VideoToH264 | None = None
        self._opus: AacToOpus | None = None
        self._gop: GopCache[OutPacket] = GopCache(stream.gop_cache_limit)
        self._video_clock = _Rebase(3000)
        self._audio_clock = _Rebase(960)
        self._sub = stream.subscribe("webrtc", maxsize=subscription_size, replay_gop=True)
        self._task = self._loop.create_task(self._run(), name=f"whep-hub-{stream.name}")

    # -- viewers -------------------------------------------------------------
    def add(self, feed: ViewerFeed) -> None:
        self.feeds[feed.id] = feed
        feed.seed_video(self._gop.items())
        if self._reencoder is not None and not self._gop:
            self._reencoder.request_keyframe()

    def remove(self, feed_id: str) -> None:
        feed = self.feeds.pop(feed_id, None)
        if feed is not None:
            feed.end()
        if not self.feeds:
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._sub.close()
        self._task.cancel()
        for feed in self.feeds.values():
            feed.end()
        self.on_idle(self)

    async def close(self) -> None:
        self._finish()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    # -- the stream ------------------------------------------------------------
    async def _run(self) -> None:
        try:
            async for item in self._sub:
                if isinstance(item, StreamStarted):
                    self._on_tracks(item)
                elif isinstance(item, StreamEnded):
                    break
                elif self._video is not None and item.track == self._video.index:
                    await self._on_video(item)
                elif self._audio is not None and item.track == self._audio.index:
                    await self._on_audio(item)
        finally:
            self._loop.call_soon(self._finish)

    def _on_tracks(self, started: StreamStarted) -> None:
        video = next((t for t in started.tracks if t.kind is MediaKind.VIDEO), None)
        audio = next((t for t in started.tracks if t.codec in (Codec.AAC, Codec.OPUS)), None)
        if started.discontinuity or video != self._video:
            self._video_clock.restart()
            self._gop.clear()
        if started.discontinuity or audio != self._audio:
            self._audio_clock.restart()
        if video != self._video:
            self._reencoder = None
            self._param_sets, self._length_size, self.mode = [], 4, "waiting"
            if video is not None and video.codec is Codec.H264:
                try:
                    self._param_sets = parameter_sets(video)
                    self._length_size = nal_length_size(video)
                    self.mode = "relay"
                except CodecError as exc:
                    log.warning("whep %s: H.264 record unusable (%s): re-encoding", self.stream.name, exc)
                    self._start_reencode(video)
            elif video is not None:
                self._start_reencode(video)
        if audio != self._audio:
            self._opus = None
            if audio is not None and audio.codec is Codec.AAC:
                self._opus = AacToOpus(audio.extradata, audio.sample_rate or 48_000, audio.time_base, self.opus_bitrate)
        self._video, self._audio = video, audio

    def _start_reencode(self, video: Track) -> None:
        try:
            self._reencoder = VideoToH264(video.codec, video.time_base, video.extradata, gop_frames=self.gop_frames)
        except BitstreamError as exc:
            log.warning("whep %s: %s video cannot be re-encoded (%s): audio only", self.stream.name,
                        video.codec.value, exc)
            self.mode = "unsupported"
            return
        self._gop.clear()
        self.mode = "transcode"
        log.info("whep %s: %s source re-encoded to H.264 for WebRTC viewers", self.stream.name, video.codec.value)

    async def _on_video(self, packet: Packet) -> None:
        assert self._video is not None
        if self.mode == "relay" and packet.pts != packet.dts:
            # B-frames: WebRTC has no decode timestamps, so the frames must be
            # put back in display order by a decoder and an encoder.
            log.info("whep %s: source has B-frames", self.stream.name)
            self._start_reencode(self._video)
        if self.mode == "relay":
            try:
                data = avcc_to_annexb_keyframe(packet.data, packet.keyframe, self._param_sets, self._length_size)
            except BitstreamError as exc:
                log.debug("whep %s: packet skipped: %s", self.stream.name, exc)
                return
            pts = self._video_clock.map(rescale(packet.pts, packet.time_base, VIDEO_TIME_BASE))
            self._emit_video(OutPacket(data, pts, packet.keyframe))
        elif self.mode == "transcode" and self._reencoder is not None:
            try:
                coded: list[Coded] = await self._loop.run_in_executor(
                    None, self._reencoder.push, packet.data, packet.pts
                )
            except BitstreamError as exc:
                log.debug("whep %s: frame not re-encoded: %s", self.stream.name, exc)
                return
            for c in coded:
                self.transcoded_frames += 1
                self._emit_video(OutPacket(c.data, self._video_clock.map(c.pts), c.keyframe))

    def _emit_video(self, out: OutPacket) -> None:
        self._gop.add(out, keyframe=out.keyframe)
        self.packets_out += 1
        for feed in self.feeds.values():
            feed.offer(Lane.VIDEO, out)

    async def _on_audio(self, packet: Packet) -> None:
        assert self._audio is not None
        if self._audio.codec is Codec.OPUS:
            outs = [OutPacket(packet.data, rescale(packet.pts, packet.time_base, AUDIO_TIME_BASE), True)]
        elif self._opus is not None:
            try:
                coded: list[Coded] = await self._loop.run_in_executor(None, self._opus.push, packet.data, packet.pts)
            except BitstreamError as exc:
                log.debug("whep %s: AAC frame skipped: %s", self.stream.name, exc)
                return
            outs = [OutPacket(c.data, c.pts, True) for c in coded]
        else:
            return
        for out in outs:
            mapped = OutPacket(out.data, self._audio_clock.map(out.pts), True)
            for feed in self.feeds.values():
                feed.offer(Lane.AUDIO, mapped)


__all__ = ["StreamHub"]
