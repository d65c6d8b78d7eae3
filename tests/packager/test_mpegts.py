"""The MPEG-TS segment writer against real encodes, plus a structural check
of what it writes (PSI, continuity counters, PCR, random access, Annex B)."""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import pytest

from engine.codecs import split_annexb
from engine.media import Codec, MediaKind, Packet, Track, rescale
from packager.mpegts import TS_PACKET_SIZE, TsTrackError, TsUsageError, TsWriter, crc32_mpeg2
from tests.packager.test_fmp4 import decoded_frames, demux, probe, split_at_keyframes

TS_CLOCK = Fraction(1, 90000)


@pytest.fixture(scope="session")
def hevc_aac_ts_source(ffmpeg: str, media_dir: Path) -> Path:
    from tests.conftest import make_clip

    return make_clip(ffmpeg, media_dir / "hevc_aac_ts.mp4", seconds=2, size="320x240", rate=25, gop_seconds=1,
                     video_codec="libx265", extra=["-preset", "ultrafast", "-x265-params", "log-level=error"])


def write_segments(writer: TsWriter, groups: Sequence[Sequence[Packet]]) -> list[bytes]:
    return [writer.segment(g) for g in groups]


def parse_ts(data: bytes) -> list[dict[str, object]]:
    """Transport packets as dicts: pid, pusi, cc, has_payload, rai, pcr, payload."""
    assert len(data) % TS_PACKET_SIZE == 0
    out = []
    for pos in range(0, len(data), TS_PACKET_SIZE):
        pkt = data[pos : pos + TS_PACKET_SIZE]
        assert pkt[0] == 0x47
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        control = (pkt[3] >> 4) & 0x03
        body = 4
        rai = False
        pcr = None
        if control & 0x02:
            length = pkt[4]
            if length:
                flags = pkt[5]
                rai = bool(flags & 0x40)
                if flags & 0x10:
                    base = (int.from_bytes(pkt[6:10], "big") << 1) | (pkt[10] >> 7)
                    pcr = base
            body = 5 + length
        assert body <= TS_PACKET_SIZE
        out.append({"pid": pid, "pusi": bool(pkt[1] & 0x40), "cc": pkt[3] & 0x0F, "has_payload": bool(control & 1),
                    "rai": rai, "pcr": pcr, "payload": pkt[body:] if control & 1 else b""})
    return out


def check_structure(writer: TsWriter, tracks: Sequence[Track], groups: Sequence[Sequence[Packet]],
                    segments: Sequence[bytes]) -> None:
    pids = writer.pids
    video_pids = {pids[t.index] for t in tracks if t.kind is MediaKind.VIDEO}
    pcr_pid = min(video_pids) if video_pids else pids[tracks[0].index]
    last_cc: dict[int, int] = {}
    last_pcr = None
    for group, segment in zip(groups, segments, strict=True):
        packets = parse_ts(segment)
        # PAT then PMT open every segment, with valid CRCs.
        assert packets[0]["pid"] == 0 and packets[0]["pusi"]
        assert packets[1]["pid"] == 0x1000 and packets[1]["pusi"]
        for psi in packets[:2]:
            payload = psi["payload"]
            assert isinstance(payload, bytes)
            section = payload[1 : 1 + 3 + (((payload[2] & 0x0F) << 8) | payload[3])]
            assert crc32_mpeg2(section) == 0  # the CRC makes the whole section's CRC zero
        pes_starts = []
        pes: dict[int, bytearray] = {}
        for p in packets:
            pid = int(str(p["pid"]))
            if p["has_payload"]:
                if pid in last_cc:
                    assert p["cc"] == (last_cc[pid] + 1) & 0x0F, f"CC jump on PID {pid:#x}"
                last_cc[pid] = int(str(p["cc"]))
            if p["pcr"] is not None:
                assert pid == pcr_pid
                pcr = int(str(p["pcr"]))
                assert last_pcr is None or pcr >= last_pcr
                last_pcr = pcr
            if p["pusi"] and pid not in (0, 0x1000):
                pes_starts.append(p)
                pes[len(pes_starts) - 1] = bytearray()
            if pid not in (0, 0x1000) and p["has_payload"]:
                pes[len(pes_starts) - 1] += p["payload"]  # type: ignore[operator]
        assert len(pes_starts) == len(group)
        for index, (packet, start) in enumerate(zip(group, pes_starts, strict=True)):
            track = next(t for t in tracks if t.index == packet.track)
            assert start["pid"] == pids[packet.track]
            assert start["rai"] == packet.keyframe
            body = bytes(pes[index])
            assert body[:3] == b"\x00\x00\x01"
            flags = body[7] >> 6
            pts_field = body[9:14]
            pts = (((pts_field[0] >> 1) & 0x07) << 30) | ((int.from_bytes(pts_field[1:3], "big") >> 1) << 15) \
                | (int.from_bytes(pts_field[3:5], "big") >> 1)
            assert pts == rescale(packet.pts, packet.time_base, TS_CLOCK)
            assert flags == (2 if packet.pts == packet.dts else 3)
            es = body[9 + body[8] :]
            if track.codec is Codec.AAC:
                assert es[:2] == b"\xff\xf1" and len(es) == len(packet.data) + 7
                continue
            nals = split_annexb(es)
            types = [(n[0] & 0x1F) if track.codec is Codec.H264 else (n[0] >> 1) & 0x3F for n in nals]
            assert types[0] == (9 if track.codec is Codec.H264 else 35)
            if packet.keyframe:
                assert (7 if track.codec is Codec.H264 else 33) in types


