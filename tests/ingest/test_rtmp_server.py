"""The RTMP(S) server against real publishers over loopback: ffmpeg,
GStreamer, PyAV (HEVC over enhanced RTMP), plus refusals, reconnects and
broken peers next to a healthy one."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import shutil
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.auth import AllowAllChecks, StaticKeyChecks
from engine.media import Codec, Packet, StreamEnded, StreamItem, StreamStarted
from engine.registry import LiveStream, StreamRegistry, Subscription
from ingest.rtmp import amf0
from ingest.rtmp import messages as m
from ingest.rtmp.chunk import RtmpMessage
from ingest.rtmp.limits import RtmpLimits
from ingest.rtmp.server import RtmpServer
from tests.conftest import make_clip, publish, wait_for
from tests.ingest.rtmp_test_peer import C0C1, Peer, c2_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def clip(ffmpeg: str, media_dir: Path) -> Path:
    """2 s of 320x180 30 fps H.264 (B-frames, 1 s GOP) and stereo AAC."""
    return make_clip(ffmpeg, media_dir / "rtmp_ingest_2s.flv", seconds=2, size="320x180", gop_seconds=1)


class Harness:
    """A registry, a server and one subscription per stream, made at creation
    (so nothing published is missed)."""

    def __init__(self, server: RtmpServer, registry: StreamRegistry) -> None:
        self.server = server
        self.registry = registry
        self.subs: dict[str, Subscription] = {}
        self.items: dict[str, list[StreamItem]] = {}
        registry.on_stream_created(self._created)

    def _created(self, stream: LiveStream) -> None:
        self.subs[stream.name] = stream.subscribe("test", maxsize=100_000)

    def collect(self, name: str) -> list[StreamItem]:
        got = self.items.setdefault(name, [])
        sub = self.subs.get(name)
        if sub is not None:
            got.extend(sub.drain())
        return got

    def packets(self, name: str) -> list[Packet]:
        return [i for i in self.collect(name) if isinstance(i, Packet)]

    def url(self, key: str, scheme: str = "rtmp") -> str:
        return f"{scheme}://127.0.0.1:{self.server.port}/live/{key}"


async def make_harness(
    grace_s: float = 5.0, limits: RtmpLimits | None = None, ssl_context: ssl.SSLContext | None = None
) -> Harness:
    registry = StreamRegistry(grace_s=grace_s)
    server = RtmpServer(registry, AllowAllChecks(), limits or RtmpLimits(), ssl_context=ssl_context,
                        app_names=frozenset({"live"}))
    await server.start("127.0.0.1", 0)
    return Harness(server, registry)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = await make_harness()
    try:
        yield h
    finally:
        await h.server.close()
        h.registry.close()


def probe_packets(ffprobe: str, path: Path) -> dict[str, list[tuple[int, int]]]:
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "packet=codec_type,pts,dts", "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    result: dict[str, list[tuple[int, int]]] = {"video": [], "audio": []}
    for p in json.loads(out)["packets"]:
        result[p["codec_type"]].append((int(p["dts"]), int(p["pts"])))
    return result


async def finish(proc: asyncio.subprocess.Process, timeout: float = 60) -> tuple[int, str]:
    _, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, (err or b"").decode(errors="replace")


async def test_ffmpeg_publish_matches_the_source(harness: Harness, ffmpeg: str, ffprobe: str, clip: Path) -> None:
    rc, err = await finish(await publish(ffmpeg, clip, harness.url("KEY")))
    assert rc == 0, err
    await wait_for(lambda: harness.server.connection_count == 0, 10)
    items = harness.collect("KEY")
    started = items[0]
    assert isinstance(started, StreamStarted) and not started.discontinuity
    video, audio = started.tracks
    assert (video.codec, video.width, video.height, video.frame_rate) == (Codec.H264, 320, 180, Fraction(30))
    assert (audio.codec, audio.sample_rate, audio.channels) == (Codec.AAC, 48000, 2)
    with av.open(str(clip)) as container:
        assert video.extradata == container.streams.video[0].codec_context.extradata
        assert audio.extradata == container.streams.audio[0].codec_context.extradata
    expected = probe_packets(ffprobe, clip)
    got = [i for i in items if isinstance(i, Packet)]
    assert [(p.dts, p.pts) for p in got if p.track == 0] == expected["video"]
    assert [(p.dts, p.pts) for p in got if p.track == 1] == expected["audio"]
    keyframes = [p.dts for p in got if p.track == 0 and p.keyframe]
    assert keyframes == [0, 1000]
    assert all(p.time_base == Fraction(1, 1000) for p in got)
    # Each video packet is AVCC: 4-byte lengths that add up to the packet.
    for p in got[:10]:
        if p.track == 0:
            pos = 0
            while pos < len(p.data):
                pos += 4 + int.from_bytes(p.data[pos : pos + 4], "big")
            assert pos == len(p.data)
    assert harness.server.publishes_started == 1


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="GStreamer is part of the documented test set-up")
async def test_gstreamer_rtmp2sink_publishes(harness: Harness) -> None:
    pipeline = (
        "videotestsrc num-buffers=45 ! video/x-raw,width=320,height=180,framerate=30/1 "
        "! x264enc key-int-max=30 speed-preset=ultrafast ! h264parse ! flvmux name=mux streamable=true "
        f"! rtmp2sink location={harness.url('gst')} "
        "audiotestsrc num-buffers=60 samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=2 ! audioconvert "
        "! avenc_aac ! aacparse ! mux."
    )
    proc = await asyncio.create_subprocess_exec(
        "gst-launch-1.0", "-q", *pipeline.split(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    rc, err = await finish(proc)
    assert rc == 0, err
    await wait_for(lambda: len([p for p in harness.packets("gst") if p.track == 0]) == 45, 20)
    started = harness.collect("gst")[0]
    assert isinstance(started, StreamStarted)
    assert [t.codec for t in started.tracks] == [Codec.H264, Codec.AAC]
    assert started.tracks[1].extradata[:1] != b""
    assert harness.packets("gst")[0].keyframe


HEVC_PUBLISHER = """
import sys
import av

