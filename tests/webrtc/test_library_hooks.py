"""The parts of aiortc and aioice that are not public API and that the
engine relies on. These fail loudly when a new version changes them (the
versions are bounded in pyproject.toml); the engine makes the same checks
when it starts."""

from __future__ import annotations

import asyncio
import inspect
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender

from webrtc import ice, tap, whep
from webrtc.ice import HostAddresses

ROOT = Path(__file__).resolve().parents[2]


def _bounds(package: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    requirement = next(r for r in extras["webrtc"] if re.match(rf"{package}\b", r))
    low = re.search(r">=([\d.]+)", requirement)
    high = re.search(r"<([\d.]+)", requirement)
    assert low and high, f"{requirement}: the webrtc extra must bound {package} on both sides"
    return tuple(map(int, low[1].split("."))), tuple(map(int, high[1].split(".")))


@pytest.mark.parametrize("package", ["aiortc", "aioice"])
def test_installed_versions_are_inside_the_tested_bounds(package: str) -> None:
    low, high = _bounds(package)
    installed = tuple(int(p) for p in re.findall(r"\d+", version(package))[:3])
    assert low <= installed < high, f"{package} {version(package)} is outside the bounds the hooks were checked for"


def test_the_checks_the_engine_makes_at_start_pass() -> None:
    ice.check_library()
    tap.check_library()
    whep.check_library()


def test_aioice_still_gathers_host_candidates_through_its_module_lookup() -> None:
    assert list(inspect.signature(ice._library_lookup or aioice.ice.get_host_addresses).parameters) == [
        "use_ipv4", "use_ipv6",
    ]
    assert "get_host_addresses(" in inspect.getsource(aioice.ice.Connection.gather_candidates)


async def _host_candidates(hosts: HostAddresses | None) -> set[str]:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="recvonly")
        if hosts is None:
            await pc.setLocalDescription(await pc.createOffer())
        else:
            with hosts.applied():
                await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    return set(re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", sdp))


async def test_a_real_gathering_offers_the_configured_address_only_inside_the_block() -> None:
    ours = await _host_candidates(HostAddresses(["127.0.0.1"], include_interfaces=False))
    assert ours == {"127.0.0.1"}
    theirs = await _host_candidates(None)
    assert "127.0.0.1" not in theirs  # another peer connection keeps the library's behaviour


async def test_a_tapped_receiver_hands_encoded_frames_to_the_sink() -> None:
    """A real publisher's frames reach the tap through aiortc's private
    decoder queue, undecoded."""
    from tests.webrtc.clients import LOOPBACK, CounterVideoTrack

    frames: list[tuple[str, int, int]] = []
    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    got = asyncio.Event()

    def sink(codec: str, clock_rate: int, data: bytes, timestamp: int) -> None:
        frames.append((codec, clock_rate, len(data)))
        if len(frames) >= 5:
            got.set()

    @receiver_pc.on("track")
    def on_track(track: object) -> None:
        for transceiver in receiver_pc.getTransceivers():
            if transceiver.receiver.track is track:
                tap.tap_receiver(transceiver.receiver, sink)

    try:
        sender_pc.addTransceiver(CounterVideoTrack(), direction="sendonly")
        with LOOPBACK.applied():
            await sender_pc.setLocalDescription(await sender_pc.createOffer())
            await receiver_pc.setRemoteDescription(sender_pc.localDescription)
            await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        await asyncio.wait_for(got.wait(), 20)
    finally:
        await sender_pc.close()
        await receiver_pc.close()
    assert {codec for codec, _, _ in frames} <= {"VP8", "H264"} and all(size > 0 for _, _, size in frames)
    assert all(rate == 90_000 for _, rate, _ in frames)


def test_private_names_the_hooks_use_exist() -> None:
    assert inspect.iscoroutinefunction(RTCRtpReceiver._send_rtcp_pli)
    assert list(inspect.signature(RTCRtpSender._handle_rtcp_packet).parameters) == ["self", "packet"]
    assert "self.__decoder_queue.put((codec, encoded_frame))" in inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
