"""Whose fault a failed offer is: the peer's bad SDP is a 400, a fault on
the engine's side is a 500 with a log line, and neither leaves a session
behind."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from hypothesis import given, settings
from hypothesis import strategies as st

import webrtc.whep
import webrtc.whip
from tests.webrtc.clients import AudioStreamTrack, CounterVideoTrack
from tests.webrtc.test_whip_whep import Node, make_node
from webrtc.errors import OfferError
from webrtc.sdp import answer_offer

pytestmark = pytest.mark.timeout(90)


async def _offer(direction: str = "sendonly") -> str:
    pc = RTCPeerConnection()
    try:
        if direction == "sendonly":
            pc.addTransceiver(CounterVideoTrack(), direction="sendonly")
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        else:
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


@pytest.fixture(scope="module")
def publish_offer() -> str:
    return asyncio.run(_offer("sendonly"))


@pytest.fixture(scope="module")
def play_offer() -> str:
    return asyncio.run(_offer("recvonly"))


def _without(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


async def _post(node: Node, path: str, body: str) -> tuple[int, str]:
    async with node.http.post(f"{node.base}{path}", data=body.encode(),
                              headers={"Content-Type": "application/sdp"}) as resp:
        return resp.status, await resp.text()


async def test_an_offer_aiortc_refuses_is_the_peers_400(publish_offer: str, play_offer: str) -> None:
    async with make_node() as node:
        publisher = node.registry.claim("watched")
        try:
            for prefix in ("a=ice-ufrag", "a=ice-pwd", "a=rtcp-mux", "a=rtpmap"):
                status, text = await _post(node, "/whip/bad", _without(publish_offer, prefix))
                assert status == 400, (prefix, text)
                status, text = await _post(node, "/whep/watched", _without(play_offer, prefix))
                assert status == 400, (prefix, text)
            assert not node.webrtc.publishers and not node.webrtc.viewers
            assert node.registry.publisher("bad") is None
        finally:
            publisher.close("test over")


async def test_our_fault_inside_the_offer_is_a_500_with_a_log_line(
    publish_offer: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The receiver tap runs from aiortc's "track" event, inside
    # setRemoteDescription: a bug there must not read as the peer's bad SDP.
    def broken_tap(*args: Any) -> None:
        raise AttributeError("injected fault in the receiver tap")

    monkeypatch.setattr(webrtc.whip, "tap_receiver", broken_tap)
    caplog.set_level(logging.ERROR, logger="webrtc")
    async with make_node() as node:
        status, text = await _post(node, "/whip/fault", publish_offer)
        assert status == 500, text
        assert "injected" not in text  # nothing internal goes to the peer
        assert any("answering the offer failed" in r.getMessage() and r.exc_info for r in caplog.records)
        assert "injected fault in the receiver tap" in caplog.text
        assert not node.webrtc.publishers and node.registry.publisher("fault") is None


async def test_our_fault_before_the_offer_is_a_500_and_leaves_no_viewer(
    play_offer: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_watch(self: object, sender: object) -> None:
        raise TypeError("injected fault in the RTCP watch")

    monkeypatch.setattr(webrtc.whep.WhepSession, "_watch_rtcp", broken_watch)
    caplog.set_level(logging.ERROR, logger="webrtc")
    async with make_node() as node:
        publisher = node.registry.claim("watched")
        try:
            status, text = await _post(node, "/whep/watched", play_offer)
            assert status == 500, text
            assert "injected fault in the RTCP watch" in caplog.text
            assert not node.webrtc.viewers
        finally:
            publisher.close("test over")


_LINE_EDITS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=200),
        st.sampled_from(["drop", "cut", "junk", "dup"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(edits=_LINE_EDITS)
def test_a_mangled_offer_raises_only_offer_error(publish_offer: str, edits: list[tuple[int, str, str]]) -> None:
    lines = publish_offer.split("\r\n")
    for index, edit, junk in edits:
        i = index % len(lines)
        if edit == "drop":
            del lines[i]
        elif edit == "cut":
            lines[i] = lines[i][: len(junk)]
        elif edit == "junk":
            lines[i] = lines[i].split(":", 1)[0] + ":" + junk
        else:
            lines.insert(i, lines[i])
        if not lines:
            lines = [""]
    mangled = "\r\n".join(lines)

    async def apply() -> None:
        pc = RTCPeerConnection()
        try:
            await answer_offer(pc, mangled)
        except OfferError:
            pass
        finally:
            await pc.close()

    asyncio.run(apply())