url, frames = sys.argv[1], int(sys.argv[2])
with av.open(url, "w", format="flv") as out:
    stream = out.add_stream("libx265", rate=25, options={"x265-params": "log-level=none:keyint=25"})
    stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
    for i in range(frames):
        frame = av.VideoFrame(160, 96, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 8) % 256]) * plane.buffer_size)
        frame.pts = i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
"""


async def test_pyav_publishes_hevc_over_enhanced_rtmp(harness: Harness) -> None:
    # PyAV's FFmpeg 8 writes HEVC as enhanced RTMP (ExHeader, FourCC hvc1).
    # It runs in its own process: its blocking network calls would stall
    # this event loop, which must answer them.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HEVC_PUBLISHER, harness.url("hevc"), "30",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    rc, err = await finish(proc)
    assert rc == 0, err
    await wait_for(lambda: len(harness.packets("hevc")) == 30, 10)
    started = harness.collect("hevc")[0]
    assert isinstance(started, StreamStarted)
    (track,) = started.tracks
    assert track.codec is Codec.HEVC and track.extradata[0] == 1  # an hvcC record
    packets = harness.packets("hevc")
    assert packets[0].keyframe and [p.dts for p in packets] == [i * 40 for i in range(30)]


async def test_second_publisher_is_refused(harness: Harness, ffmpeg: str, clip: Path) -> None:
    first = await publish(ffmpeg, clip, harness.url("busy"), extra=[])
    await wait_for(lambda: len(harness.packets("busy")) > 0, 20)
    second = await publish(ffmpeg, clip, harness.url("busy"))
    rc2, _ = await finish(second)
    assert rc2 != 0
    assert harness.server.publishes_refused == 1
    rc1, err1 = await finish(first)
    assert rc1 == 0, err1
    assert harness.server.publishes_started == 1


async def test_reconnect_inside_the_grace_window_continues_the_stream(
    harness: Harness, ffmpeg: str, clip: Path
) -> None:
    for _ in range(2):
        rc, err = await finish(await publish(ffmpeg, clip, harness.url("phoenix"), realtime=False))
        assert rc == 0, err
        await wait_for(lambda: harness.server.connection_count == 0, 10)
    items = harness.collect("phoenix")
    starts = [i for i in items if isinstance(i, StreamStarted)]
    assert [s.discontinuity for s in starts] == [False, True]
    assert not any(isinstance(i, StreamEnded) for i in items)
    second = items.index(starts[1])
    assert len([i for i in items[second:] if isinstance(i, Packet)]) == len(
        [i for i in items[:second] if isinstance(i, Packet)]
    )


def _raw_connect(peer: Peer) -> bytes:
    return peer.command("connect", 1, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})


async def _broken_client(port: int, payload: bytes) -> bytes:
    """Handshake, then send ``payload``; return what the server sent until it
    closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(C0C1)
    s = await reader.readexactly(3073)
    writer.write(c2_for(s) + payload)
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), 10)  # until EOF: the server closed it
    writer.close()
    return received


