"""The server session as a conversation: reply order, publish decisions,
track assembly, timestamps, control messages and hostile input."""

from __future__ import annotations

import struct
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.media import Codec, Packet
from ingest.rtmp import amf0
from ingest.rtmp import messages as m
from ingest.rtmp.amf0 import EcmaArray
from ingest.rtmp.errors import RtmpLimitError, RtmpProtocolError, RtmpUnsupportedCodecError, RtmpUsageError
from ingest.rtmp.events import (
    Connected,
    Event,
    HandshakeDone,
    MediaPacket,
    Metadata,
    PublishRequested,
    PublishStopped,
    TracksChanged,
    TracksReady,
)
from ingest.rtmp.limits import RtmpLimits
from ingest.rtmp.session import RtmpServerSession, SessionState
from tests.ingest.rtmp_test_peer import (
    ASC_48K_STEREO,
    Peer,
    aac_config_body,
    aac_frame_body,
    avc_config_body,
    avc_frame_body,
    commands,
    handshake,
    publish_until_requested,
)

META = EcmaArray({
    "width": 640.0, "height": 360.0, "framerate": 29.97, "videodatarate": 1500.0, "videocodecid": 7.0,
    "audiodatarate": 128.0, "audiosamplerate": 48000.0, "stereo": True, "audiocodecid": 10.0,
})


def setdataframe(peer: Peer, meta: dict[str, amf0.AmfValue]) -> bytes:
    return peer.message(m.DATA_AMF0, amf0.encode("@setDataFrame", "onMetaData", meta), 1, csid=4)


def accepted(limits: RtmpLimits | None = None) -> tuple[RtmpServerSession, Peer, list[Event]]:
    session = RtmpServerSession(limits or RtmpLimits())
    peer = Peer()
    publish_until_requested(session, peer)
    events = list(session.events())
    session.accept_publish()
    peer.replies(session.data_to_send())
    return session, peer, events


def packets(events: list[Event]) -> list[Packet]:
    return [e.packet for e in events if isinstance(e, MediaPacket)]


def test_reply_order_ffmpeg_and_obs_wait_for() -> None:
    session = RtmpServerSession(RtmpLimits(out_chunk_size=4096, window_ack_size=5000000))
    peer = Peer()
    replies = publish_until_requested(session, peer)
    kinds = [(r.type_id, r.payload) if r.type_id != m.COMMAND_AMF0 else amf0.decode(r.payload)[0] for r in replies]
    assert kinds[:4] == [
        (m.WINDOW_ACK_SIZE, struct.pack(">I", 5000000)),
        (m.SET_PEER_BANDWIDTH, struct.pack(">IB", 2500000, 2)),
        (m.SET_CHUNK_SIZE, struct.pack(">I", 4096)),
        (m.USER_CONTROL, b"\x00\x00\x00\x00\x00\x00"),
    ]
    cmds = commands(replies)
    assert [c[0] for c in cmds] == ["_result", "_result", "_result", "onFCPublish", "_result"]
    connect = cmds[0]
    assert connect[1] == 1.0 and isinstance(connect[3], dict)
    assert connect[3]["code"] == "NetConnection.Connect.Success"
    assert cmds[-1] == ["_result", 4.0, None, 1.0]  # createStream -> stream 1
    events = list(session.events())
    assert events == [
        HandshakeDone(False),
        Connected("live", "rtmp://127.0.0.1/live", "FMLE/3.0"),
        PublishRequested("live", "KEY", "rtmp://127.0.0.1/live", "live", 1),
    ]
    session.accept_publish()
    after = peer.replies(session.data_to_send())
    assert after[0].type_id == m.USER_CONTROL and after[0].payload == b"\x00\x00\x00\x00\x00\x01"
    status = commands(after)[0]
    assert status[0] == "onStatus" and after[1].stream_id == 1
    assert isinstance(status[3], dict) and status[3]["code"] == "NetStream.Publish.Start"
    assert session.publishing


