"""Settings of WebRTC ingest (WHIP) and playback (WHEP)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings import doc


@dataclass(frozen=True, slots=True)
class WebRtcConfig:
    enabled: bool = doc("Serve WHIP ingest, WHEP playback and the /publish and /watch pages.", True)
    ice_servers: list[str] = doc(
        "STUN/TURN URLs handed to the engine's peer connections (stun:HOST:PORT, turn:HOST:PORT). Empty: "
        "host candidates only, and no traffic ever leaves for a public STUN server.",
        factory=list,
    )
    ice_username: str = doc("Username for the TURN servers in ice_servers.", "")
    ice_credential: str = doc("Credential for the TURN servers in ice_servers.", "")
    host_addresses: list[str] = doc(
        "Extra local addresses offered as ICE host candidates. The ICE library leaves 127.0.0.1 out, so a "
        "node whose viewers reach it over loopback (tests, a local reverse proxy) lists it here.",
        factory=lambda: ["127.0.0.1"],
    )
    include_interface_addresses: bool = doc(
        "Also offer the addresses of the machine's network interfaces as host candidates.", True
    )
    session_idle_timeout_s: float = doc(
        "A WHIP session that sends no media, or a WHEP session whose connection is not up, for this long is "
        "closed.",
        20.0,
    )
    max_publishers: int = doc("Most concurrent WHIP publishers on this node.", 32)
    max_viewers_per_stream: int = doc("Most concurrent WHEP viewers of one stream.", 200)
    max_viewers: int = doc("Most concurrent WHEP viewers on this node, all streams together.", 1000)
    viewer_buffer_packets: int = doc(
        "Video packets a WHEP viewer may fall behind before it drops to the next keyframe.", 120
    )
    keyframe_request_s: float = doc(
        "A WHIP publisher is asked for a keyframe (RTCP PLI) when none came for this long, so that HLS "
        "segments can be cut. 0 disables.",
        2.0,
    )
    transcode_gop_s: float = doc(
        "Keyframe interval of the engine's own H.264 encodes (VP8 ingest, B-frame sources for WHEP).", 1.0
    )
    aac_bitrate: int = doc("AAC bit rate of the audio a WHIP publisher's Opus is converted to.", 128_000)
    opus_bitrate: int = doc("Opus bit rate of the audio WHEP viewers receive from an AAC source.", 96_000)
    max_sdp_bytes: int = doc("Largest SDP offer accepted.", 64 * 1024)
    cors_origin: str = doc("Access-Control-Allow-Origin of the WHIP and WHEP endpoints.", "*")

    def __post_init__(self) -> None:
        if self.session_idle_timeout_s <= 0:
            raise ValueError("webrtc.session_idle_timeout_s must be positive")
        if self.max_publishers < 0 or self.max_viewers_per_stream < 0 or self.max_viewers < 0:
            raise ValueError("webrtc session limits must not be negative")
        if self.viewer_buffer_packets < 8:
            raise ValueError("webrtc.viewer_buffer_packets must be at least 8")
        if self.keyframe_request_s < 0:
            raise ValueError("webrtc.keyframe_request_s must not be negative")
        if self.transcode_gop_s <= 0:
            raise ValueError("webrtc.transcode_gop_s must be positive")
        for url in self.ice_servers:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"webrtc.ice_servers: {url!r} is not a stun:, turn: or turns: URL")
