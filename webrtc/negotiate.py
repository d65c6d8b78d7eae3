"""Codec choice in the engine's SDP answers.

WHIP accepts H.264 (kept as it came) before VP8 (transcoded), and Opus
only; WHEP sends H.264 and Opus only, because the engine relays H.264
without re-encoding and has one Opus encoder per stream.
"""

from __future__ import annotations

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver

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
