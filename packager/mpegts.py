"""MPEG-TS segment writing for HLS (ISO/IEC 13818-1, RFC 8216 §3.2).

:class:`TsWriter` turns the engine's packets into 188-byte transport
packets. Each segment starts with a PAT and a PMT so that it decodes on its
own; continuity counters run on across segments so that a player reading
them back to back sees one unbroken stream. H.264/HEVC are rewritten from
length-prefixed NAL units to Annex B with an access unit delimiter, and the
parameter sets are repeated before every keyframe that lacks them (the
engine keeps them out of band in the track's record). AAC is framed with
ADTS. Timestamps are rescaled exactly to 90 kHz.

With ``sample_aes`` the writer produces HLS SAMPLE-AES streams (see
:mod:`packager.sample_aes`): H.264 slices and AAC frames are partly
encrypted with the key and IV given to :meth:`TsWriter.segment`, and the PMT
announces the encrypted stream types (0xDB, 0xCF) with their private data
indicator descriptors (``zavc``, ``aacd``) and, for audio, the audio setup
information in an ``apad`` registration descriptor.

PCR rides on the first video track's PID (on the first track's when there is
no video): every video PES carries one, and when other tracks' packets
advance the clock by more than :attr:`TsWriter.pcr_interval` without a video
PES, a PCR-only packet is sent. The PCR runs ``pcr_lead`` behind the decode
time (never below 0) so that each PES arrives before it must be decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from engine.codecs import CodecError, adts_header, describe_track, iter_avcc, nal_length_size, parameter_sets
from engine.media import Codec, MediaKind, Packet, Track, rescale
from packager.errors import PackagerError
from packager.sample_aes import encrypt_aac_frame, encrypt_nal

TS_PACKET_SIZE = 188
_PAYLOAD_SIZE = 184
_SYNC = 0x47
PAT_PID = 0x0000
DEFAULT_PMT_PID = 0x1000
DEFAULT_FIRST_PID = 0x0100
_PROGRAM_NUMBER = 1
_TS_CLOCK = Fraction(1, 90000)
_CLOCK_MASK = (1 << 33) - 1

_STREAM_TYPES = {Codec.H264: 0x1B, Codec.HEVC: 0x24, Codec.AAC: 0x0F}
_SAMPLE_AES_TYPES = {Codec.H264: 0xDB, Codec.AAC: 0xCF}
_PRIVATE_DATA_INDICATOR = 0x0F
_REGISTRATION = 0x05
_AAC_AUDIO_TYPES = {5: b"zach", 29: b"zacp"}  # AudioSpecificConfig object type; AAC-LC and others: zaac
_H264_AUD = b"\x09\xf0"  # primary_pic_type 7: any slice type
_HEVC_AUD = b"\x46\x01\x50"  # nal type 35, pic_type 2: any slice type
_SPS_TYPES = {Codec.H264: 7, Codec.HEVC: 33}
_AUD_TYPES = {Codec.H264: 9, Codec.HEVC: 35}


class TsError(PackagerError):
    """Base of every error raised by :mod:`packager.mpegts`."""


class TsUsageError(TsError, ValueError):
    """The caller passed packets the writer cannot write."""


class TsTrackError(TsError, ValueError):
    """A track cannot be carried in MPEG-TS (codec or record unusable);
    ``__cause__`` holds the codec error when there is one."""


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (polynomial 0x04C11DB7, no reflection, no final xor),
    as PSI sections end with."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else c << 1
        table.append(c & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


@dataclass(frozen=True, slots=True)
class _Stream:
    track: Track
    pid: int
    stream_type: int
    stream_id: int
    length_size: int
    parameter_sets: bytes
    descriptors: bytes = b""


def _section(table_id: int, table_id_ext: int, body: bytes) -> bytes:
    """A long-form PSI section (syntax indicator set, version 0, current)."""
    length = 5 + len(body) + 4
    head = struct.pack(">BHHBBB", table_id, 0xB000 | length, table_id_ext, 0xC1, 0, 0)
    section = head + body
    return section + struct.pack(">I", crc32_mpeg2(section))


def _descriptor(tag: int, body: bytes) -> bytes:
    return bytes((tag, len(body))) + body


def _aac_sample_aes_descriptors(config: bytes) -> bytes:
    """The PMT descriptors of a SAMPLE-AES AAC stream: the private data
    indicator ``aacd`` and the audio setup information (audio type, priming,
    version, the AudioSpecificConfig) in an ``apad`` registration."""
    object_type = config[0] >> 3 if config else 2
    audio_type = _AAC_AUDIO_TYPES.get(object_type, b"zaac")
    setup = audio_type + struct.pack(">HBB", 0, 0, len(config)) + config
    return _descriptor(_PRIVATE_DATA_INDICATOR, b"aacd") + _descriptor(_REGISTRATION, b"apad" + setup)


def _timestamp(prefix: int, value: int) -> bytes:
    """A 33-bit PES timestamp in its 5-byte marker-bit layout."""
    v = value & _CLOCK_MASK
    return bytes((
        (prefix << 4) | ((v >> 29) & 0x0E) | 1,
        (v >> 22) & 0xFF,
        ((v >> 14) & 0xFE) | 1,
        (v >> 7) & 0xFF,
        ((v << 1) & 0xFE) | 1,
    ))


def _pcr_field(base: int) -> bytes:
    base &= _CLOCK_MASK
    return struct.pack(">IH", base >> 1, ((base & 1) << 15) | 0x7E00)


class TsWriter:
    """Writes HLS MPEG-TS segments for ``tracks`` (H.264/HEVC video, AAC).

    Elementary stream PIDs are ``first_pid`` plus the track's position.
    """

    #: Longest stream time between PCRs when other tracks' packets arrive.
    pcr_interval = Fraction(40, 1000)

    def __init__(
        self,
        tracks: Sequence[Track],
        *,
        pmt_pid: int = DEFAULT_PMT_PID,
        first_pid: int = DEFAULT_FIRST_PID,
        pcr_lead: Fraction = Fraction(1, 10),
        sample_aes: bool = False,
    ) -> None:
        if not tracks:
            raise TsUsageError("a TS writer needs at least one track")
        if not 0x10 <= pmt_pid < 0x1FFF or not 0x10 <= first_pid < 0x1FFF - len(tracks):
            raise TsUsageError("PIDs must lie between 0x0010 and 0x1FFE")
        if first_pid <= pmt_pid < first_pid + len(tracks):
            raise TsUsageError("the PMT PID collides with an elementary stream PID")
        self._pmt_pid = pmt_pid
        self.sample_aes = sample_aes
        self._pcr_lead = rescale(1, pcr_lead, _TS_CLOCK)
        self._pcr_step = rescale(1, self.pcr_interval, _TS_CLOCK)
        self._streams: dict[int, _Stream] = {}
        for position, track in enumerate(tracks):
            if track.index in self._streams:
                raise TsUsageError(f"two tracks have index {track.index}")
            self._streams[track.index] = self._stream(track, first_pid + position, sample_aes)
        video = [s for s in self._streams.values() if s.track.kind is MediaKind.VIDEO]
        self._pcr_pid = (video or list(self._streams.values()))[0].pid
        self._cc: dict[int, int] = {}
        self._key: tuple[bytes, bytes] | None = None
        self._last_pcr: int | None = None
        self._psi = self._pat_pmt_sections()

    @staticmethod
    def _stream(track: Track, pid: int, sample_aes: bool) -> _Stream:
        stream_type = (_SAMPLE_AES_TYPES if sample_aes else _STREAM_TYPES).get(track.codec)
        if stream_type is None:
            scheme = " with SAMPLE-AES" if sample_aes else ""
            raise TsTrackError(f"track {track.index}: {track.codec.value} is not carried in MPEG-TS{scheme} here")
        try:
            track = describe_track(track)
            if track.codec is Codec.AAC:
                adts_header(track.extradata, 0)  # fails now, not per packet, if ADTS cannot express it
                descriptors = _aac_sample_aes_descriptors(track.extradata) if sample_aes else b""
                return _Stream(track, pid, stream_type, 0xC0, 0, b"", descriptors)
            sets = b"".join(b"\x00\x00\x00\x01" + nal for nal in parameter_sets(track))
            descriptors = _descriptor(_PRIVATE_DATA_INDICATOR, b"zavc") if sample_aes else b""
            return _Stream(track, pid, stream_type, 0xE0, nal_length_size(track), sets, descriptors)
        except CodecError as exc:
            raise TsTrackError(f"track {track.index} ({track.codec.value}): {exc}") from exc

    @property
    def pids(self) -> dict[int, int]:
        """Elementary stream PID by :attr:`Track.index`."""
        return {index: s.pid for index, s in self._streams.items()}

    def _pat_pmt_sections(self) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        pat = _section(0x00, 1, struct.pack(">HH", _PROGRAM_NUMBER, 0xE000 | self._pmt_pid))
        entries = b"".join(
            struct.pack(">BHH", s.stream_type, 0xE000 | s.pid, 0xF000 | len(s.descriptors)) + s.descriptors
            for s in self._streams.values()
        )
        pmt = _section(0x02, _PROGRAM_NUMBER, struct.pack(">HH", 0xE000 | self._pcr_pid, 0xF000) + entries)
        return (PAT_PID, pat), (self._pmt_pid, pmt)

    def segment(self, packets: Sequence[Packet], key: tuple[bytes, bytes] | None = None) -> bytes:
        """One segment: PAT, PMT, then a PES per packet, in the given order
        (the caller interleaves tracks by decode time). ``key`` is the
        ``(key, iv)`` of a SAMPLE-AES writer's segment, which it requires."""
        if self.sample_aes != (key is not None):
            raise TsUsageError("a SAMPLE-AES writer needs a key per segment, and only it takes one")
        self._key = key
        out = bytearray()
        for pid, section in self._psi:
            out += self._packetize(pid, b"\x00" + section, random_access=False, pcr=None, fill=True)
        for packet in packets:
            stream = self._streams.get(packet.track)
            if stream is None:
                raise TsUsageError(f"this writer holds no track with index {packet.track}")
            out += self._write_packet(stream, packet)
        return bytes(out)

    def _write_packet(self, stream: _Stream, packet: Packet) -> bytes:
        dts = rescale(packet.dts, packet.time_base, _TS_CLOCK)
        pts = rescale(packet.pts, packet.time_base, _TS_CLOCK)
        out = bytearray()
        clock = max(0, dts - self._pcr_lead)
        if self._last_pcr is not None:
            clock = max(clock, self._last_pcr)
        pcr = None
        if stream.pid == self._pcr_pid:
            pcr = clock
            self._last_pcr = clock
        elif self._last_pcr is None or clock - self._last_pcr >= self._pcr_step:
            out += self._pcr_only(clock)
            self._last_pcr = clock
        pes = self._pes(stream, packet, pts, dts)
        out += self._packetize(stream.pid, pes, random_access=packet.keyframe, pcr=pcr, fill=False)
        return bytes(out)

    def _pes(self, stream: _Stream, packet: Packet, pts: int, dts: int) -> bytes:
        if stream.stream_id == 0xC0:
            frame = packet.data
            if self._key is not None:
                frame = encrypt_aac_frame(self._key[0], self._key[1], frame)
            try:
                payload = adts_header(stream.track.extradata, len(frame)) + frame
            except CodecError as exc:
                raise TsUsageError(f"track {packet.track}: {exc}") from exc
        else:
            payload = self._annexb(stream, packet, self._key)
        if pts == dts:
            header = _timestamp(0b0010, pts)
            flags = 0x80
        else:
            header = _timestamp(0b0011, pts) + _timestamp(0b0001, dts)
            flags = 0xC0
        length = 3 + len(header) + len(payload)
        if length > 0xFFFF:
            if stream.stream_id == 0xC0:
                raise TsUsageError(f"track {packet.track}: audio packet of {len(payload)} bytes exceeds a PES")
            length = 0  # unbounded, allowed for video only
        return struct.pack(">3sBHBBB", b"\x00\x00\x01", stream.stream_id, length, 0x84, flags, len(header)) \
            + header + payload

    @staticmethod
    def _annexb(stream: _Stream, packet: Packet, key: tuple[bytes, bytes] | None) -> bytes:
        codec = stream.track.codec
        try:
            nals = list(iter_avcc(packet.data, stream.length_size))
        except CodecError as exc:
            raise TsUsageError(f"track {packet.track}: {exc}") from exc
        types = [(n[0] & 0x1F) if codec is Codec.H264 else (n[0] >> 1) & 0x3F for n in nals]
        out = bytearray()
        if not types or types[0] != _AUD_TYPES[codec]:
            out += b"\x00\x00\x00\x01" + (_H264_AUD if codec is Codec.H264 else _HEVC_AUD)
        if packet.keyframe and _SPS_TYPES[codec] not in types:
            out += stream.parameter_sets
        for nal in nals:
            out += b"\x00\x00\x00\x01" + (encrypt_nal(key[0], key[1], nal) if key is not None else nal)
        return bytes(out)

    def _next_cc(self, pid: int) -> int:
        cc = self._cc.get(pid, 0)
        self._cc[pid] = (cc + 1) & 0x0F
        return cc

    def _pcr_only(self, clock: int) -> bytes:
        """An adaptation-field-only packet on the PCR PID (its continuity
        counter does not advance: the packet has no payload)."""
        cc = (self._cc.get(self._pcr_pid, 0) - 1) & 0x0F
        field = bytes((0x10,)) + _pcr_field(clock)
        header = struct.pack(">BHB", _SYNC, self._pcr_pid, 0x20 | cc)
        return header + bytes((183,)) + field + b"\xff" * (183 - len(field))

    def _packetize(self, pid: int, data: bytes, *, random_access: bool, pcr: int | None, fill: bool) -> bytes:
        """Split ``data`` (a PES, or a pointer field and a PSI section) into
        transport packets; the first carries payload_unit_start. Short last
        packets are padded with adaptation-field stuffing, or with 0xFF
        after the section when ``fill`` (PSI) is set."""
        out = bytearray()
        pos = 0
        first = True
        while first or pos < len(data):
            field = b""
            if first:
                flags = (0x40 if random_access else 0) | (0x10 if pcr is not None else 0)
                if flags:
                    field = bytes((flags,)) + (_pcr_field(pcr) if pcr is not None else b"")
            room = _PAYLOAD_SIZE - (1 + len(field) if field else 0)
            chunk = data[pos : pos + room]
            pos += len(chunk)
            stuffing = room - len(chunk)
            if stuffing and not fill:
                if field:
                    field += b"\xff" * stuffing
                    adaptation = bytes((len(field),)) + field
                elif stuffing == 1:
                    adaptation = b"\x00"  # the length byte alone fills the gap
                else:
                    adaptation = bytes((stuffing - 1, 0x00)) + b"\xff" * (stuffing - 2)
            elif field:
                adaptation = bytes((len(field),)) + field
            else:
                adaptation = b""
            if fill and len(chunk) < _PAYLOAD_SIZE - len(adaptation):
                chunk += b"\xff" * (_PAYLOAD_SIZE - len(adaptation) - len(chunk))
            control = 0x30 if adaptation else 0x10
            header = struct.pack(">BHB", _SYNC, (0x4000 if first else 0) | pid, control | self._next_cc(pid))
            packet = header + adaptation + chunk
            if len(packet) != TS_PACKET_SIZE:
                raise AssertionError(f"TS packet of {len(packet)} bytes")  # a bug here, not bad input
            out += packet
            first = False
        return bytes(out)
