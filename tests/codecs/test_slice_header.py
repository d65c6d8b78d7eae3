"""Where slice headers end: checked against FFmpeg's ``trace_headers``
bitstream filter (which prints every syntax element with its bit position)
on streams that real encoders make with many header features, and against
slices written bit by bit here, emulation prevention bytes included."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codecs import CodecError, build_avcc, iter_avcc
from engine.codecs.bits import escape_rbsp
from engine.codecs.hevc_slice import HevcSliceHeaders
from engine.codecs.slice_header import AvcSliceHeaders, RbspPrefix

ENCODES = {
    "x264_cabac_slices_weightp": ["-c:v", "libx264", "-x264-params", "slices=4:weightp=2:bframes=3:b-pyramid=normal"],
    "x264_cavlc": ["-c:v", "libx264", "-coder", "0", "-x264-params", "slices=2:bframes=0:ref=3"],
    "x264_interlaced_444": ["-c:v", "libx264", "-pix_fmt", "yuv444p", "-x264-params", "interlaced=1:weightp=2:ref=5"],
    "x265_slices_weighted": ["-c:v", "libx265", "-x265-params",
                             "log-level=error:slices=3:bframes=4:weightp=1:weightb=1:ref=4:open-gop=1"],
    "x265_wavefronts": ["-c:v", "libx265", "-x265-params", "log-level=error:wpp=1:bframes=3"],
}


def _trace_header_bits(ffmpeg: str, path: Path) -> list[int]:
    """Per slice, in stream order, the bits from the NAL unit's first bit to
    the end of its slice header as FFmpeg's own parser reads them."""
    log = subprocess.run(
        [ffmpeg, "-v", "trace", "-i", str(path), "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stderr
    ends: list[int] = []
    current: int | None = None
    for line in log.splitlines():
        if "[trace_headers @" not in line or "] " not in line:
            continue
        body = line.split("] ", 1)[1]
        if body.startswith(("Slice Header", "Slice Segment Header")):
            if current is not None:
                ends.append(current)
            current = 0
            continue
        field = re.match(r"(\d+)\s+(\S+)\s+([01]+) = ", body)
        if current is None:
            continue
        if field is None:
            ends.append(current)
            current = None
        elif field.group(2) != "cabac_alignment_one_bit":  # slice data syntax, not header
            current = max(current, int(field.group(1)) + len(field.group(3)))
    if current is not None:
        ends.append(current)
    return ends


@pytest.mark.parametrize("name", sorted(ENCODES))
def test_header_ends_match_ffmpeg(name: str, ffmpeg: str, media_dir: Path) -> None:
    path = media_dir / f"slices_{name}.mp4"
    if not path.exists():
        source = "testsrc2=size=352x288:rate=25,fade=in:0:20,fade=out:st=1.2:d=0.8"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", "2", "-g", "25",
                        *ENCODES[name], str(path)], check=True, timeout=120)
    expected = _trace_header_bits(ffmpeg, path)
    got = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        hevc = stream.codec_context.name == "hevc"
        extradata = bytes(stream.codec_context.extradata or b"")
        headers = HevcSliceHeaders(extradata) if hevc else AvcSliceHeaders(extradata)
        nal_header = 2 if hevc else 1
        for packet in container.demux(stream):
            for nal in iter_avcc(bytes(packet), headers.nal_length_size):
                if headers.is_slice(nal):
                    got.append((nal, headers.header_size(nal)))
    assert len(got) == len(expected) > 40
    for (nal, size), bits in zip(got, expected, strict=True):
        rbsp_bytes = (bits + 7) // 8 - nal_header
        assert size == RbspPrefix(nal, nal_header, len(nal)).escaped_end(rbsp_bytes)
        assert size <= len(nal)


# -- slices written here ------------------------------------------------------


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(code.bit_length() - 1, 0)
        self.u(code.bit_length(), code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self, tail: bytes = b"", trailing: bool = True) -> bytes:
        """The bits, then ``tail``'s bits, then rbsp_trailing_bits."""
        bits = list(self.bits)
        for byte in tail:
            bits += [(byte >> (7 - i)) & 1 for i in range(8)]
        if trailing:
            bits.append(1)
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def _sps(frame_bits: int, poc_bits: int) -> bytes:
    w = BitWriter()
    w.u(8, 66)  # Baseline: no chroma format or scaling lists in the SPS
    w.u(8, 0)
    w.u(8, 30)
    w.ue(0)  # sps id
    w.ue(frame_bits - 4)
    w.ue(0)  # poc type 0
    w.ue(poc_bits - 4)
    w.ue(1)  # max_num_ref_frames
    w.u(1, 0)
    w.ue(19)  # 320 wide
    w.ue(14)  # 240 high
    w.u(1, 1)  # frame_mbs_only
    w.u(1, 1)
    w.u(1, 0)  # no cropping
    w.u(1, 0)  # no VUI
    return b"\x67" + escape_rbsp(w.rbsp())


def _pps(cabac: bool, deblocking: bool) -> bytes:
    w = BitWriter()
    w.ue(0)
    w.ue(0)
    w.u(1, int(cabac))
    w.u(1, 0)
    w.ue(0)  # one slice group
    w.ue(0)
    w.ue(0)
    w.u(1, 0)
    w.u(2, 0)
    w.se(0)
    w.se(0)
    w.se(0)
    w.u(1, int(deblocking))
    w.u(1, 0)
    w.u(1, 0)
    return b"\x68" + escape_rbsp(w.rbsp())