def test_tracks_and_packets_with_metadata() -> None:
    session, peer, _ = accepted()
    session.receive_data(setdataframe(peer, META))
    session.receive_data(peer.video(avc_config_body(), 0))
    session.receive_data(peer.audio(aac_config_body(), 0))
    session.receive_data(peer.video(avc_frame_body(True, 67), 0))
    session.receive_data(peer.audio(aac_frame_body(), 21))
    session.receive_data(peer.video(avc_frame_body(False, -33), 33))
    events = list(session.events())
    assert isinstance(events[0], Metadata) and events[0].values["width"] == 640.0
    ready = events[1]
    assert isinstance(ready, TracksReady)
    video, audio = ready.tracks
    assert (video.index, video.codec, video.width, video.height, video.frame_rate, video.bitrate) == (
        0, Codec.H264, 640, 360, Fraction(30000, 1001), 1500000)
    assert video.extradata == avc_config_body()[5:]
    assert video.time_base == Fraction(1, 1000)
    assert (audio.index, audio.codec, audio.sample_rate, audio.channels, audio.extradata) == (
        1, Codec.AAC, 48000, 2, ASC_48K_STEREO)
    got = packets(events)
    assert [(p.track, p.dts, p.pts, p.keyframe) for p in got] == [(0, 0, 67, True), (1, 21, 21, True),
                                                                  (0, 33, 0, False)]
    assert got[0].data == b"\x00\x00\x00\x02\x65\x88"


def test_without_metadata_waits_for_both_configs() -> None:
    session, peer, _ = accepted()
    session.receive_data(peer.video(avc_config_body(), 0))
    session.receive_data(peer.video(avc_frame_body(True, 0), 0))
    assert list(session.events()) == []
    session.receive_data(peer.audio(aac_config_body(), 0))
    session.receive_data(peer.audio(aac_frame_body(), 0))
    events = list(session.events())
    assert isinstance(events[0], TracksReady) and len(events[0].tracks) == 2
    assert [(p.track, p.keyframe) for p in packets(events)] == [(0, True), (1, True)]


def test_video_only_without_metadata_starts_after_the_probe_window() -> None:
    session, peer, _ = accepted(RtmpLimits(probe_messages=5))
    session.receive_data(peer.video(avc_config_body(), 0))
    for i in range(4):
        session.receive_data(peer.video(avc_frame_body(i == 0, 0), i * 33))
    assert list(session.events()) == []
    session.receive_data(peer.video(avc_frame_body(False, 0), 4 * 33))
    events = list(session.events())
    assert isinstance(events[0], TracksReady) and [t.codec for t in events[0].tracks] == [Codec.H264]
    assert [p.dts for p in packets(events)] == [0, 33, 66, 99, 132]


def test_metadata_declaring_video_only_starts_at_once() -> None:
    session, peer, _ = accepted()
    session.receive_data(setdataframe(peer, {"videocodecid": 7.0, "width": 320.0}))
    session.receive_data(peer.video(avc_config_body(), 0))
    session.receive_data(peer.video(avc_frame_body(True, 0), 0))
    events = list(session.events())
    assert isinstance(events[1], TracksReady) and events[1].tracks[0].width == 320
    assert len(packets(events)) == 1


def test_held_frames_are_bounded() -> None:
    session, peer, _ = accepted(RtmpLimits(probe_messages=100, max_buffered_packets=3))
    for i in range(3):
        session.receive_data(peer.video(avc_frame_body(True, 0), i))
    with pytest.raises(RtmpLimitError, match="incomplete"):
        session.receive_data(peer.video(avc_frame_body(True, 0), 3))


def test_new_sequence_header_changes_tracks() -> None:
    session, peer, _ = accepted()
    session.receive_data(setdataframe(peer, META))
    session.receive_data(peer.video(avc_config_body(), 0))
    session.receive_data(peer.audio(aac_config_body(), 0))
    list(session.events())
    session.receive_data(peer.audio(aac_config_body(), 10))  # the same again: nothing
    assert list(session.events()) == []
    session.receive_data(peer.audio(aac_config_body(b"\x12\x08"), 20))
    (changed,) = list(session.events())
    assert isinstance(changed, TracksChanged)
    assert changed.tracks[1].extradata == b"\x12\x08" and changed.tracks[1].sample_rate == 44100


def test_media_before_accept_is_not_forwarded() -> None:
    session = RtmpServerSession(RtmpLimits())
    peer = Peer()
    publish_until_requested(session, peer)
    list(session.events())
    session.receive_data(peer.video(avc_config_body(), 0))
    session.receive_data(peer.video(avc_frame_body(True, 0), 0))
    session.receive_data(peer.audio(aac_config_body(), 0))
    assert list(session.events()) == []
    assert session.frames_dropped_before_publish == 1
    session.accept_publish()
    events = list(session.events())
    # The sequence headers were kept; the frame was not.
    assert isinstance(events[0], TracksReady) and len(events[0].tracks) == 2
    assert packets(events) == []


