"""Per-viewer bounded queues of ready-to-send WebRTC packets.

Sans-I/O apart from one waiter future: the stream's hub offers every packet
to every viewer's feed without waiting; a feed whose viewer falls behind
drops (video: everything queued, then it waits for the next keyframe so the
viewer resumes on a decodable picture; audio: the oldest packets) and counts
what it dropped. The viewer's tracks take packets with :meth:`ViewerFeed.get`.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from dataclasses import dataclass


class Lane(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class OutPacket:
    """One encoded frame ready for an aiortc packetiser: Annex B H.264 with
    ``pts`` in 1/90000, or Opus with ``pts`` in 1/48000."""

    data: bytes
    pts: int
    keyframe: bool = False


class ViewerFeed:
    """The two lanes of one viewer, each bounded to ``limit`` packets."""

    def __init__(self, viewer_id: str, video_limit: int, audio_limit: int = 50) -> None:
        self.id = viewer_id
        self.limits = {Lane.VIDEO: video_limit, Lane.AUDIO: audio_limit}
        self.dropped = {Lane.VIDEO: 0, Lane.AUDIO: 0}
        self.sent = {Lane.VIDEO: 0, Lane.AUDIO: 0}
        self.ended = False
        self._queues: dict[Lane, collections.deque[OutPacket]] = {
            Lane.VIDEO: collections.deque(),
            Lane.AUDIO: collections.deque(),
        }
        self._wait_key = True
        self._waiters: dict[Lane, asyncio.Future[None] | None] = {Lane.VIDEO: None, Lane.AUDIO: None}

    def seed_video(self, packets: list[OutPacket]) -> None:
        """Start the video lane with a replayed group of pictures (its first
        packet is a keyframe). Timestamps are squeezed to one tick apart
        ending at the last one's, so the viewer decodes the whole group at
        once and shows the live picture instead of replaying the past."""
        if not packets or not packets[0].keyframe:
            return
        last = packets[-1].pts
        count = len(packets)
        limit = self.limits[Lane.VIDEO]
        for i, packet in enumerate(packets[-limit:] if count > limit else packets):
            squeezed = OutPacket(packet.data, last - (min(count, limit) - 1 - i), packet.keyframe)
            self._queues[Lane.VIDEO].append(squeezed)
        self._wait_key = not self._queues[Lane.VIDEO][0].keyframe
        self._wake(Lane.VIDEO)

    def offer(self, lane: Lane, packet: OutPacket) -> None:
        """Queue ``packet`` or drop it; never waits."""
        if self.ended:
            return
        queue = self._queues[lane]
        if lane is Lane.VIDEO:
            if self._wait_key:
                if not packet.keyframe:
                    self.dropped[lane] += 1
                    return
                self._wait_key = False
            if len(queue) >= self.limits[lane]:
                self.dropped[lane] += len(queue)
                queue.clear()
                if not packet.keyframe:
                    self.dropped[lane] += 1
                    self._wait_key = True
                    return
        elif len(queue) >= self.limits[lane]:
            queue.popleft()
            self.dropped[lane] += 1
        queue.append(packet)
        self._wake(lane)

    def end(self) -> None:
        """No more packets will come: waiting readers get ``None``."""
        self.ended = True
        for lane in Lane:
            self._wake(lane)

    def get_nowait(self, lane: Lane) -> OutPacket | None:
        queue = self._queues[lane]
        if not queue:
            return None
        self.sent[lane] += 1
        return queue.popleft()

    async def get(self, lane: Lane) -> OutPacket | None:
        """The next packet of ``lane``; ``None`` once the feed has ended."""
        while True:
            packet = self.get_nowait(lane)
            if packet is not None:
                return packet
            if self.ended:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[lane] = waiter
            try:
                await waiter
            finally:
                self._waiters[lane] = None

    def queued(self, lane: Lane) -> int:
        return len(self._queues[lane])

    def _wake(self, lane: Lane) -> None:
        waiter = self._waiters[lane]
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
