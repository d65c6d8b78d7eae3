"""Applying a peer's SDP offer and making the answer, shared by WHIP and
WHEP (both import it; neither imports the other).

Whose fault a failure is decides the status the peer gets: text aiortc's
SDP parser cannot read, and the checks aiortc makes on a parsed offer
(``ValueError`` for a missing ICE or DTLS attribute, ``OperationError`` for
no codec in common), are the peer's: :class:`~webrtc.errors.OfferError`,
answered with 400. Anything else raised while the offer is applied
(``AttributeError``, ``TypeError``, a state error) is a fault on this side
and is raised as it is, so that the handler logs it and answers 500.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.sdp import SessionDescription

from webrtc.errors import OfferError

PEER_FAULTS = (ValueError, OperationError)
"""What aiortc raises for a parsed offer it cannot use."""


@dataclass(frozen=True)
class Answer:
    """What :func:`answer_offer` settled: the answer's SDP and the media
    kinds (``"audio"``, ``"video"``) the offer and answer agreed on."""

    sdp: str
    kinds: frozenset[str]


def parse_offer(offer_sdp: str) -> SessionDescription:
    """Parse ``offer_sdp`` with aiortc's own parser; any failure to read
    the peer's text is an :class:`OfferError` (the parser reports malformed
    lines with whatever exception the line leads it to: ``ValueError``,
    ``IndexError``, ``AssertionError``, ``StopIteration``...)."""
    try:
        description = SessionDescription.parse(offer_sdp)
    except Exception as exc:  # the parser's reaction to untrusted text, whatever its type
        raise OfferError(f"malformed SDP offer: {type(exc).__name__}: {exc}") from exc
    for index, media in enumerate(description.media):
        # aiortc takes these for granted once an offer parses; without them
        # it fails deep inside setRemoteDescription with an AttributeError
        # that would read as a fault of ours.
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise OfferError(f"SDP offer section {index} has no ICE username fragment or password")
        if media.dtls is None:
            raise OfferError(f"SDP offer section {index} has no DTLS parameters (a=fingerprint, a=setup)")
    mids = [media.rtp.muxId for media in description.media]
    if not all(mids) or len(set(mids)) != len(mids):
        raise OfferError("every SDP offer section needs its own a=mid")
    for group in description.group:
        if group.semantic == "BUNDLE" and not set(group.items) <= set(mids):
            raise OfferError("the offer's BUNDLE group names a section it does not have")
    return description


async def answer_offer(pc: RTCPeerConnection, offer_sdp: str) -> Answer:
    """Apply ``offer_sdp`` to ``pc`` and set the local answer.

    The caller adds its transceivers (with codec preferences) first. The
    peer's faults are :class:`OfferError`; see the module docstring."""
    parse_offer(offer_sdp)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
    except PEER_FAULTS as exc:
        raise OfferError(f"unusable SDP offer: {exc}") from exc
    kinds = frozenset(t.kind for t in pc.getTransceivers() if t.mid is not None)
    if not kinds:
        raise OfferError("the offer has no audio or video section")
    try:
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except PEER_FAULTS as exc:
        raise OfferError(f"cannot answer the offer: {exc}") from exc
    return Answer(str(pc.localDescription.sdp), kinds)
