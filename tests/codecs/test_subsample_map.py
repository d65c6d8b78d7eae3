"""The subsample map of common encryption: which bytes of an H.264 or HEVC
sample stay clear, for every NAL length size, NAL sizes from 1 byte to
megabytes, non-slice NAL units, unreadable slices and emulation prevention
bytes. The expected lists are built from the headers' known sizes (the
slices are written here), not from the parser."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drm.errors import SampleEncryptionError
from drm.model import Protection
from drm.subsamples import MAX_CLEAR, Subsample, SubsampleMap
from engine.codecs import build_avcc, iter_avcc, join_avcc
from engine.codecs.bits import escape_rbsp
from engine.codecs.hevc_slice import HevcSliceHeaders
from engine.media import Codec
from tests.codecs.test_slice_header import _pps, _sps, make_slice
from tests.conftest import make_clip

SCHEMES = [Protection.CBCS, Protection.CENC]


def expected_list(units: list[tuple[bytes, int | None]], length_size: int, scheme: Protection) -> list[Subsample]:
    """``units``: (NAL unit, bytes of NAL + slice header) with ``None`` for
    units that stay clear whole."""
    out: list[Subsample] = []
    clear = 0
    for nal, header in units:
        body = 0 if header is None else len(nal) - header
        protected = 0 if body < 16 else (body - body % 16 if scheme is Protection.CENC else body)
        clear += length_size + len(nal) - protected
        if protected:
            while clear > MAX_CLEAR:
                out.append(Subsample(MAX_CLEAR, 0))
                clear -= MAX_CLEAR
            out.append(Subsample(clear, protected))
            clear = 0
    if clear or not out:
        while clear > MAX_CLEAR:
            out.append(Subsample(MAX_CLEAR, 0))
            clear -= MAX_CLEAR
        out.append(Subsample(clear, 0))
    return out


stream_params = st.fixed_dictionaries({
    "frame_bits": st.integers(4, 16), "poc_bits": st.integers(4, 16),
    "cabac": st.booleans(), "deblocking": st.booleans(),
})
unit_kinds = st.one_of(
    st.tuples(st.just("slice"), st.fixed_dictionaries({
        "idr": st.booleans(), "first_mb": st.integers(0, 299), "frame_num": st.integers(0, 15),
        "poc": st.integers(0, 15), "qp_delta": st.integers(-26, 25),
        "data": st.one_of(st.binary(max_size=200), st.sampled_from([b"\x00\x00\x00\x01" * 20, b"\x00" * 33])),
    })),
    st.tuples(st.sampled_from(["sei", "aud", "filler", "sps", "pps", "garbage_slice"]), st.binary(max_size=300)),
)


@settings(max_examples=300, deadline=None)
@given(stream_params, st.lists(unit_kinds, min_size=1, max_size=8), st.sampled_from([1, 2, 4]),
       st.sampled_from(SCHEMES))
def test_h264_samples(stream: dict, kinds: list, length_size: int, scheme: Protection) -> None:
    avcc = build_avcc([_sps(stream["frame_bits"], stream["poc_bits"])],
                      [_pps(stream["cabac"], stream["deblocking"])], length_size)
    units: list[tuple[bytes, int | None]] = []
    garbage = 0
    for kind, value in kinds:
        if kind == "slice":
            _, nal, header = make_slice({**stream, **value})
            units.append((nal, header))
        elif kind == "garbage_slice":  # a slice whose header runs off its end
            units.append((b"\x41" + b"\xff" * (len(value) % 3), None))
            garbage += 1
        else:
            header_byte = {"sei": 6, "aud": 9, "filler": 12, "sps": 7, "pps": 8}[kind]
            nal = {"sps": _sps(stream["frame_bits"], stream["poc_bits"]),
                   "pps": _pps(stream["cabac"], stream["deblocking"])}.get(kind, bytes([header_byte]) + value)
            units.append((nal, None))
    units = [(nal, header) for nal, header in units if len(nal) < 1 << (8 * length_size)]
    if not units:
        return
    sample = join_avcc([nal for nal, _ in units], length_size)
    mapper = SubsampleMap(Codec.H264, avcc, scheme)
    got = mapper.subsamples(sample)
    assert got == expected_list(units, length_size, scheme)
    assert sum(s.clear + s.protected for s in got) == len(sample)
    assert mapper.unreadable_slices == sum(1 for nal, h in units if h is None and nal[0] == 0x41)
    assert garbage >= mapper.unreadable_slices


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.value)
def test_huge_and_tiny_samples(scheme: Protection) -> None:
    stream = {"frame_bits": 8, "poc_bits": 8, "cabac": True, "deblocking": False}
    avcc = build_avcc([_sps(8, 8)], [_pps(True, False)])
    slice_params = {"idr": True, "first_mb": 0, "frame_num": 0, "poc": 0, "qp_delta": 0}
    _, big, big_header = make_slice({**stream, **slice_params, "data": bytes(range(251)) * 8000})
    _, tiny, tiny_header = make_slice({**stream, **slice_params, "data": b""})
    sei = b"\x06" + b"\x05" * 150_000  # longer than two 16-bit clear counts
    units: list[tuple[bytes, int | None]] = [(sei, None), (big, big_header), (tiny, tiny_header), (sei, None)]
    sample = join_avcc([u for u, _ in units])
    got = SubsampleMap(Codec.H264, avcc, scheme).subsamples(sample)
    assert got == expected_list(units, 4, scheme)
    assert got[0] == got[1] == Subsample(MAX_CLEAR, 0)
    assert len(got) == 6 and all(s.clear <= MAX_CLEAR for s in got)
    # Samples under one block: nothing to protect.
    assert SubsampleMap(Codec.H264, avcc, scheme).subsamples(join_avcc([tiny])) == [Subsample(4 + len(tiny), 0)]


def test_broken_samples_and_codecs_are_refused() -> None:
    avcc = build_avcc([_sps(8, 8)], [_pps(True, False)])
    mapper = SubsampleMap(Codec.H264, avcc, Protection.CENC)
    for broken in (b"\x00\x00\x00", b"\x00\x00\x00\x09\x41\x00", b"\x00\x00\x00\x00"):
        with pytest.raises(SampleEncryptionError):
            mapper.subsamples(broken)
    with pytest.raises(SampleEncryptionError):
        SubsampleMap(Codec.AV1, b"", Protection.CBCS)
    with pytest.raises(SampleEncryptionError):
        SubsampleMap(Codec.H264, avcc, Protection.AES_128)
    with pytest.raises(SampleEncryptionError):
        SubsampleMap(Codec.H264, b"\x02", Protection.CBCS)


# -- HEVC: real slices, slice data replaced ------------------------------------------


@pytest.fixture(scope="module")
def hevc_slices(ffmpeg: str, media_dir: Path) -> tuple[bytes, list[tuple[bytes, int]]]:
    path = make_clip(ffmpeg, media_dir / "cenc_hevc_slices.mp4", seconds=1, size="320x240", rate=25, audio=False,
                     gop_seconds=1, video_codec="libx265",
                     extra=["-x265-params", "log-level=error:slices=2:bframes=2:wpp=1"])
    slices = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        hvcc = bytes(stream.codec_context.extradata or b"")
        headers = HevcSliceHeaders(hvcc)
        for packet in container.demux(stream):
            for nal in iter_avcc(bytes(packet), headers.nal_length_size):
                if headers.is_slice(nal):
                    slices.append((nal, headers.header_size(nal)))
    return hvcc, slices


@settings(max_examples=100, deadline=None)
@given(st.data(), st.sampled_from(SCHEMES))
def test_hevc_samples(hevc_slices: tuple[bytes, list[tuple[bytes, int]]], data: st.DataObject,
                      scheme: Protection) -> None:
    hvcc, slices = hevc_slices
    picks = data.draw(st.lists(st.integers(0, len(slices) - 1), min_size=1, max_size=4))
    units: list[tuple[bytes, int | None]] = []
    for i in picks:
        nal, header = slices[i]
        # New slice data after the header, zero runs that need escaping
        # included. The header's last byte holds its alignment bit (a 1), so
        # the data escapes alone as it would in place.
        assert nal[header - 1] != 0
        body = data.draw(st.one_of(st.binary(max_size=100), st.just(b"\x00\x00\x00\x02" * 10)))
        units.append((nal[:header] + escape_rbsp(body), header))
        if data.draw(st.booleans()):
            units.append((b"\x4e\x01" + data.draw(st.binary(max_size=40)), None))  # prefix SEI
    sample = join_avcc([u for u, _ in units])
    got = SubsampleMap(Codec.HEVC, hvcc, scheme).subsamples(sample)
    assert got == expected_list(units, 4, scheme)