def pcr_gaps(data: bytes) -> list[int]:
    values = [int(str(p["pcr"])) for p in parse_ts(data) if p["pcr"] is not None]
    return [b - a for a, b in itertools.pairwise(values)]


@pytest.fixture(params=["h264_aac_mp4", "hevc_aac_ts_source"])
def source(request: pytest.FixtureRequest) -> Path:
    path: Path = request.getfixturevalue(request.param)
    return path


def test_segments_read_back_frame_for_frame(source: Path, ffprobe: str, tmp_path: Path) -> None:
    tracks, packets = demux(source)
    writer = TsWriter(tracks)
    groups = split_at_keyframes(tracks, packets)
    segments = write_segments(writer, groups)
    check_structure(writer, tracks, groups, segments)
    data = b"".join(segments)
    out = tmp_path / "out.ts"
    out.write_bytes(data)

    for position, (stream, want) in enumerate(zip(probe(ffprobe, out), probe(ffprobe, source), strict=True)):
        assert stream["codec_name"] == want["codec_name"]
        assert int(str(stream["nb_read_frames"])) == sum(1 for p in packets if p.track == tracks[position].index)
        if "width" in want:
            assert (stream["width"], stream["height"]) == (want["width"], want["height"])

    got: dict[int, list[int]] = {}
    keys: dict[int, list[int]] = {}
    with av.open(io.BytesIO(data), format="mpegts") as container:
        for p in container.demux():
            if p.size == 0:
                continue
            assert p.time_base == TS_CLOCK
            got.setdefault(p.stream.index, []).append(p.pts)
            if p.is_keyframe:
                keys.setdefault(p.stream.index, []).append(p.pts)
    for position, track in enumerate(tracks):
        mine = [p for p in packets if p.track == track.index]
        assert got[position] == [rescale(p.pts, p.time_base, TS_CLOCK) for p in mine]
        if track.kind is MediaKind.VIDEO:
            assert keys[position] == [rescale(p.pts, p.time_base, TS_CLOCK) for p in mine if p.keyframe]
    counts = decoded_frames(data)
    assert counts == {i: sum(1 for p in packets if p.track == t.index) for i, t in enumerate(tracks)}

    # PCR at least every 40 ms of stream time (plus one video frame of slack).
    assert max(pcr_gaps(data)) <= 3600 + 3600

    # Every segment decodes on its own.
    assert decoded_frames(segments[1])[0] == sum(1 for p in groups[1] if p.track == tracks[0].index)


def test_audio_only_and_pcr_on_audio(h264_aac_mp4: Path) -> None:
    tracks, packets = demux(h264_aac_mp4)
    audio = [t for t in tracks if t.kind is MediaKind.AUDIO]
    mine = [p for p in packets if p.track == audio[0].index]
    writer = TsWriter(audio)
    segments = write_segments(writer, [mine[:50], mine[50:]])
    check_structure(writer, audio, [mine[:50], mine[50:]], segments)
    data = b"".join(segments)
    assert max(pcr_gaps(data)) <= 2000  # one PCR per AAC frame (about 21 ms)
    assert decoded_frames(data) == {0: len(mine)}


def test_pcr_only_packets_fill_long_video_gaps(h264_aac_mp4: Path) -> None:
    """Audio keeps the clock going when video frames are far apart."""
    ms = Fraction(1, 1000)
    video = demux(h264_aac_mp4)[0][0].with_changes(time_base=ms)
    audio = Track(1, Codec.AAC, ms, bytes((0x11, 0x90)))
    frame = b"\x00\x00\x00\x03\x65\x88\x80"
    packets = [Packet(0, 0, 0, ms, frame, True)]
    packets += [Packet(1, t, t, ms, b"\x21\x00", True) for t in range(0, 500, 21)]
    packets.append(Packet(0, 500, 500, ms, frame, True))
    writer = TsWriter([video, audio])
    data = writer.segment(packets)
    assert max(pcr_gaps(data)) <= 3600 + 21 * 90


def test_continuity_counters_wrap_across_segments(h264_aac_mp4: Path) -> None:
    tracks, packets = demux(h264_aac_mp4)
    writer = TsWriter(tracks)
    groups = [packets[i : i + 3] for i in range(0, 120, 3)]
    segments = write_segments(writer, groups)
    check_structure(writer, tracks, groups, segments)
    assert len(segments) > 16  # PAT/PMT counters wrapped at least once


def test_misuse_is_reported() -> None:
    with pytest.raises(TsTrackError):
        TsWriter([Track(0, Codec.OPUS, Fraction(1, 48000))])
    with pytest.raises(TsTrackError):
        TsWriter([Track(0, Codec.AAC, Fraction(1, 48000), b"\x00")])
    with pytest.raises(TsUsageError):
        TsWriter([])
    writer = TsWriter([Track(0, Codec.AAC, Fraction(1, 48000), bytes((0x11, 0x90)))])
    with pytest.raises(TsUsageError, match="no track"):
        writer.segment([Packet(4, 0, 0, Fraction(1, 48000), b"x")])
    with pytest.raises(TsUsageError):
        writer.segment([Packet(0, 0, 0, Fraction(1, 48000), bytes(9000))])
    video = TsWriter([Track(0, Codec.H264, Fraction(1, 90000), bytes((1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0)))])
    with pytest.raises(TsUsageError):
        video.segment([Packet(0, 0, 0, Fraction(1, 90000), b"\x00\x00\x00\x09\x65", True)])


def test_crc_known_vector() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7
    assert struct.pack(">I", crc32_mpeg2(b"")) == b"\xff\xff\xff\xff"
