"""Taking encoded frames out of aiortc's receivers without decoding them.

An aiortc receiver reassembles each frame in its jitter buffer and hands
``(codec, frame)`` to a decoder thread through a queue. WHIP ingest wants
the encoded frames themselves (the engine keeps H.264 as it came), so
:func:`tap_receiver` swaps that queue for one that passes every frame to a
callback on the event loop instead; the decoder thread then idles until the
receiver stops. It must be called before the receiver starts (from the peer
connection's ``track`` event), which :func:`tap_receiver` checks.
"""

from __future__ import annotations

import inspect
import queue
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver

from webrtc.errors import WebRtcUsageError

FrameSink = Callable[[str, int, bytes, int], None]
"""``sink(codec_name, clock_rate, data, timestamp)``: the codec name as in
SDP (``H264``, ``VP8``, ``opus``), its RTP clock rate, the depayloaded frame
(Annex B for H.264) and its RTP timestamp counted from the first frame."""

_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"


class _TapQueue(queue.Queue[Any]):
    def __init__(self, sink: FrameSink) -> None:
        super().__init__()
        self._sink = sink

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            # The receiver is stopping: let its idle decoder thread exit.
            super().put(None, block, timeout)
            return
        codec, frame = item
        self._sink(str(codec.name), int(codec.clockRate), bytes(frame.data), int(frame.timestamp))


def check_library() -> None:
    """Raise :class:`WebRtcUsageError` unless aiortc's receiver still keeps
    a decoder queue that is fed ``(codec, frame)`` and a PLI sender."""
    init = inspect.getsource(RTCRtpReceiver.__init__)
    handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    receive = inspect.getsource(RTCRtpReceiver.receive)
    for needed, where, what in (
        ("self.__decoder_queue", init, "a decoder queue"),
        ("self.__decoder_thread", init, "a decoder thread"),
        ("self.__decoder_queue.put((codec, encoded_frame))", handle, "(codec, frame) items on the decoder queue"),
        ("self.__decoder_queue", receive, "the decoder queue handed to its thread at start"),
    ):
        if needed not in where:
            raise WebRtcUsageError(f"this aiortc version's RTCRtpReceiver has no {what}: not supported")
    if not inspect.iscoroutinefunction(getattr(RTCRtpReceiver, "_send_rtcp_pli", None)):
        raise WebRtcUsageError("this aiortc version's RTCRtpReceiver has no _send_rtcp_pli: not supported")


def tap_receiver(receiver: RTCRtpReceiver, sink: FrameSink) -> None:
    """Route ``receiver``'s encoded frames to ``sink`` instead of a decoder."""
    if not hasattr(receiver, _QUEUE_ATTR):
        raise WebRtcUsageError("this aiortc version keeps no decoder queue on its receivers")
    if getattr(receiver, _THREAD_ATTR, None) is not None:
        raise WebRtcUsageError("the receiver has already started decoding")
    setattr(receiver, _QUEUE_ATTR, _TapQueue(sink))


async def request_keyframe(receiver: RTCRtpReceiver) -> bool:
    """Send a picture loss indication (RFC 4585 §6.3.1) to every source the
    receiver heard from in the last seconds; ``False`` when there was none."""
    sender = getattr(receiver, "_send_rtcp_pli", None)
    if sender is None:
        return False
    sent = False
    for source in receiver.getSynchronizationSources():
        await sender(source.source)
        sent = True
    return sent