async def test_broken_peers_are_closed_while_a_good_publish_flows(
    harness: Harness, ffmpeg: str, ffprobe: str, clip: Path
) -> None:
    good = await publish(ffmpeg, clip, harness.url("good"))
    await wait_for(lambda: len(harness.packets("good")) > 0, 20)
    before = len(harness.packets("good"))
    peer = Peer()
    garbage = b"\xff" * 64
    absurd = peer.message(m.SET_CHUNK_SIZE, struct.pack(">I", 0x7FFFFFFF), csid=2)
    bad_amf = Peer().message(m.COMMAND_AMF0, b"\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x00\x03ap",
                             csid=3)
    mp3 = b"".join([
        _raw_connect(p := Peer()),
        p.command("createStream", 2, None),
        p.command("publish", 3, None, "mp3", "live", stream_id=1),
    ])
    for payload in (garbage, absurd, bad_amf):
        await _broken_client(harness.server.port, payload)
    assert harness.server.protocol_errors == 3
    # A publisher that sends MP3 is accepted, then dropped on its first audio message.
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.server.port)
    writer.write(C0C1)
    s = await reader.readexactly(3073)
    writer.write(c2_for(s) + mp3)
    await wait_for(lambda: harness.registry.get("mp3") is not None, 10)
    writer.write(p.audio(b"\x2f\xff\xfb\x90\x00", 0))
    await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert harness.server.protocol_errors == 4
    assert len(harness.packets("good")) > before
    rc, err = await finish(good)
    assert rc == 0, err
    expected = probe_packets(ffprobe, clip)
    await wait_for(
        lambda: len(harness.packets("good")) == len(expected["video"]) + len(expected["audio"]), 10
    )


async def test_handshake_timeout_and_connection_limit() -> None:
    h = await make_harness(limits=RtmpLimits(handshake_timeout_s=0.3, max_connections=1))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", h.server.port)
        await wait_for(lambda: h.server.connection_count == 1, 5)
        r2, w2 = await asyncio.open_connection("127.0.0.1", h.server.port)
        assert await asyncio.wait_for(r2.read(), 5) == b""  # over the limit: closed at once
        w2.close()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # silent: closed by the timeout
        writer.close()
        assert h.server.connections_refused == 1
    finally:
        await h.server.close()


