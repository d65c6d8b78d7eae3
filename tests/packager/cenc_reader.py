"""A plain reader and decryptor of common-encrypted fMP4, written from the
text of ISO/IEC 23001-7 and ISO/IEC 14496-12 for the tests, sharing no code
with the writer: boxes are walked by hand, sample auxiliary information is
found through ``saio``/``saiz`` (not ``senc``), and AES is applied block by
block (ECB of one block, then the mode done here by hand)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"sinf", b"schi"}


def walk(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, box start, box end) of the boxes from ``start`` to ``end``."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        assert size >= 8 and pos + size <= end, (kind, size)
        yield kind, pos, pos + size
        pos += size


def children(data: bytes, start: int, end: int, header: int = 8) -> dict[bytes, list[tuple[int, int]]]:
    out: dict[bytes, list[tuple[int, int]]] = {}
    for kind, s, e in walk(data, start + header, end):
        out.setdefault(kind, []).append((s, e))
    return out


@dataclass
class KeyInfo:
    crypt: int
    skip: int
    protected: bool
    iv_size: int
    kid: bytes
    constant_iv: bytes


def parse_key_info(data: bytes, pos: int) -> KeyInfo:
    """The fields tenc and a seig entry share, from their reserved byte."""
    pattern, protected, iv_size = data[pos + 1], data[pos + 2], data[pos + 3]
    kid = data[pos + 4 : pos + 20]
    constant = b""
    if protected and iv_size == 0:
        n = data[pos + 20]
        constant = data[pos + 21 : pos + 21 + n]
    return KeyInfo(pattern >> 4, pattern & 15, bool(protected), iv_size, kid, constant)


@dataclass
class InitTrack:
    track_id: int
    entry: bytes
    original_format: bytes
    scheme: bytes
    scheme_version: int
    tenc_version: int
    key: KeyInfo


@dataclass
class Init:
    tracks: dict[int, InitTrack]
    pssh: list[tuple[int, bytes, list[bytes], bytes]] = field(default_factory=list)


def parse_init(data: bytes) -> Init:
    moov = next((s, e) for kind, s, e in walk(data) if kind == b"moov")
    top = children(data, *moov)
    tracks = {}
    for ts, te in top[b"trak"]:
        tkhd = children(data, ts, te)[b"tkhd"][0][0]
        track_id = struct.unpack_from(">I", data, tkhd + 20)[0]
        stbl = _descend(data, ts, te, [b"mdia", b"minf", b"stbl"])
        stsd = children(data, *stbl)[b"stsd"][0]
        entry_start = stsd[0] + 16
        entry_kind = data[entry_start + 4 : entry_start + 8]
        entry_end = entry_start + struct.unpack_from(">I", data, entry_start)[0]
        header = 8 + (78 if entry_kind == b"encv" else 28)
        kids = children(data, entry_start, entry_end, header)
        if b"sinf" not in kids:
            continue
        sinf = children(data, *kids[b"sinf"][0])
        frma = data[sinf[b"frma"][0][0] + 8 : sinf[b"frma"][0][0] + 12]
        schm = sinf[b"schm"][0][0]
        scheme = data[schm + 12 : schm + 16]
        scheme_version = struct.unpack_from(">I", data, schm + 16)[0]
        tenc = children(data, *sinf[b"schi"][0])[b"tenc"][0][0]
        tracks[track_id] = InitTrack(track_id, entry_kind, frma, scheme, scheme_version, data[tenc + 8],
                                     parse_key_info(data, tenc + 12))
    init = Init(tracks)
    for ps, _pe in top.get(b"pssh", []):
        init.pssh.append(parse_pssh(data, ps))
    return init


def parse_pssh(data: bytes, pos: int) -> tuple[int, bytes, list[bytes], bytes]:
    version = data[pos + 8]
    system = data[pos + 12 : pos + 28]
    p = pos + 28
    kids = []
    if version > 0:
        (count,) = struct.unpack_from(">I", data, p)
        p += 4
        kids = [data[p + 16 * i : p + 16 * (i + 1)] for i in range(count)]
        p += 16 * count
    (size,) = struct.unpack_from(">I", data, p)
    return version, system, kids, data[p + 4 : p + 4 + size]


def _descend(data: bytes, start: int, end: int, path: list[bytes]) -> tuple[int, int]:
    for kind in path:
        start, end = children(data, start, end)[kind][0]
    return start, end


@dataclass
class FragmentSample:
    data: bytes
    iv: bytes
    subsamples: list[tuple[int, int]] | None


@dataclass
class Traf:
    track_id: int
    samples: list[FragmentSample]
    seig: KeyInfo | None
    senc_entries: bytes


def parse_fragment(data: bytes) -> tuple[list[Traf], list[tuple[int, bytes, list[bytes], bytes]]]:
    """The trafs of one moof+mdat, each sample's bytes and its auxiliary
    information as saio/saiz point at it, and the moof's pssh boxes."""
    moof = next((s, e) for kind, s, e in walk(data) if kind == b"moof")
    base = moof[0]
    top = children(data, *moof)
    trafs = []
    for ts, te in top.get(b"traf", []):
        boxes = children(data, ts, te)
        tfhd = boxes[b"tfhd"][0][0]
        track_id = struct.unpack_from(">I", data, tfhd + 12)[0]
        trun = boxes[b"trun"][0][0]
        flags = struct.unpack_from(">I", data, trun + 8)[0] & 0xFFFFFF
        count, offset = struct.unpack_from(">Ii", data, trun + 12)
        row = 4 * bin(flags & 0xF00).count("1")
        sizes = [struct.unpack_from(">I", data, trun + 20 + i * row + 4)[0] for i in range(count)]
        pos = base + offset
        payloads = []
        for size in sizes:
            payloads.append(data[pos : pos + size])
            pos += size
        aux: list[bytes] = [b""] * count
        if b"saiz" in boxes:
            saiz = boxes[b"saiz"][0][0]
            default, n = struct.unpack_from(">BI", data, saiz + 12)
            assert n == count
            aux_sizes = [default] * n if default else list(data[saiz + 17 : saiz + 17 + n])
            saio = boxes[b"saio"][0][0]
            entries, aux_offset = struct.unpack_from(">II", data, saio + 12)
            assert entries == 1
            p = base + aux_offset
            for i, size in enumerate(aux_sizes):
                aux[i] = data[p : p + size]
                p += size
        seig = None
        if b"sbgp" in boxes:
            sbgp = boxes[b"sbgp"][0][0]
            assert data[sbgp + 12 : sbgp + 16] == b"seig"
            _n, samples_in_group, index = struct.unpack_from(">III", data, sbgp + 16)
            assert (samples_in_group, index) == (count, 0x10001)
            sgpd = boxes[b"sgpd"][0][0]
            assert data[sgpd + 12 : sgpd + 16] == b"seig"
            seig = parse_key_info(data, sgpd + 24)
        senc_entries = b""
        if b"senc" in boxes:
            s, e = boxes[b"senc"][0]
            senc_entries = data[s + 16 : e]
        trafs.append(Traf(track_id, [FragmentSample(p, a, None) for p, a in zip(payloads, aux, strict=True)],
                          seig, senc_entries))
    return trafs, [parse_pssh(data, s) for s, _ in top.get(b"pssh", [])]


