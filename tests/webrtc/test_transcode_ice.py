"""The once-per-stream conversions (checked by decoding their output with
PyAV), the ICE host-address override and the config's validation."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from fractions import Fraction
from pathlib import Path

import aioice.ice
import av
import pytest

import webrtc.ice as ice_module
from engine.codecs import parse_asc
from engine.media import Codec
from webrtc.config import WebRtcConfig
from webrtc.errors import BitstreamError
from webrtc.h264 import AnnexBToAvcc
from webrtc.ice import HostAddresses, rtc_configuration
from webrtc.transcode import AacToOpus, OpusToAac, VideoToH264


def _encode(ffmpeg: str, out: Path, args: list[str]) -> Path:
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *args, str(out)], check=True, timeout=60)
    return out


def test_opus_to_aac_and_back(ffmpeg: str, tmp_path: Path) -> None:
    src = _encode(ffmpeg, tmp_path / "a.ogg", ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=2",
                                               "-ac", "2", "-c:a", "libopus", "-b:a", "64k"])
    to_aac = OpusToAac()
    asc = parse_asc(to_aac.extradata)
    assert (asc.output_sample_rate, asc.channels) == (48_000, 2)
    aac = []
    with av.open(str(src)) as c:
        stream = c.streams.audio[0]
        for p in c.demux(stream):
            if p.size:
                aac += to_aac.push(bytes(p), int(p.pts * stream.time_base * 48_000))
    aac += to_aac.push(None)
    # About 2 s of 1024-sample frames, contiguous timestamps.
    assert 90 <= len(aac) <= 96
    assert all(b.pts - a.pts == 1024 for a, b in itertools.pairwise(aac))
    dec = av.CodecContext.create("aac", "r")
    dec.extradata = to_aac.extradata
    samples = sum(f.samples for c in aac for f in dec.decode(av.Packet(c.data)))
    assert samples >= 90 * 1024
    to_opus = AacToOpus(to_aac.extradata, 48_000, Fraction(1, 48_000))
    opus = [o for c in aac for o in to_opus.push(c.data, c.pts)]
    assert len(opus) >= 90  # 20 ms packets
    assert all(b.pts - a.pts == 960 for a, b in itertools.pairwise(opus))
    odec = av.CodecContext.create("opus", "r")
    assert sum(f.samples for o in opus[:10] for f in odec.decode(av.Packet(o.data))) == 9600


def test_vp8_to_h264(ffmpeg: str, tmp_path: Path) -> None:
    src = _encode(ffmpeg, tmp_path / "v.webm", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2",
                                                "-c:v", "libvpx", "-b:v", "400k"])
    conv = VideoToH264(Codec.VP8, Fraction(1, 1000), gop_frames=15)
    out = []
    with av.open(str(src)) as c:
        for p in c.demux(c.streams.video[0]):
            if p.size:
                if len(out) == 20:
                    conv.request_keyframe()
                out += conv.push(bytes(p), int(p.pts))
    out += conv.push(None)
    assert len(out) == 60
    keys = [i for i, c in enumerate(out) if c.keyframe]
    assert keys[0] == 0 and 15 in keys and len(keys) >= 4
    assert 2900 <= out[1].pts - out[0].pts <= 3100  # 33 ms in the 1/90000 output clock
    norm = AnnexBToAvcc()
    units = [norm.push(c.data) for c in out]
    assert all(u is not None for u in units) and (norm.width, norm.height) == (320, 240)
    with pytest.raises(BitstreamError):
        VideoToH264(Codec.VP8, Fraction(1, 1000)).push(b"\xff" * 20, 0)


async def test_host_addresses_apply_only_inside_their_block() -> None:
    a = HostAddresses(["127.0.0.1"], include_interfaces=False)
    b = HostAddresses(["127.0.0.2", "::1"], include_interfaces=False)
    with a.applied():
        library = ice_module._library_lookup
        assert library is not None
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        with b.applied():  # the innermost block wins
            assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.2", "::1"]
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
    # Outside any block: exactly what the library itself answers.
    assert aioice.ice.get_host_addresses(True, False) == library(True, False)
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)

    async def seen(hosts: HostAddresses) -> list[str]:
        with hosts.applied():
            await asyncio.sleep(0)
            return aioice.ice.get_host_addresses(True, True)

    # Concurrent tasks each see their own addresses.
    assert await asyncio.gather(seen(a), seen(b)) == [["127.0.0.1"], ["127.0.0.2", "::1"]]
    with HostAddresses(["127.0.0.1"], include_interfaces=True).applied():
        assert aioice.ice.get_host_addresses(True, False)[0] == "127.0.0.1"


def test_no_default_stun_and_config_checks() -> None:
    assert rtc_configuration(WebRtcConfig()).iceServers == []
    cfg = rtc_configuration(WebRtcConfig(ice_servers=["turn:127.0.0.1:3478"], ice_username="u", ice_credential="p"))
    assert cfg.iceServers is not None and cfg.iceServers[0].username == "u"
    for bad in ({"ice_servers": ["http://x"]}, {"session_idle_timeout_s": 0}, {"viewer_buffer_packets": 1},
                {"max_publishers": -1}, {"transcode_gop_s": 0}):
        with pytest.raises(ValueError):
            WebRtcConfig(**bad)  # type: ignore[arg-type]


def test_config_from_environment() -> None:
    from engine.settings import build, describe

    cfg = build(WebRtcConfig, {"max_publishers": 3}, {"FANZ_WEBRTC_HOST_ADDRESSES": "127.0.0.1,::1"}, "FANZ_WEBRTC")
    assert cfg.host_addresses == ["127.0.0.1", "::1"] and cfg.max_publishers == 3
    docs = {".".join(s.path): s.doc for s in describe(WebRtcConfig, "FANZ_WEBRTC")}
    assert all(docs.values()) and "ice_servers" in docs
