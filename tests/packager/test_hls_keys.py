"""HLS encryption: IVs, whole-segment AES-128 (checked with the openssl CLI),
key schedules, key periods and IVs through the segmenter, LL-HLS parts that
decrypt alone to what their parent segment decrypts to, and EXT-X-KEY tags."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from fractions import Fraction

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from drm.model import DrmSystemData, KeyPeriod, Protection, SystemId
from drm.rotation import KeyRotation
from engine.media import Codec, Packet, StreamEnded, StreamStarted, Track
from packager.hls.config import SegmentFormat
from packager.hls.keys import (
    ProtectionError,
    SegmentKey,
    SegmentProtection,
    encrypt_whole,
    key_tags,
    key_uri_under,
    segment_iv,
)
from packager.hls.muxers import check_protection
from packager.hls.segmenter import PartReady, Segmenter, SegmentReady
from tests.fixed_keys import FixedKeys, fixed_key

TB = Fraction(1, 1000)
VIDEO = Track(0, Codec.H264, TB, b"\x01\x64\x00\x1f", width=640, height=360)
AUDIO = Track(1, Codec.AAC, TB, b"\x11\x90", sample_rate=48000, channels=2)


def decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def test_segment_iv_adds_the_segment_number_to_the_period_iv() -> None:
    base = bytes(15) + b"\x01"
    assert segment_iv(base, 0) == base
    assert segment_iv(base, 0x1FF) == bytes(14) + b"\x02\x00"
    assert segment_iv(b"\xff" * 16, 1) == bytes(16)  # modulo 2**128
    with pytest.raises(ProtectionError):
        segment_iv(b"short", 0)
    with pytest.raises(ProtectionError):
        segment_iv(base, -1)


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=300), key=st.binary(min_size=16, max_size=16), iv=st.binary(min_size=16, max_size=16))
def test_whole_segment_encryption_is_what_openssl_decrypts(data: bytes, key: bytes, iv: bytes) -> None:
    encrypted = encrypt_whole(key, iv, data)
    assert len(encrypted) % 16 == 0 and len(encrypted) > len(data)
    clear = subprocess.run(
        ["openssl", "enc", "-d", "-aes-128-cbc", "-K", key.hex(), "-iv", iv.hex()],
        input=encrypted, capture_output=True, check=True,
    ).stdout
    assert clear == data


def test_key_rotation_counts_every_n_segments_and_at_discontinuities() -> None:
    rotation = SegmentProtection(Protection.AES_128, lambda i: FixedKeys().key_period("x", i),
                                 key_uri_under("/keys", "x"),
                                 2, lambda: 7).rotation()
    seen = [rotation.next_segment(discontinuity=disc) for disc in (False, False, False, True, False, False, False)]
    assert seen == [7, 7, 8, 9, 9, 10, 10]
    never = KeyRotation(0)
    assert [never.next_segment() for _ in range(100)][-1] == 0
    assert never.next_segment(discontinuity=True) == 1
    with pytest.raises(ProtectionError):
        SegmentProtection(Protection.AES_128, lambda i: FixedKeys().key_period("x", i), lambda k: "", -1)


def protection(scheme: Protection = Protection.AES_128, rotate_every: int = 0, provider: FixedKeys | None = None,
               content_id: str = "show") -> SegmentProtection:
    keys = provider or FixedKeys()
    return SegmentProtection(
        scheme, lambda index: keys.key_period(content_id, index), key_uri_under("/keys", content_id), rotate_every
    )


class BytesMuxer:
    """Muxes each packet to a few distinct bytes, so encrypted output can be
    compared with what was muxed."""

    extension = ".ts"

    def __init__(self, tracks: tuple[Track, ...]) -> None:
        self.keys: list[SegmentKey | None] = []

    def init_segment(self) -> bytes | None:
        return None

    def media_segment(self, packets: Sequence[Packet], sequence: int, key: SegmentKey | None = None) -> bytes:
        self.keys.append(key)
        return b"".join(f"<{p.track}:{p.dts}>".encode() for p in packets)


def av_stream(seconds: int, start: int = 0) -> list[Packet]:
    items = [Packet(0, start + i * 1000 // 30, start + i * 1000 // 30, TB, b"v", keyframe=i % 60 == 0)
             for i in range(seconds * 30)]
    items += [Packet(1, start + j * 1024 * 1000 // 48000, start + j * 1024 * 1000 // 48000, TB, b"a")
              for j in range(seconds * 48000 // 1024)]
    return sorted(items, key=lambda p: (p.dts, p.track))


def run_segmenter(
    plan: SegmentProtection, part_target: Fraction | None, reconnect: bool = False,
    init_periods: list[int | None] | None = None,
) -> list[object]:
    muxers: list[BytesMuxer] = []

    def factory(tracks: tuple[Track, ...], period: KeyPeriod | None = None) -> BytesMuxer:
        if init_periods is not None:
            init_periods.append(period.index if period is not None else None)
        muxers.append(BytesMuxer(tracks))
        return muxers[-1]

    seg = Segmenter(factory, Fraction(2), Fraction(12), part_target=part_target, protection=plan)
    seg.feed(StreamStarted((VIDEO, AUDIO)), 0.0)
    for p in av_stream(8):
        seg.feed(p, 0.0)
    if reconnect:
        seg.feed(StreamStarted((VIDEO, AUDIO)), 0.0)
        for p in av_stream(4):
            seg.feed(p, 0.0)
    seg.feed(StreamEnded("done"), 0.0)
    return seg.events()  # type: ignore[return-value]


def test_parts_decrypt_alone_to_their_parent_segments_clear_bytes() -> None:
    events = run_segmenter(protection(), Fraction(1, 2))
    segments = [e for e in events if isinstance(e, SegmentReady)]
    parts = [e for e in events if isinstance(e, PartReady)]
    assert len(segments) == 4 and len(parts) >= 16
    ivs = set()
    for segment in segments:
        assert segment.key is not None
        key, iv = segment.key.period.key.key, segment.key.iv
        assert iv == segment_iv(fixed_key("show", 0).iv, segment.sequence)
        ivs.add(iv)
        own = [p for p in parts if p.segment_sequence == segment.sequence]
        assert all(p.key == segment.key for p in own)
        clear_parts = [decrypt(key, iv, p.data) for p in own]
        assert all(c.startswith(b"<") for c in clear_parts)
        # The parent segment is not the parts' ciphertext joined: it is the
        # parts' clear bytes joined, encrypted once.
        assert decrypt(key, iv, segment.data) == b"".join(clear_parts)
        assert segment.data != b"".join(p.data for p in own)
    assert len(ivs) == 4


def test_without_parts_the_segment_is_encrypted_once() -> None:
    events = run_segmenter(protection(), None)
    segments = [e for e in events if isinstance(e, SegmentReady)]
    assert not [e for e in events if isinstance(e, PartReady)]
    for segment in segments:
        assert segment.key is not None
        clear = decrypt(segment.key.period.key.key, segment.key.iv, segment.data)
        assert clear.startswith(b"<0:") and clear.endswith(b">")


def test_periods_rotate_and_a_reconnect_starts_a_new_one() -> None:
    provider = FixedKeys()
    events = run_segmenter(protection(rotate_every=2, provider=provider), None, reconnect=True)
    segments = [e for e in events if isinstance(e, SegmentReady)]
    periods = [s.key.period.index for s in segments if s.key is not None]
    assert [s.discontinuity for s in segments] == [False, False, False, False, True, False]
    assert periods == [0, 0, 1, 1, 2, 2]
    assert provider.asked == [("show", 0), ("show", 1), ("show", 2)]  # once per period


def test_sample_encrypting_muxers_get_the_key_and_the_segmenter_leaves_bytes_alone() -> None:
    plan = protection(Protection.SAMPLE_AES)
    init_periods: list[int | None] = []
    events = run_segmenter(plan, None, init_periods=init_periods)
    assert init_periods == [0]  # the muxer knows its period before the init segment
    segment = next(e for e in events if isinstance(e, SegmentReady))
    assert segment.data.startswith(b"<0:")  # the muxer's bytes, as it wrote them
    assert segment.key is not None and segment.key.period.index == 0
    # Samples restart their IV: every segment of a period has the period's.
    keys = [e.key for e in events if isinstance(e, SegmentReady)]
    assert len(keys) == 4 and all(k is not None and k.iv == fixed_key("show", 0).iv for k in keys)


KID = bytes(range(16))


def seg_key(index: int = 3, iv: bytes = b"\x00" * 15 + b"\x2a", systems: tuple[DrmSystemData, ...] = ()) -> SegmentKey:
    from drm.model import ContentKey, KeyPeriod

    return SegmentKey(KeyPeriod("show", index, ContentKey(KID, b"k" * 16, b"i" * 16), systems), iv)


def test_aes_128_key_tag_vector() -> None:
    (tag,) = key_tags(protection(), seg_key(), fmp4=False)
    assert tag.render(lambda u: u + "?token=t") == (
        '#EXT-X-KEY:METHOD=AES-128,URI="/keys/show/000102030405060708090a0b0c0d0e0f?token=t",'
        'IV=0x0000000000000000000000000000002A,KEYFORMAT="identity",KEYFORMATVERSIONS="1"'
    )
    assert tag.render_session() == (
        '#EXT-X-SESSION-KEY:METHOD=AES-128,URI="/keys/show/000102030405060708090a0b0c0d0e0f",'
        'KEYFORMAT="identity",KEYFORMATVERSIONS="1"'
    )


FAIRPLAY = DrmSystemData(SystemId.FAIRPLAY.value, hls_key_format="com.apple.streamingkeydelivery",
                         hls_key_uri="skd://keys.example/abc")
WIDEVINE = DrmSystemData(SystemId.WIDEVINE.value, pssh=b"\x00\x00\x00\x20pssh-widevine")
CLEARKEY = DrmSystemData(SystemId.CLEARKEY.value, pssh=b"\x00\x00\x00\x20pssh-clearkey")
PLAYREADY = DrmSystemData(SystemId.PLAYREADY.value, pssh=b"\x00\x00\x00\x20pssh-playready")


def test_cbcs_key_tags_name_each_drm_system() -> None:
    tags = key_tags(protection(Protection.CBCS), seg_key(systems=(CLEARKEY, WIDEVINE, PLAYREADY, FAIRPLAY)), True)
    lines = [t.render(lambda u: u + "?token=t") for t in tags]
    assert lines == [
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="data:text/plain;base64,AAAAIHBzc2gtY2xlYXJrZXk=",'
        'KEYFORMAT="urn:uuid:1077efec-c0b2-4d02-ace3-3c1e52e2fb4b",KEYFORMATVERSIONS="1"',
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="data:text/plain;base64,AAAAIHBzc2gtd2lkZXZpbmU=",'
        'KEYFORMAT="urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed",KEYFORMATVERSIONS="1"',
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://keys.example/abc",'
        'KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"',
        # ClearKey keys are the engine's: its key endpoint, with the token.
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="/keys/show/000102030405060708090a0b0c0d0e0f?token=t",'
        'KEYFORMAT="identity",KEYFORMATVERSIONS="1"',
    ]
    # Without system data, cbcs falls back to the engine's identity key (the
    # constant IV lives in the init segment, not in the tag).
    (identity,) = key_tags(protection(Protection.CBCS), seg_key(), True)
    assert identity.iv is None and identity.key_format == "identity" and identity.own_uri


def test_sample_aes_ts_tags_the_identity_key_and_fairplay() -> None:
    tags = key_tags(protection(Protection.SAMPLE_AES), seg_key(systems=(FAIRPLAY,)), fmp4=False)
    assert [(t.method, t.key_format, t.iv is not None) for t in tags] == [
        ("SAMPLE-AES", "identity", True), ("SAMPLE-AES", "com.apple.streamingkeydelivery", False),
    ]
    with pytest.raises(ProtectionError):
        key_tags(protection(Protection.CENC), seg_key(), fmp4=False)
    # cenc in CMAF: SAMPLE-AES-CTR, the same system tags.
    (ctr,) = key_tags(protection(Protection.CENC), seg_key(systems=(FAIRPLAY,)), fmp4=True)
    assert ctr.method == "SAMPLE-AES-CTR" and ctr.key_format == "com.apple.streamingkeydelivery"


@pytest.mark.parametrize(
    ("fmt", "scheme", "ok"),
    [
        (SegmentFormat.MPEGTS, Protection.AES_128, True),
        (SegmentFormat.FMP4, Protection.AES_128, True),
        (SegmentFormat.MPEGTS, Protection.SAMPLE_AES, True),
        (SegmentFormat.FMP4, Protection.SAMPLE_AES, True),  # cbcs in CMAF
        (SegmentFormat.FMP4, Protection.CBCS, True),
        (SegmentFormat.MPEGTS, Protection.CBCS, False),
        (SegmentFormat.FMP4, Protection.CENC, True),
        (SegmentFormat.MPEGTS, Protection.CENC, False),
    ],
)
def test_which_schemes_each_container_writes(fmt: SegmentFormat, scheme: Protection, ok: bool) -> None:
    if ok:
        check_protection(fmt, scheme)
    else:
        with pytest.raises(ProtectionError):
            check_protection(fmt, scheme)


def test_a_protection_must_encrypt() -> None:
    with pytest.raises(ProtectionError):
        protection(Protection.NONE)


def test_a_restarted_sample_encrypted_stream_makes_its_muxer_with_the_new_period() -> None:
    provider = FixedKeys()
    init_periods: list[int | None] = []
    events = run_segmenter(protection(Protection.SAMPLE_AES, rotate_every=3, provider=provider), None,
                           reconnect=True, init_periods=init_periods)
    periods = [e.key.period.index for e in events if isinstance(e, SegmentReady) and e.key is not None]
    assert init_periods == [0, 2]
    assert periods == [0, 0, 0, 1, 2, 2]  # the restart's period is chosen once, not twice
    assert provider.asked == [("show", 0), ("show", 1), ("show", 2)]
    # Clear and AES-128 streams' muxers are made from their tracks alone.
    init_periods.clear()
    run_segmenter(protection(Protection.AES_128), None, init_periods=init_periods)
    assert init_periods == [None]