@pytest.mark.parametrize("code", ["NetStream.Publish.BadName", "NetStream.Publish.Unauthorized"])
def test_reject_publish(code: str) -> None:
    session = RtmpServerSession(RtmpLimits())
    peer = Peer()
    publish_until_requested(session, peer)
    session.reject_publish(code, "no")
    (status,) = commands(peer.replies(session.data_to_send()))
    assert status[0] == "onStatus" and isinstance(status[3], dict)
    assert (status[3]["level"], status[3]["code"]) == ("error", code)
    assert session.close_reason is not None and code in session.close_reason
    with pytest.raises(RtmpUsageError):
        session.accept_publish()


def test_usage_errors() -> None:
    session = RtmpServerSession(RtmpLimits())
    with pytest.raises(RtmpUsageError):
        session.accept_publish()
    with pytest.raises(RtmpUsageError):
        session.reject_publish()
    peer = Peer()
    publish_until_requested(session, peer)
    with pytest.raises(RtmpUsageError, match="failure code"):
        session.reject_publish("NetStream.Publish.Start")


def test_unpublish_and_delete_stream_stop_once() -> None:
    session, peer, _ = accepted()
    session.receive_data(peer.command("FCUnpublish", 6, None, "KEY"))
    session.receive_data(peer.command("deleteStream", 7, None, 1.0))
    assert list(session.events()) == [PublishStopped("FCUnpublish")]
    assert session.state is SessionState.STOPPED
    codes = [c[3]["code"] for c in commands(peer.replies(session.data_to_send()))
             if c[0] == "onStatus" and isinstance(c[3], dict)]
    assert codes == ["NetStream.Unpublish.Success"]


def test_ping_and_acknowledgements() -> None:
    session, peer, _ = accepted()
    session.receive_data(peer.message(m.WINDOW_ACK_SIZE, struct.pack(">I", 20000), csid=2))
    session.receive_data(peer.message(m.USER_CONTROL, b"\x00\x06\x00\x00\x12\x34", csid=2))
    replies = peer.replies(session.data_to_send())
    assert [(r.type_id, r.payload) for r in replies] == [(m.USER_CONTROL, b"\x00\x07\x00\x00\x12\x34")]
    session.receive_data(peer.audio(aac_frame_body(bytes(18000)), 0))
    acks = [r for r in peer.replies(session.data_to_send()) if r.type_id == m.ACKNOWLEDGEMENT]
    assert len(acks) == 1
    assert m.parse_u32(acks[0].payload, "ack") == session.bytes_received


def test_peer_chunk_size_applies_to_following_chunks() -> None:
    session, peer, _ = accepted()
    session.receive_data(peer.set_chunk_size(4096))
    session.receive_data(peer.video(avc_config_body(), 0) + peer.audio(aac_config_body(), 0))
    session.receive_data(peer.video(avc_frame_body(True, 0, bytes(3000)), 0))
    events = list(session.events())
    assert len(packets(events)[0].data) == 3004


@pytest.mark.parametrize("size", [0, 0x7FFFFFFF])
def test_absurd_chunk_size_is_a_protocol_error(size: int) -> None:
    session, peer, _ = accepted()
    with pytest.raises(RtmpProtocolError):
        session.receive_data(peer.message(m.SET_CHUNK_SIZE, struct.pack(">I", size), csid=2))
    with pytest.raises(RtmpUsageError):
        session.receive_data(b"\x00")


def test_timestamps_unwrap_past_32_bits() -> None:
    session, peer, _ = accepted()
    session.receive_data(setdataframe(peer, {"videocodecid": 7.0}))
    session.receive_data(peer.video(avc_config_body(), 0xFFFFFFC0))
    for ts in (0xFFFFFFC0, 0xFFFFFFE1, 0x2, 0x23):
        session.receive_data(peer.video(avc_frame_body(False, 10), ts))
    dts = [p.dts for p in packets(list(session.events()))]
    assert dts == [0xFFFFFFC0, 0xFFFFFFE1, 0x100000002, 0x100000023]


