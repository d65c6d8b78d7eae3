"""A minimal RTMP publishing client for driving the server session in tests.

It is built from the package's own chunk writer and reader (whose byte
layouts are pinned by the vector tests) plus hand-built handshake bytes, so
session tests read as conversations.
"""

from __future__ import annotations

import struct

from ingest.rtmp import amf0
from ingest.rtmp import messages as m
from ingest.rtmp.chunk import ChunkReader, ChunkWriter, RtmpMessage
from ingest.rtmp.limits import RtmpLimits
from ingest.rtmp.session import RtmpServerSession

C1 = struct.pack(">II", 0, 0) + bytes((i * 7 + 3) % 256 for i in range(1528))
C0C1 = b"\x03" + C1


def c2_for(s0s1s2: bytes) -> bytes:
    return s0s1s2[1:1537]


def avc_config_body() -> bytes:
    """A legacy FLV AVC sequence header with a tiny fake avcC record."""
    return bytes((0x17, 0, 0, 0, 0)) + b"\x01\x64\x00\x1e\xff\xe1\x00\x04\x67\x64\x00\x1e\x01\x00\x02\x68\xef"


def avc_frame_body(key: bool, cts: int, nal: bytes = b"\x65\x88") -> bytes:
    head = 0x17 if key else 0x27
    return bytes((head, 1)) + (cts & 0xFFFFFF).to_bytes(3, "big") + len(nal).to_bytes(4, "big") + nal


ASC_48K_STEREO = b"\x11\x90"


def aac_config_body(asc: bytes = ASC_48K_STEREO) -> bytes:
    return b"\xaf\x00" + asc


def aac_frame_body(payload: bytes = b"\x21\x10\x05") -> bytes:
    return b"\xaf\x01" + payload


class Peer:
    """Builds client bytes and parses the server's replies."""

    def __init__(self) -> None:
        self.writer = ChunkWriter()
        self.reader = ChunkReader(RtmpLimits())
        self.handshaken = False
        self._pending = b""

    def message(self, type_id: int, payload: bytes, stream_id: int = 0, ts: int = 0, csid: int = 3) -> bytes:
        return self.writer.write(RtmpMessage(type_id, stream_id, ts, payload, csid))

    def command(self, name: str, txn: float, *args: amf0.AmfValue, stream_id: int = 0) -> bytes:
        return self.message(m.COMMAND_AMF0, amf0.encode(name, txn, *args), stream_id, csid=8 if stream_id else 3)

    def video(self, body: bytes, ts: int, stream_id: int = 1) -> bytes:
        return self.message(m.VIDEO, body, stream_id, ts, csid=6)

    def audio(self, body: bytes, ts: int, stream_id: int = 1) -> bytes:
        return self.message(m.AUDIO, body, stream_id, ts, csid=4)

    def set_chunk_size(self, size: int) -> bytes:
        out = self.message(m.SET_CHUNK_SIZE, struct.pack(">I", size), csid=2)
        self.writer.set_chunk_size(size)
        return out

    def replies(self, data: bytes) -> list[RtmpMessage]:
        """Parse server output into messages, applying its Set Chunk Size."""
        data = self._pending + data
        self._pending = b""
        if not self.handshaken:
            if len(data) < 3073:
                self._pending = data
                return []
            data = data[3073:]
            self.handshaken = True
        self.reader.receive_data(data)
        out = []
        while (msg := self.reader.next_message()) is not None:
            if msg.type_id == m.SET_CHUNK_SIZE:
                self.reader.set_chunk_size(m.parse_u32(msg.payload, "chunk size"))
            out.append(msg)
        return out


def commands(messages: list[RtmpMessage]) -> list[list[amf0.AmfValue]]:
    return [amf0.decode(x.payload) for x in messages if x.type_id == m.COMMAND_AMF0]


def handshake(session: RtmpServerSession, peer: Peer) -> None:
    session.receive_data(C0C1)
    s = session.data_to_send()
    peer.replies(s)
    session.receive_data(c2_for(s))


def publish_until_requested(session: RtmpServerSession, peer: Peer, key: str = "KEY") -> list[RtmpMessage]:
    """Run a conversation up to the publish request; return every reply."""
    session.receive_data(C0C1)
    s = session.data_to_send()
    assert len(s) == 3073
    replies = peer.replies(s)
    session.receive_data(c2_for(s))
    session.receive_data(
        peer.command("connect", 1, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live", "flashVer": "FMLE/3.0"})
    )
    session.receive_data(peer.command("releaseStream", 2, None, key))
    session.receive_data(peer.command("FCPublish", 3, None, key))
    session.receive_data(peer.command("createStream", 4, None))
    session.receive_data(peer.command("publish", 5, None, key, "live", stream_id=1))
    replies += peer.replies(session.data_to_send())
    return replies
