"""SAMPLE-AES for MPEG-TS, checked against a decryptor written here from the
format's description (the way ffmpeg and hls.js read it): remove one level of
emulation prevention, decrypt one block in ten from byte 32 of each slice NAL
unit, the IV reset per NAL unit; for AAC, whole blocks after 16 clear bytes.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codecs import split_annexb
from engine.media import Codec, MediaKind, Packet
from packager.mpegts import TsWriter
from packager.sample_aes import encrypt_aac_frame, encrypt_nal, escape, unescape
from tests.packager.test_fmp4 import demux
from tests.packager.test_mpegts import parse_ts

KEY = bytes(range(16))
IV = bytes(range(16, 32))


def _decrypt_blocks(data: bytes, key: bytes, iv: bytes) -> bytes:
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return d.update(data) + d.finalize()


def independent_decrypt_nal(nal: bytes, key: bytes, iv: bytes) -> bytes:
    if len(nal) <= 48 or nal[0] & 0x1F not in (1, 5):
        return nal
    data = bytearray(unescape_reference(nal))
    pos, remaining = 32, len(data) - 32
    chain = iv
    while remaining > 0:
        if remaining > 16:
            block = bytes(data[pos : pos + 16])
            data[pos : pos + 16] = _decrypt_blocks(block, key, chain)
            chain = block
            pos += 16
            remaining -= 16
        step = min(144, remaining)
        pos += step
        remaining -= step
    return bytes(data)


def unescape_reference(data: bytes) -> bytes:
    """Drop every 0x03 that follows two zero bytes of the output."""
    out = bytearray()
    zeros = 0
    for b in data:
        if zeros == 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = min(zeros + 1, 2) if b == 0 else 0
    return bytes(out)


def independent_decrypt_aac(frame: bytes, key: bytes, iv: bytes) -> bytes:
    if len(frame) <= 16:
        return frame
    end = len(frame) - len(frame) % 16
    return frame[:16] + _decrypt_blocks(frame[16:end], key, iv) + frame[end:]


# NAL bodies rich in zero bytes and small values, so that emulation
# prevention happens often, in clear and in encrypted ranges.
nal_bodies = st.lists(st.sampled_from([0, 0, 0, 0, 1, 2, 3, 0x42, 0xFF]), max_size=700).map(bytes)


@settings(max_examples=300, deadline=None)
@given(nal_type=st.sampled_from([1, 5, 6, 7, 8, 9]), body=nal_bodies,
       key=st.binary(min_size=16, max_size=16), iv=st.binary(min_size=16, max_size=16))
def test_nal_round_trip_through_an_independent_decryptor(nal_type: int, body: bytes, key: bytes, iv: bytes) -> None:
    original = escape(bytes([0x60 | nal_type]) + body)  # a NAL unit as an encoder writes it
    carried = encrypt_nal(key, iv, original)
    assert independent_decrypt_nal(carried, key, iv) == original
    # What is carried never holds a start code, whatever the ciphertext.
    for code in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
        assert code not in carried
    if not original.endswith(b"\x00"):  # encoders end NAL units with a stop bit
        assert not carried.endswith(b"\x00")
    if nal_type not in (1, 5) or len(original) <= 48:
        assert carried == original
    else:
        assert unescape(carried)[:32] == original[:32]  # the slice header stays clear


@settings(max_examples=100, deadline=None)
@given(body=st.binary(min_size=48, max_size=400))
def test_slices_are_encrypted_one_block_in_ten(body: bytes) -> None:
    nal = bytes([0x65]) + body.replace(b"\x00", b"\x01")  # no emulation prevention at all
    carried = unescape(encrypt_nal(KEY, IV, nal))
    assert len(carried) == len(nal)
    changed = {i // 16 for i in range(32, len(nal)) if carried[i] != nal[i]}
    expected = {(32 + 160 * k) // 16 for k in range(len(nal)) if 32 + 160 * k + 16 < len(nal)}
    assert changed <= expected
    assert len(changed) >= len(expected) - 1  # a block may encrypt to itself only by chance
    assert carried[-1] == nal[-1]


def test_every_nal_length_around_the_limits() -> None:
    for length in range(1, 400):
        nal = bytes([0x41]) + bytes((7 * i + 5) % 251 + 4 for i in range(length - 1))
        carried = encrypt_nal(KEY, IV, nal)
        assert independent_decrypt_nal(carried, KEY, IV) == nal
        assert (carried != nal) == (length > 48), length


def test_escape_and_unescape_are_inverse_on_vectors() -> None:
    assert escape(b"\x00\x00\x01") == b"\x00\x00\x03\x01"
    assert escape(b"\x00\x00\x03") == b"\x00\x00\x03\x03"
    assert escape(b"\x00\x00\x00\x00") == b"\x00\x00\x03\x00\x00\x03"
    assert escape(b"\x00\x00\x04\x00\x00") == b"\x00\x00\x04\x00\x00\x03"
    for vector in (b"\x00\x00\x03\x03\x00\x00\x03", b"\x00\x00\x03\x00\x00\x03\x01"):
        assert escape(unescape(vector)) == vector


@given(st.binary(max_size=200))
def test_unescape_undoes_escape(data: bytes) -> None:
    assert unescape(escape(data)) == data
    assert unescape_reference(escape(data)) == data


def test_aac_frames_of_every_length() -> None:
    for length in range(0, 200):
        frame = bytes((3 * i + 1) % 256 for i in range(length))
        carried = encrypt_aac_frame(KEY, IV, frame)
        assert len(carried) == length
        assert independent_decrypt_aac(carried, KEY, IV) == frame
        whole_blocks = (length - 16) // 16 if length > 16 else 0
        assert carried[:16] == frame[:16]
        assert (carried != frame) == (whole_blocks > 0)
        assert carried[16 + 16 * whole_blocks :] == frame[16 + 16 * whole_blocks :]


def pmt_streams(segment: bytes) -> list[tuple[int, bytes]]:
    pmt = next(p for p in parse_ts(segment) if p["pid"] == 0x1000)
    payload = pmt["payload"]
    assert isinstance(payload, bytes)
    section = payload[1 + payload[0] :]
    length = ((section[1] & 0x0F) << 8) | section[2]
    body = section[3 : 3 + length - 4]
    info = ((body[7] & 0x0F) << 8) | body[8]
    pos = 9 + info
    out = []
    while pos < len(body):
        stream_type = body[pos]
        es_len = ((body[pos + 3] & 0x0F) << 8) | body[pos + 4]
        out.append((stream_type, body[pos + 5 : pos + 5 + es_len]))
        pos += 5 + es_len
    return out


def test_pmt_announces_encrypted_streams(h264_aac_mp4: Path) -> None:
    tracks, packets = demux(h264_aac_mp4)
    writer = TsWriter(tracks, sample_aes=True)
    segment = writer.segment(packets[:40], (KEY, IV))
    video, audio = pmt_streams(segment)
    assert video == (0xDB, b"\x0f\x04zavc")
    asc = next(t for t in tracks if t.codec is Codec.AAC).extradata
    assert audio[0] == 0xCF
    assert audio[1] == b"\x0f\x04aacd" + bytes([0x05, 8 + 4 + len(asc)]) + b"apad" + b"zaac\x00\x00\x00" \
        + bytes([len(asc)]) + asc
    clear = TsWriter(tracks).segment(packets[:40])
    assert [t for t, _ in pmt_streams(clear)] == [0x1B, 0x0F]


def test_slices_are_encrypted_in_the_pes_and_parameter_sets_are_not(h264_aac_mp4: Path) -> None:
    tracks, packets = demux(h264_aac_mp4)
    video = next(t for t in tracks if t.kind is MediaKind.VIDEO)
    first = [p for p in packets if p.track == video.index][:1]
    clear_pes = _pes_payload(TsWriter(tracks).segment(first), 0x100)
    crypt_pes = _pes_payload(TsWriter(tracks, sample_aes=True).segment(first, (KEY, IV)), 0x100)
    clear_nals, crypt_nals = split_annexb(clear_pes), split_annexb(crypt_pes)
    assert [n[0] for n in clear_nals] == [n[0] for n in crypt_nals]
    for clear, crypt in zip(clear_nals, crypt_nals, strict=True):
        if clear[0] & 0x1F in (1, 5) and len(clear) > 48:
            assert crypt != clear and independent_decrypt_nal(crypt, KEY, IV) == clear
        else:
            assert crypt == clear


def _pes_payload(segment: bytes, pid: int) -> bytes:
    data = b"".join(p["payload"] for p in parse_ts(segment) if p["pid"] == pid)  # type: ignore[misc]
    header_length = data[8]
    return data[9 + header_length :]


def test_a_sample_aes_writer_insists_on_a_key() -> None:
    import pytest

    from packager.mpegts import TsUsageError
    from tests.packager.test_segmenter import AUDIO

    writer = TsWriter((AUDIO,), sample_aes=True)
    with pytest.raises(TsUsageError):
        writer.segment([Packet(1, 0, 0, Fraction(1, 1000), b"a" * 40)])
    with pytest.raises(TsUsageError):
        TsWriter((AUDIO,)).segment([], (KEY, IV))