slice_params = st.fixed_dictionaries({
    "frame_bits": st.integers(4, 16),
    "poc_bits": st.integers(4, 16),
    "cabac": st.booleans(),
    "deblocking": st.booleans(),
    "idr": st.booleans(),
    "first_mb": st.integers(0, 299),
    "frame_num": st.integers(0, 15),
    "poc": st.integers(0, 15),
    "qp_delta": st.integers(-26, 25),
    "data": st.binary(max_size=80),
})


def make_slice(p: dict) -> tuple[bytes, bytes, int]:
    """(avcC, slice NAL unit, bytes through the end of its header)."""
    w = BitWriter()
    w.ue(p["first_mb"])
    w.ue(7 if p["idr"] else 5)  # I or P, all slices of the picture alike
    w.ue(p.get("pps_id", 0))
    w.u(p["frame_bits"], 0 if p["idr"] else p["frame_num"])
    if p["idr"]:
        w.ue(0)
    w.u(p["poc_bits"], p["poc"])
    if not p["idr"]:
        w.u(1, 0)  # num_ref_idx_active_override_flag
        w.u(1, 0)  # ref_pic_list_modification_flag_l0
    if p["idr"]:
        w.u(2, 0)
    else:
        w.u(1, 0)  # adaptive_ref_pic_marking_mode_flag
    if p["cabac"] and not p["idr"]:
        w.ue(0)
    w.se(p["qp_delta"])
    if p["deblocking"]:
        w.ue(1)
    header_bits = len(w.bits)
    rbsp = w.rbsp(p["data"])
    header_bytes = (header_bits + 7) // 8
    nal = bytes([0x65 if p["idr"] else 0x41]) + escape_rbsp(rbsp)
    expected = 1 + len(escape_rbsp(rbsp[:header_bytes]))
    avcc = build_avcc([_sps(p["frame_bits"], p["poc_bits"])], [_pps(p["cabac"], p["deblocking"])])
    return avcc, nal, expected


@settings(max_examples=300, deadline=None)
@given(slice_params)
def test_written_slices(p: dict) -> None:
    avcc, nal, expected = make_slice(p)
    assert AvcSliceHeaders(avcc).header_size(nal) == expected


def test_emulation_prevention_inside_the_header_is_counted() -> None:
    # 16 zero bits of frame_num and 16 of poc: the header itself needs 03s.
    p = {"frame_bits": 16, "poc_bits": 16, "cabac": False, "deblocking": False, "idr": False, "first_mb": 0,
         "frame_num": 0, "poc": 0, "qp_delta": 0, "data": b"\x00\x00\x01\x02" * 8}
    avcc, nal, expected = make_slice(p)
    assert b"\x00\x00\x03" in nal[:expected]
    assert AvcSliceHeaders(avcc).header_size(nal) == expected


def test_unknown_parameter_sets_and_truncation_are_errors() -> None:
    p = {"frame_bits": 8, "poc_bits": 8, "cabac": True, "deblocking": True, "idr": True, "first_mb": 3,
         "frame_num": 0, "poc": 2, "qp_delta": -3, "data": b"\xaa" * 20}
    avcc, nal, expected = make_slice(p)
    headers = AvcSliceHeaders(avcc)
    assert headers.header_size(nal) == expected
    with pytest.raises(CodecError):
        headers.header_size(nal[:2])
    _, other, _ = make_slice({**p, "pps_id": 1})
    with pytest.raises(CodecError, match="unknown PPS"):
        headers.header_size(other)
    with pytest.raises(CodecError):
        headers.header_size(b"\x06\x05\x01\x00")  # SEI is no slice


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 300))
def test_escaped_end_matches_escaping(rbsp: bytes, cut: int) -> None:
    escaped = escape_rbsp(rbsp)
    cut = min(cut, len(rbsp))
    prefix = RbspPrefix(b"\x41" + escaped, 1, len(escaped) + 1)
    assert prefix.data == rbsp
    assert prefix.escaped_end(cut) == 1 + len(escape_rbsp(rbsp[:cut]))


def test_long_headers_are_read_past_the_first_prefix() -> None:
    from engine.codecs.bits import BitReader
    from engine.codecs.slice_header import FIRST_PREFIX, read_header

    rbsp = bytes(range(256)) * 3
    nal = b"\x41" + escape_rbsp(rbsp)
    bits = (FIRST_PREFIX + 40) * 8 + 3

    def parse(r: BitReader) -> int:
        r.skip(bits)
        return r.position

    assert read_header(nal, 1, parse) == 1 + len(escape_rbsp(rbsp[: FIRST_PREFIX + 41]))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=24), st.integers(0, 40), st.integers(1, 4))
def test_exp_golomb_fast_path_reads_as_bit_by_bit(data: bytes, skip: int, reads: int) -> None:
    from engine.codecs.bits import BitReader

    fast, slow = BitReader(data), BitReader(data)
    skip = min(skip, len(data) * 8)
    fast.skip(skip)
    slow.skip(skip)
    for _ in range(reads):
        try:
            expected = slow._ue_bit_by_bit()
        except CodecError:
            with pytest.raises(CodecError):
                fast.ue()
            return
        assert fast.ue() == expected
        assert fast.position == slow.position
