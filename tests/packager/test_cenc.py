"""Common encryption in the fMP4 writer (``cbcs`` and ``cenc``).

Real clips from the ffmpeg CLI are remuxed through the writer clear and
encrypted; the encrypted output is decrypted by the plain reader of
:mod:`tests.packager.cenc_reader` and by FFmpeg (PyAV's mov demuxer with
``decryption_key``), and must give back the clear samples and frames.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drm.cenc import CencEncryption, SampleCipher, cenc_iv_index, cenc_lane, cenc_sample_iv
from drm.errors import SampleEncryptionError
from drm.model import ContentKey, DrmSystemData, KeyPeriod, Protection, SystemId
from drm.subsamples import Subsample
from engine.codecs import iter_avcc, join_avcc
from engine.codecs.hevc_slice import HevcSliceHeaders
from engine.codecs.slice_header import AvcSliceHeaders
from engine.media import Codec, MediaKind, Packet, Track
from packager.fmp4 import Fmp4TrackError, Fmp4UsageError, Fmp4Writer
from packager.fmp4.protection import TrackProtection, pssh, saio, saiz, senc, tenc
from tests.conftest import make_clip
from tests.packager.cenc_reader import (
    decrypt_sample,
    parse_fragment,
    parse_init,
    split_aux,
    walk,
)
from tests.packager.test_fmp4 import demux, split_at_keyframes, split_every

KEY = ContentKey(kid=bytes.fromhex("00112233445566778899aabbccddeeff"), key=bytes(range(16)),
                 iv=bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f"))
KEY2 = ContentKey(kid=bytes.fromhex("ffeeddccbbaa99887766554433221100"), key=bytes(range(16, 32)),
                  iv=bytes(range(100, 116)))
PERIOD = KeyPeriod("alice", 0, KEY)
WIDEVINE_PSSH = pssh(SystemId.WIDEVINE.value, data=b"\x12\x10" + KEY.kid)
PERIOD_WITH_SYSTEMS = KeyPeriod("alice", 0, KEY, (DrmSystemData(SystemId.WIDEVINE.value, pssh=WIDEVINE_PSSH),))
PERIOD2 = KeyPeriod("alice", 1, KEY2)
SCHEMES = [Protection.CBCS, Protection.CENC]


@pytest.fixture(scope="session")
def hevc_aac_clip(ffmpeg: str, media_dir: Path) -> Path:
    return make_clip(ffmpeg, media_dir / "cenc_hevc_aac.mp4", seconds=2, size="320x240", rate=25, gop_seconds=1,
                     video_codec="libx265",
                     extra=["-preset", "ultrafast", "-x265-params", "log-level=error:slices=2:bframes=2"])


def write(tracks: Sequence[Track], groups: list[list[Packet]], encryption: CencEncryption | None,
          periods: Sequence[KeyPeriod | None] | None = None) -> tuple[bytes, list[bytes]]:
    writer = Fmp4Writer(tracks, encryption)
    fragments = [writer.fragment(g, i + 1, periods[i] if periods else None) for i, g in enumerate(groups)]
    return writer.init_segment(), fragments


def slice_headers(track: Track) -> AvcSliceHeaders | HevcSliceHeaders:
    return HevcSliceHeaders(track.extradata) if track.codec is Codec.HEVC else AvcSliceHeaders(track.extradata)


def check_against_clear(scheme: Protection, tracks: Sequence[Track], init: bytes, fragments: list[bytes],
                        clear_fragments: list[bytes], keys: dict[bytes, ContentKey]) -> int:
    """Decrypt every sample with the plain reader and compare with the clear
    writer's; check the clear and protected ranges byte by byte. Returns how
    many video subsamples were checked."""
    info = parse_init(init)
    by_id = {position + 1: t for position, t in enumerate(tracks)}
    headers = {tid: slice_headers(t) for tid, t in by_id.items() if t.kind is MediaKind.VIDEO}
    checked = 0
    for fragment, clear_fragment in zip(fragments, clear_fragments, strict=True):
        trafs, _ = parse_fragment(fragment)
        clear_trafs, _ = parse_fragment(clear_fragment)
        for traf, clear_traf in zip(trafs, clear_trafs, strict=True):
            track_info = info.tracks[traf.track_id]
            key_info = traf.seig or track_info.key
            key = keys[key_info.kid].key
            video = traf.track_id in headers
            for sample, clear in zip(traf.samples, clear_traf.samples, strict=True):
                plain = decrypt_sample(scheme.value.encode(), key, key_info, sample.data, sample.iv)
                assert plain == clear.data
                _, subsamples = split_aux(sample.iv, key_info.iv_size)
                if not video:
                    assert subsamples is None
                    _check_protected(scheme, sample.data, clear.data, 0, len(clear.data), audio=True)
                    continue
                assert subsamples is not None
                checked += _check_video(scheme, sample.data, clear.data, subsamples, headers[traf.track_id])
    return checked


def _check_video(scheme: Protection, data: bytes, clear: bytes, subsamples: list[tuple[int, int]],
                 headers: AvcSliceHeaders | HevcSliceHeaders) -> int:
    clear_bytes = bytearray(len(clear))  # 1 where the subsample map keeps the byte clear
    pos = 0
    for c, p in subsamples:
        assert c <= 0xFFFF
        clear_bytes[pos : pos + c] = b"\x01" * c
        assert data[pos : pos + c] == clear[pos : pos + c]
        pos += c
        if p:
            _check_protected(scheme, data, clear, pos, p, audio=False)
        pos += p
    assert pos == len(clear)
    # The length prefix, NAL header and slice header of every slice are clear.
    pos = 0
    for nal in iter_avcc(clear, headers.nal_length_size):
        keep = headers.nal_length_size + (headers.header_size(nal) if headers.is_slice(nal) else len(nal))
        assert all(clear_bytes[pos : pos + keep]), "a header byte is in a protected range"
        pos += headers.nal_length_size + len(nal)
    return len(subsamples)


def _check_protected(scheme: Protection, data: bytes, clear: bytes, start: int, size: int, audio: bool) -> None:
    blocks = size // 16
    if scheme is Protection.CENC:
        assert audio or size % 16 == 0
        encrypted = set(range(blocks))
    else:
        encrypted = set(range(blocks)) if audio else set(range(0, blocks, 10))
    for b in range(blocks):
        at = start + 16 * b
        same = data[at : at + 16] == clear[at : at + 16]
        assert same is (b not in encrypted), (scheme, b, size)
    tail = start + 16 * blocks
    if scheme is Protection.CBCS:
        assert data[tail : start + size] == clear[tail : start + size]  # a partial block stays clear


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.value)
@pytest.mark.parametrize("clip_name", ["h264_aac_mp4", "hevc_aac_clip"])
def test_round_trip_with_the_plain_decryptor(scheme: Protection, clip_name: str,
                                             request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(clip_name)
    tracks, packets = demux(path)
    for groups in (split_at_keyframes(tracks, packets), split_every(packets, 7)):
        _, clear = write(tracks, groups, None)
        init, fragments = write(tracks, groups, CencEncryption(scheme, PERIOD))
        checked = check_against_clear(scheme, tracks, init, fragments, clear, {KEY.kid: KEY})
        assert checked > len(groups)
        for fragment, clear_fragment in zip(fragments, clear, strict=True):
            assert fragment != clear_fragment


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.value)
def test_init_segment_boxes(scheme: Protection, h264_aac_mp4: Path) -> None:
    tracks, _ = demux(h264_aac_mp4)
    init = Fmp4Writer(tracks, CencEncryption(scheme, PERIOD_WITH_SYSTEMS)).init_segment()
    info = parse_init(init)
    video, audio = info.tracks[1], info.tracks[2]
    assert (video.entry, video.original_format, audio.entry, audio.original_format) == (
        b"encv", b"avc1", b"enca", b"mp4a")
    for track in (video, audio):
        assert track.scheme == scheme.value.encode()
        assert track.scheme_version == 0x10000
        assert track.key.kid == KEY.kid and track.key.protected
    if scheme is Protection.CBCS:
        assert (video.tenc_version, video.key.crypt, video.key.skip) == (1, 1, 9)
        assert (audio.key.crypt, audio.key.skip) == (0, 0)
        assert video.key.iv_size == 0 and video.key.constant_iv == KEY.iv
    else:
        assert (video.tenc_version, video.key.iv_size, video.key.constant_iv) == (0, 8, b"")
    clearkey = (1, SystemId.CLEARKEY.value.bytes, [KEY.kid], b"")
    widevine: tuple[int, bytes, list[bytes], bytes] = (0, SystemId.WIDEVINE.value.bytes, [], b"\x12\x10" + KEY.kid)
    assert info.pssh == [clearkey, widevine]
    # The clear writer's entries are wrapped unchanged.
    clear_init = Fmp4Writer(tracks).init_segment()
    assert init.count(b"avcC") == clear_init.count(b"avcC") == 1


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.value)
def test_key_rotation_names_the_key_in_a_seig_group(scheme: Protection, h264_aac_mp4: Path) -> None:
    tracks, packets = demux(h264_aac_mp4)
    groups = split_at_keyframes(tracks, packets)
    periods = [PERIOD if i % 2 == 0 else PERIOD2 for i in range(len(groups))]
    _, clear = write(tracks, groups, None)
    init, fragments = write(tracks, groups, CencEncryption(scheme, PERIOD), periods)
    check_against_clear(scheme, tracks, init, fragments, clear, {KEY.kid: KEY, KEY2.kid: KEY2})
    for fragment, period in zip(fragments, periods, strict=True):
        trafs, moof_pssh = parse_fragment(fragment)
        if period is PERIOD:
            assert all(t.seig is None for t in trafs) and moof_pssh == []
        else:
            assert all(t.seig is not None and t.seig.kid == KEY2.kid for t in trafs)
            assert moof_pssh == [(1, SystemId.CLEARKEY.value.bytes, [KEY2.kid], b"")]
    # The other way: one init segment per key period.
    writer = Fmp4Writer(tracks, CencEncryption(scheme, PERIOD))
    assert parse_init(writer.init_segment(PERIOD2)).tracks[1].key.kid == KEY2.kid


def _decoded(path: Path, key: bytes | None) -> tuple[list[bytes], list[bytes]]:
    options = {"decryption_key": key.hex()} if key else {}
    video: list[bytes] = []
    audio: list[bytes] = []
    with av.open(str(path), options=options) as container:
        for frame in container.decode(video=0, audio=0):
            assert isinstance(frame, av.VideoFrame | av.AudioFrame)
            planes = b"".join(bytes(p) for p in frame.planes)
            (video if isinstance(frame, av.VideoFrame) else audio).append(planes)
    return video, audio


@pytest.fixture(scope="session")
def h264_slices_clip(ffmpeg: str, media_dir: Path) -> Path:
    """Four slices per picture: subsamples restart the cbcs chain in FFmpeg too."""
    return make_clip(ffmpeg, media_dir / "cenc_h264_slices.mp4", seconds=2, size="640x360", rate=25, gop_seconds=1,
                     extra=["-x264-params", "slices=4:weightp=2"])


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.value)
@pytest.mark.parametrize("clip_name", ["h264_aac_mp4", "h264_slices_clip", "hevc_aac_clip"])
def test_ffmpeg_decrypts_to_the_clear_frames(scheme: Protection, clip_name: str, tmp_path: Path,
                                             request: pytest.FixtureRequest) -> None:
    tracks, packets = demux(request.getfixturevalue(clip_name))
    groups = split_at_keyframes(tracks, packets)
    clear_init, clear = write(tracks, groups, None)
    init, fragments = write(tracks, groups, CencEncryption(scheme, PERIOD))
    (tmp_path / "clear.mp4").write_bytes(clear_init + b"".join(clear))
    (tmp_path / "enc.mp4").write_bytes(init + b"".join(fragments))
    clear_video, clear_audio = _decoded(tmp_path / "clear.mp4", None)
    video, audio = _decoded(tmp_path / "enc.mp4", KEY.key)
    assert len(clear_video) >= 50 and len(video) == len(clear_video)
    for i, (got, want) in enumerate(zip(video, clear_video, strict=True)):
        assert got == want, f"frame {i} differs"
    assert audio == clear_audio and len(audio) > 90
    # With a wrong key nothing decodes to a clear frame (the decoder may also
    # refuse packets outright).
    wrong = []
    with av.open(str(tmp_path / "enc.mp4"), options={"decryption_key": KEY2.key.hex()}) as container:
        for packet in container.demux(video=0):
            try:
                wrong += [b"".join(bytes(p) for p in f.planes) for f in packet.decode()]
            except av.error.InvalidDataError:
                continue
    assert not set(wrong) & set(clear_video)


def test_unsupported_codecs_and_misuse_are_refused(h264_aac_mp4: Path) -> None:
    av1 = Track(0, Codec.AV1, Fraction(1, 1000), width=320, height=240)
    with pytest.raises(Fmp4TrackError):
        Fmp4Writer([av1], CencEncryption(Protection.CBCS, PERIOD))
    with pytest.raises(SampleEncryptionError):
        CencEncryption(Protection.AES_128, PERIOD)
    tracks, packets = demux(h264_aac_mp4)
    with pytest.raises(Fmp4UsageError):
        Fmp4Writer(tracks).fragment(packets[:3], 1, PERIOD)
    with pytest.raises(Fmp4UsageError):
        Fmp4Writer(tracks).init_segment(PERIOD)


# -- box writers: vectors ----------------------------------------------------------


def test_box_vectors() -> None:
    cbcs = TrackProtection(Protection.CBCS, (1, 9), 0)
    assert tenc(cbcs, KEY).hex() == (
        "00000031" "74656e63" "01000000" "00" "19" "01" "00" + KEY.kid.hex() + "10" + KEY.iv.hex()
    )
    cenc = TrackProtection(Protection.CENC, (0, 0), 8)
    assert tenc(cenc, KEY).hex() == "00000020" "74656e63" "00000000" "00" "00" "01" "08" + KEY.kid.hex()
    assert pssh(SystemId.CLEARKEY.value, [KEY.kid]).hex() == (
        "00000034" "70737368" "01000000" "1077efecc0b24d02ace33c1e52e2fb4b" "00000001" + KEY.kid.hex() + "00000000"
    )
    assert saio(0x1234).hex() == "00000014" "7361696f" "00000000" "00000001" "00001234"
    assert saiz([14, 14]).hex() == "00000011" "7361697a" "00000000" "0e" "00000002"
    assert saiz([0, 8, 0]).hex() == "00000014" "7361697a" "00000000" "00" "00000003" "000800"
    from drm.cenc import EncryptedSample

    samples = [EncryptedSample(b"", b"\x01" * 8, (Subsample(5, 32), Subsample(0xFFFF, 0)))]
    assert senc(samples, True).hex() == (
        "00000026" "73656e63" "00000002" "00000001" "0101010101010101" "0002" "0005" "00000020" "ffff" "00000000"
    )


subsample_lists = st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 1 << 20)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=8, max_size=8), subsample_lists), max_size=30), st.booleans())
def test_senc_and_saiz_agree(rows: list[tuple[bytes, list[tuple[int, int]]]], with_subsamples: bool) -> None:
    from drm.cenc import EncryptedSample

    samples = [EncryptedSample(b"", iv, tuple(Subsample(c, p) for c, p in subs) if with_subsamples else ())
               for iv, subs in rows if len(subs) <= 40]
    box = senc(samples, with_subsamples)
    kind, _, end = next(walk(box))
    assert kind == b"senc" and end == len(box)
    assert struct.unpack_from(">I", box, 8)[0] & 0xFFFFFF == (2 if with_subsamples else 0)
    assert struct.unpack_from(">I", box, 12)[0] == len(samples)
    sizes = [8 + (2 + 6 * len(s.subsamples) if with_subsamples else 0) for s in samples]
    pos = 16
    for sample, size in zip(samples, sizes, strict=True):
        iv, subs = split_aux(box[pos : pos + size], 8)
        assert iv == sample.iv
        assert (subs or []) == [(s.clear, s.protected) for s in sample.subsamples]
        pos += size
    assert pos == len(box)
    table = saiz(sizes)
    default, count = struct.unpack_from(">BI", table, 12)
    assert count == len(sizes)
    assert ([default] * count if default else list(table[17:])) == sizes


# -- the ciphers against the plain decryptor -----------------------------------------


def _partition(size: int, cuts: list[int]) -> list[Subsample]:
    points = sorted({min(c, size) for c in cuts} | {0, size})
    out = []
    for a, b in itertools.pairwise(points):
        clear = min((b - a) // 3, 0xFFFF)
        out.append(Subsample(clear, b - a - clear))
    return out


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=8), st.sampled_from(SCHEMES),
       st.booleans(), st.integers(0, 1 << 60))
def test_sample_cipher_round_trip(data: bytes, cuts: list[int], scheme: Protection, whole: bool, index: int) -> None:
    from drm.cenc import cenc_sample_iv
    from tests.packager.cenc_reader import KeyInfo

    subsamples = [] if whole else _partition(len(data), cuts)
    cipher = SampleCipher(scheme, KEY)
    iv = cenc_sample_iv(KEY, index) if scheme is Protection.CENC else b""
    skip = 0 if whole else 9
    # Encrypt something first: the reused CBC context must not leak its chain.
    cipher.encrypt(bytes(64), [Subsample(0, 64)], iv, skip)
    encrypted = cipher.encrypt(data, subsamples, iv, skip)
    aux = iv
    if subsamples:
        aux += struct.pack(">H", len(subsamples)) + b"".join(struct.pack(">HI", s.clear, s.protected)
                                                              for s in subsamples)
    info = KeyInfo(0 if whole else 1, skip, True, len(iv), KEY.kid, KEY.iv if scheme is Protection.CBCS else b"")
    assert decrypt_sample(scheme.value.encode(), KEY.key, info, encrypted, aux) == data
    assert len(encrypted) == len(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(1, 64), st.integers(0, (1 << 20) - 1)),
                min_size=2, max_size=2, unique=True))
def test_cenc_iv_indexes_never_collide(pair: list[tuple[int, int, int]]) -> None:
    a, b = (cenc_iv_index(*p) for p in pair)
    assert a != b and 0 <= a < 1 << 64


def test_iv_index_limits() -> None:
    with pytest.raises(SampleEncryptionError):
        cenc_iv_index(1, 65, 0)
    with pytest.raises(SampleEncryptionError):
        cenc_iv_index(1, 1, 1 << 20)


def test_unreadable_slices_stay_clear_and_are_counted(h264_aac_mp4: Path) -> None:
    tracks, packets = demux(h264_aac_mp4)
    video = next(p for p in packets if p.track == 0 and p.keyframe)
    # A slice naming PPS 5, which the stream never sent, and a broken in-band PPS.
    odd = join_avcc([b"\x68\x00", b"\x65\x88\x37" + bytes(range(1, 200))])  # ue: 0, 7, 5
    broken = Packet(video.track, video.pts + 1, video.dts + 1, video.time_base, odd, False, 0)
    writer = Fmp4Writer(tracks, CencEncryption(Protection.CENC, PERIOD))
    fragment = writer.fragment([video, broken], 1)
    assert (writer.unreadable_slices, writer.unreadable_parameter_sets) == (1, 1)
    trafs, _ = parse_fragment(fragment)
    assert trafs[0].samples[1].data == odd
    assert split_aux(trafs[0].samples[1].iv, 8)[1] == [(len(odd), 0)]


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.value)
def test_opus_is_encrypted_whole_sample(scheme: Protection) -> None:
    opus = Track(0, Codec.OPUS, Fraction(1, 48000), channels=2, sample_rate=48000)
    sizes = [1, 15, 16, 17, 120, 400, 3, 1275]
    packets = [Packet(0, 960 * i, 960 * i, Fraction(1, 48000), bytes((i * 7 + j) % 256 for j in range(n)), True, 960)
               for i, n in enumerate(sizes)]
    _, clear = write([opus], [packets], None)
    init, fragments = write([opus], [packets], CencEncryption(scheme, PERIOD))
    assert parse_init(init).tracks[1].entry == b"enca"
    check_against_clear(scheme, [opus], init, fragments, clear, {KEY.kid: KEY})
    trafs, _ = parse_fragment(fragments[0])
    for sample, size in zip(trafs[0].samples, sizes, strict=True):
        assert len(sample.iv) == (8 if scheme is Protection.CENC else 0)  # no subsamples: whole sample
        assert len(sample.data) == size


@settings(max_examples=200, deadline=None)
@given(
    base=st.binary(min_size=16, max_size=16),
    lanes=st.lists(st.integers(0, 63), min_size=2, max_size=2, unique=True),
    indexes=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(1, 64), st.integers(0, (1 << 20) - 1)),
                     min_size=2, max_size=2),
)
def test_iv_lanes_never_meet(base: bytes, lanes: list[int], indexes: list[tuple[int, int, int]]) -> None:
    """Two outputs sharing a key (renditions) in different lanes never use
    the same cenc IV, whatever their fragment, track and sample numbers."""
    key = ContentKey(kid=KEY.kid, key=KEY.key, iv=base)
    (a, b), (i, j) = lanes, indexes
    first = cenc_sample_iv(cenc_lane(key, a), cenc_iv_index(*i))
    second = cenc_sample_iv(cenc_lane(key, b), cenc_iv_index(*j))
    assert first != second
    assert cenc_lane(key, 0) == key
    with pytest.raises(SampleEncryptionError):
        cenc_lane(key, 64)


def test_renditions_sharing_a_cenc_key_encrypt_with_their_own_ivs(h264_aac_mp4: Path) -> None:
    """The HLS muxers of two variants of a stream, fed the same packets under
    the same key period: cenc output differs (own IVs), cbcs is the same
    (the constant IV its init segment states)."""
    from packager.hls.config import SegmentFormat
    from packager.hls.keys import SegmentKey
    from packager.hls.muxers import muxer_factory

    tracks, packets = demux(h264_aac_mp4)
    group = split_at_keyframes(tracks, packets)[0]
    key = SegmentKey(PERIOD, KEY.iv)
    for scheme, same in ((Protection.CENC, False), (Protection.CBCS, True)):
        out = [muxer_factory(SegmentFormat.FMP4, scheme, lane)(tuple(tracks), PERIOD).media_segment(group, 0, key)
               for lane in (0, 1)]
        assert (out[0] == out[1]) is same, scheme