async def test_denied_key_gets_unauthorized(ffmpeg: str, clip: Path) -> None:
    registry = StreamRegistry()
    server = RtmpServer(registry, StaticKeyChecks({"secret": "public"}), RtmpLimits())
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        peer = Peer()
        writer.write(C0C1)
        s = await reader.readexactly(3073)
        peer.replies(s)
        writer.write(c2_for(s) + _raw_connect(peer) + peer.command("createStream", 2, None)
                     + peer.command("publish", 3, None, "wrong", "live", stream_id=1))
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        statuses = [amf0.decode(x.payload) for x in peer.replies(data) if x.type_id == m.COMMAND_AMF0]
        last = statuses[-1]
        assert last[0] == "onStatus" and isinstance(last[3], dict)
        assert last[3]["code"] == "NetStream.Publish.Unauthorized"
        # The right key publishes under its public name, never under the key.
        rc, err = await finish(await publish(ffmpeg, clip, f"rtmp://127.0.0.1:{server.port}/live/secret",
                                             realtime=False))
        assert rc == 0, err
        assert registry.get("public") is not None and registry.get("secret") is None
    finally:
        await server.close()
        registry.close()


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


async def test_rtmps_publish(tmp_path: Path, ffmpeg: str, ffprobe: str, clip: Path) -> None:
    h = await make_harness(ssl_context=_self_signed(tmp_path))
    try:
        assert h.server.protocol == "rtmps"
        rc, err = await finish(await publish(ffmpeg, clip, h.url("tls", "rtmps"), realtime=False))
        assert rc == 0, err
        expected = probe_packets(ffprobe, clip)
        await wait_for(lambda: len(h.packets("tls")) == len(expected["video"]) + len(expected["audio"]), 10)
        assert h.server.publishes_started == 1
    finally:
        await h.server.close()
        h.registry.close()


async def test_digest_handshake_satisfies_a_checking_player(harness: Harness, ffmpeg: str) -> None:
    # ffmpeg checks the server's S1 digest and S2 signature when it plays.
    # We do not serve playback, so it must get past the handshake and then
    # fail on our NetStream.Play.Failed.
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostdin", "-i", harness.url("nothing"), "-f", "null", "-",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    rc, err = await finish(proc)
    assert rc != 0
    assert "validating failed" not in err and "Handshake" not in err
    assert "NetStream.Play.Failed" in err or "this server does not play" in err, err


async def test_unauthorized_peers_cannot_make_the_server_hold_large_messages(harness: Harness) -> None:
    """An unauthenticated connection announcing a 4 MiB message (allowed once
    a publish is accepted) is closed at once instead of being buffered."""
    peer = Peer()
    payload = _raw_connect(peer) + peer.set_chunk_size(1 << 16)
    payload += peer.message(m.DATA_AMF0, b"\x05" * (4 << 20), 0, csid=5)[: 256 << 10]
    before = harness.server.protocol_errors
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.server.port)
    writer.write(C0C1)
    s = await reader.readexactly(3073)
    writer.write(c2_for(s) + payload)
    # The server closes while our bytes are still in flight: EOF or a reset.
    with contextlib.suppress(ConnectionResetError):
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await wait_for(lambda: harness.server.protocol_errors == before + 1, 10)
    assert harness.server.connection_count == 0


async def _publish_status(port: int, key: str) -> dict[str, object]:
    """Publish ``key`` to app ``live`` byte by byte; the server's last
    ``onStatus`` info object."""
    peer = Peer()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(C0C1)
    s = await reader.readexactly(3073)
    peer.replies(s)
    writer.write(c2_for(s) + _raw_connect(peer) + peer.command("createStream", 2, None)
                 + peer.command("publish", 3, None, key, "live", stream_id=1))
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    statuses = [amf0.decode(x.payload) for x in peer.replies(data) if x.type_id == m.COMMAND_AMF0]
    last = statuses[-1]
    assert last[0] == "onStatus" and isinstance(last[3], dict)
    return last[3]