def test_enhanced_hevc_and_opus_publish() -> None:
    session, peer, _ = accepted()
    hvcc = b"\x01\x01\x60\x00\x00\x00"
    session.receive_data(setdataframe(peer, {"videocodecid": float(int.from_bytes(b"hvc1", "big")),
                                             "audiocodecid": float(int.from_bytes(b"Opus", "big"))}))
    session.receive_data(peer.video(b"\x90hvc1" + hvcc, 0))
    opus_head = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    session.receive_data(peer.audio(b"\x90Opus" + opus_head, 0))
    session.receive_data(peer.video(b"\x91hvc1\x00\x00\x28" + b"\x00\x00\x00\x02\x26\x01", 0))
    session.receive_data(peer.video(b"\xa3hvc1" + b"\x00\x00\x00\x02\x02\x01", 40))
    session.receive_data(peer.audio(b"\x91Opus\xfc\x00", 20))
    events = list(session.events())
    ready = next(e for e in events if isinstance(e, TracksReady))
    assert [(t.codec, t.extradata) for t in ready.tracks] == [(Codec.HEVC, hvcc), (Codec.OPUS, opus_head)]
    assert (ready.tracks[1].sample_rate, ready.tracks[1].channels) == (48000, 2)
    assert [(p.track, p.dts, p.pts, p.keyframe) for p in packets(events)] == [
        (0, 0, 40, True), (0, 40, 40, False), (1, 20, 20, True)]


def test_unsupported_codec_closes_with_a_clear_reason() -> None:
    session, peer, _ = accepted()
    with pytest.raises(RtmpUnsupportedCodecError, match="MP3"):
        session.receive_data(peer.audio(b"\x2f\xff\xfb", 0))


def test_aggregate_messages_are_split() -> None:
    session, peer, _ = accepted()
    session.receive_data(setdataframe(peer, {"audiocodecid": 10.0}))

    def sub(type_id: int, ts: int, body: bytes) -> bytes:
        header = bytes((type_id,)) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        return header + bytes((ts >> 24,)) + b"\x00\x00\x00" + body + (11 + len(body)).to_bytes(4, "big")

    payload = sub(8, 500, aac_config_body()) + sub(8, 500, aac_frame_body()) + sub(8, 521, aac_frame_body())
    session.receive_data(peer.message(m.AGGREGATE, payload, 1, ts=1000, csid=4))
    assert [p.dts for p in packets(list(session.events()))] == [1000, 1021]


def test_play_is_refused() -> None:
    session = RtmpServerSession(RtmpLimits())
    peer = Peer()
    handshake(session, peer)
    session.receive_data(peer.command("connect", 1, {"app": "live"}))
    session.receive_data(peer.command("createStream", 2, None))
    session.receive_data(peer.command("play", 3, None, "KEY", stream_id=1))
    status = commands(peer.replies(session.data_to_send()))[-1]
    assert isinstance(status[3], dict) and status[3]["code"] == "NetStream.Play.Failed"
    assert session.close_reason is not None


def test_unknown_app_is_rejected() -> None:
    session = RtmpServerSession(RtmpLimits(), app_names=frozenset({"live"}))
    peer = Peer()
    handshake(session, peer)
    session.receive_data(peer.command("connect", 1, {"app": "other/"}))
    (reply,) = commands(peer.replies(session.data_to_send()))
    assert reply[0] == "_error" and isinstance(reply[3], dict)
    assert reply[3]["code"] == "NetConnection.Connect.Rejected"
    assert session.close_reason == "connect to unknown application 'other'"


@pytest.mark.parametrize(
    "build",
    [
        lambda p: p.command("publish", 1, None, "KEY", stream_id=1),  # before connect
        lambda p: p.message(m.COMMAND_AMF0, b"\x02\x00\x05conn", csid=3),  # truncated AMF
        lambda p: p.message(m.COMMAND_AMF0, amf0.encode(1.0, 2.0), csid=3),  # no command name
    ],
)
def test_bad_commands(build: object) -> None:
    session = RtmpServerSession(RtmpLimits())
    handshake(session, Peer())
    assert callable(build)
    with pytest.raises(RtmpProtocolError):
        session.receive_data(build(Peer()))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 500))
