"""Codec choice in the engine's SDP answers.

WHIP accepts H.264 (kept as it came) before VP8 (transcoded), and Opus
only; WHEP sends H.264 and Opus only, because the engine relays H.264
without re-encoding and has one Opus encoder per stream.
"""

from __future__ import annotations

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver

from webrtc.errors import OfferError
from webrtc.sdp import parse_offer

VIDEO_CODECS = ("video/H264", "video/VP8")
AUDIO_CODECS = ("audio/opus",)
WHEP_VIDEO_CODECS = ("video/H264",)


def prefer_codecs(transceiver: RTCRtpTransceiver, mime_types: tuple[str, ...], sender: bool) -> None:
    """Restrict a transceiver to ``mime_types`` (in that order of
    preference); H.264 only in packetization mode 1 (what browsers use)."""
    kind = transceiver.kind
    caps = RTCRtpSender.getCapabilities(kind) if sender else RTCRtpReceiver.getCapabilities(kind)
    if caps is None:
        return
    chosen = []
    for mime in mime_types:
        for codec in caps.codecs:
            if codec.mimeType.lower() != mime.lower():
                continue
            if mime == "video/H264" and codec.parameters.get("packetization-mode") != "1":
                continue
            chosen.append(codec)
    # Retransmission stays available for whatever video codec is chosen.
    chosen += [c for c in caps.codecs if c.mimeType.lower() == "video/rtx"]
    transceiver.setCodecPreferences(chosen)


def offered_kinds(offer_sdp: str) -> list[str]:
    """The media kinds of the offer's audio and video sections, in order.

    Transceivers are made for exactly these before the offer is applied, so
    that the codec preferences are in force when it is negotiated (a
    transceiver the offer does not take would break the answer)."""
    description = parse_offer(offer_sdp)
    kinds = [m.kind for m in description.media if m.kind in ("audio", "video")]
    if not kinds:
        raise OfferError("the offer has no audio or video section")
    if len(kinds) != len(set(kinds)):
        raise OfferError("the offer has more than one audio or video section")
    return kinds