@pytest.mark.parametrize("key", ["victim/evil", "a.b", "x" * 65, "line\n", "../etc", "caf\u00e9", " pad"])
async def test_stream_names_outside_the_charset_are_refused(
    harness: Harness, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    info = await _publish_status(harness.server.port, key)
    assert info["code"] == "NetStream.Publish.BadName"
    assert "is not allowed" in str(info["description"]) and "A-Z" in str(info["description"])
    assert harness.registry.streams() == ()
    assert harness.server.publishes_refused == 1
    assert any("publish refused" in r.getMessage() and "is not allowed" in r.getMessage() for r in caplog.records)


async def test_slash_in_a_key_cannot_reach_another_stream(
    harness: Harness, ffmpeg: str, clip: Path, media_dir: Path
) -> None:
    """Tried as OBS sends it (server rtmp://HOST/live, key victim/evil):
    refused while victim is live, and victim is not touched."""
    long_clip = make_clip(ffmpeg, media_dir / "rtmp_ingest_6s.flv", seconds=6, size="320x180", gop_seconds=1)
    victim = await publish(ffmpeg, long_clip, harness.url("victim"))
    await wait_for(lambda: len(harness.packets("victim")) > 0, 20)
    intruder = await publish(
        ffmpeg, clip, harness.url("ignored"), extra=["-rtmp_app", "live", "-rtmp_playpath", "victim/evil"]
    )
    rc, err = await finish(intruder)
    assert rc != 0
    assert "is not allowed" in err  # ffmpeg prints the server's description
    assert [s.name for s in harness.registry.streams()] == ["victim"]
    rc, err = await finish(victim)
    assert rc == 0, err
    items = harness.collect("victim")
    assert [type(i) for i in items if not isinstance(i, Packet)] == [StreamStarted]
    assert harness.server.publishes_refused == 1 and harness.server.publishes_started == 1


async def test_a_publishing_connection_answers_and_closes_from_the_direct_path(harness: Harness) -> None:
    """Once publishing, bytes reach the session from the transport callback:
    frames still reach the stream in order, a ping is still answered, and a
    request the session ends the connection for (play) still closes it with
    its reason, through the connection's task."""
    from tests.ingest.rtmp_test_peer import aac_config_body, aac_frame_body, avc_config_body, avc_frame_body

    peer = Peer()
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.server.port)
    try:
        writer.write(C0C1)
        s = await reader.readexactly(3073)
        peer.handshaken = True  # replies() parses what follows S2
        writer.write(c2_for(s) + b"".join([
            _raw_connect(peer),
            peer.command("createStream", 2, None),
            peer.command("publish", 3, None, "direct", "live", stream_id=1),
        ]))
        await wait_for(lambda: harness.registry.get("direct") is not None, 10)
        writer.write(peer.video(avc_config_body(), 0) + peer.audio(aac_config_body(), 0))
        for i in range(30):
            writer.write(peer.video(avc_frame_body(i % 10 == 0, 0), i * 33) + peer.audio(aac_frame_body(), i * 21))
            await writer.drain()
            await asyncio.sleep(0.005)
        await wait_for(lambda: len(harness.packets("direct")) == 60, 10)
        assert [p.dts for p in harness.packets("direct") if p.track == 0] == [i * 33 for i in range(30)]

        writer.write(peer.message(m.USER_CONTROL, struct.pack(">HI", m.UC_PING_REQUEST, 1234), csid=2))
        replies: list[RtmpMessage] = []

        async def pong() -> None:
            while not any(r.type_id == m.USER_CONTROL and r.payload[:2] == struct.pack(">H", m.UC_PING_RESPONSE)
                          for r in replies):
                replies.extend(peer.replies(await reader.read(4096)))

        await asyncio.wait_for(pong(), 10)
        writer.write(peer.command("play", 5, None, "x", stream_id=1))
        rest = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        assert b"NetStream.Play.Failed" in rest
    finally:
        writer.close()
    await wait_for(lambda: harness.server.connection_count == 0, 10)