def test_garbage_after_handshake_raises_only_protocol_errors(data: bytes, step: int) -> None:
    limits = RtmpLimits(max_message_size=8192, max_pending_bytes=16384, max_chunk_streams=8,
                        max_buffered_packets=16, probe_messages=8)
    session = RtmpServerSession(limits)
    handshake(session, Peer())
    try:
        for i in range(0, len(data), step):
            session.receive_data(data[i : i + step])
            list(session.events())
            assert len(session.data_to_send()) <= 4 * len(data) + 1024
    except RtmpProtocolError:
        assert session.state is SessionState.CLOSED


message_types = st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22])
bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([avc_config_body(), avc_frame_body(True, 5), aac_config_body(), aac_frame_body(),
                     b"\x90hvc1\x01", b"\x91hvc1\x00\x00\x01\x00"]),
    st.lists(st.one_of(st.text(max_size=8), st.floats(allow_nan=False), st.none()), max_size=4).map(
        lambda v: amf0.encode(*v)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(message_types, bodies, st.integers(0, 2), st.integers(0, 0xFFFFFFFF)), max_size=30))
def test_random_messages_while_publishing(msgs: list[tuple[int, bytes, int, int]]) -> None:
    limits = RtmpLimits(max_buffered_packets=16, probe_messages=8, max_chunk_size=1 << 16)
    session, peer, _ = accepted(limits)
    try:
        for type_id, body, stream_id, ts in msgs:
            session.receive_data(peer.message(type_id, body, stream_id, ts, csid=4 + stream_id))
            for event in session.events():
                if isinstance(event, MediaPacket):
                    assert event.packet.time_base == Fraction(1, 1000)
    except RtmpProtocolError:
        pass


def test_unauthorized_peer_is_held_to_the_small_pre_publish_budget() -> None:
    """Before the publish check answers, a peer may not make the server hold
    more than the pre-publish budget, even when the full limits are large."""
    limits = RtmpLimits(pre_publish_max_message_size=1024, pre_publish_max_pending_bytes=2048)
    session = RtmpServerSession(limits)
    peer = Peer()
    handshake(session, peer)
    session.receive_data(peer.set_chunk_size(1 << 16))
    # A 100 KiB message announced right after the handshake: refused at once,
    # before any of its body is buffered.
    big = peer.message(m.DATA_AMF0, b"\x05" * (100 << 10), 0, csid=5)
    with pytest.raises(RtmpLimitError, match="before the publish is authorized"):
        session.receive_data(big[:64])
    assert session.state is SessionState.CLOSED


def test_unfinished_messages_before_publish_count_against_the_pre_publish_budget() -> None:
    limits = RtmpLimits(pre_publish_max_message_size=1024, pre_publish_max_pending_bytes=2048)
    session = RtmpServerSession(limits)
    peer = Peer()
    publish_until_requested(session, peer)
    list(session.events())
    # Three 1000-byte messages, each sent only up to its first chunk of 128
    # bytes on its own chunk stream, stay under the budget; many more do not.
    with pytest.raises(RtmpLimitError, match="unfinished messages before the publish is authorized"):
        for csid in range(10, 40):
            session.receive_data(peer.message(m.DATA_AMF0, b"\x05" * 1000, 1, csid=csid)[:140])


def test_accepted_publish_gets_the_full_limits() -> None:
    limits = RtmpLimits(pre_publish_max_message_size=1024, pre_publish_max_pending_bytes=2048)
    session, peer, _ = accepted(limits)
    list(session.events())
    session.receive_data(peer.set_chunk_size(1 << 16))
    session.receive_data(peer.video(avc_config_body(), 0))
    session.receive_data(peer.audio(aac_config_body(), 0))
    # A 200 KiB keyframe: far above the pre-publish budget, fine once authorized.
    session.receive_data(peer.video(avc_frame_body(True, 0, b"\x65" + b"\x88" * (200 << 10)), 0))
    assert any(p.keyframe and len(p.data) > 200 << 10 for p in packets(list(session.events())))


def test_pre_publish_budget_never_exceeds_the_full_limits() -> None:
    limits = RtmpLimits(max_message_size=512, max_pending_bytes=512)
    session = RtmpServerSession(limits)
    peer = Peer()
    handshake(session, peer)
    with pytest.raises(RtmpLimitError, match="limit of 512 before"):
        session.receive_data(peer.message(m.DATA_AMF0, b"\x05" * 600, 0, csid=5)[:20])