def split_aux(aux: bytes, iv_size: int) -> tuple[bytes, list[tuple[int, int]] | None]:
    iv = aux[:iv_size]
    rest = aux[iv_size:]
    if not rest:
        return iv, None
    (n,) = struct.unpack_from(">H", rest)
    subs = [struct.unpack_from(">HI", rest, 2 + 6 * i) for i in range(n)]
    assert len(rest) == 2 + 6 * n
    return iv, [(int(c), int(p)) for c, p in subs]


def _aes_block(key: bytes, block: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(block) + op.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def decrypt_sample(scheme: bytes, key: bytes, info: KeyInfo, sample: bytes, aux: bytes) -> bytes:
    """One sample decrypted as §10.1 (cenc) and §10.4 (cbcs) describe."""
    iv, subsamples = split_aux(aux, info.iv_size)
    ranges = []
    pos = 0
    for clear, protected in subsamples or [(0, len(sample))]:
        pos += clear
        ranges.append((pos, protected))
        pos += protected
    assert pos == len(sample)
    out = bytearray(sample)
    if scheme == b"cenc":
        counter_block = iv + bytes(8)
        stream = b"".join(sample[s : s + n] for s, n in ranges)
        plain = bytearray()
        for i in range(0, len(stream), 16):
            counter = (int.from_bytes(counter_block, "big") + i // 16) % (1 << 128)
            pad = _aes_block(key, counter.to_bytes(16, "big"))
            chunk = stream[i : i + 16]
            plain += _xor(chunk, pad[: len(chunk)])
        p = 0
        for s, n in ranges:
            out[s : s + n] = plain[p : p + n]
            p += n
        return bytes(out)
    assert scheme == b"cbcs"
    crypt, skip = (info.crypt, info.skip) if (info.crypt or info.skip) else (1, 0)
    for start, size in ranges:
        previous = info.constant_iv  # the chain starts again in every subsample
        blocks = size // 16
        for b in range(blocks):
            if b % (crypt + skip) >= crypt:
                continue
            cipher_block = sample[start + 16 * b : start + 16 * b + 16]
            out[start + 16 * b : start + 16 * b + 16] = _xor(_aes_block(key, cipher_block, True), previous)
            previous = cipher_block
    return bytes(out)
