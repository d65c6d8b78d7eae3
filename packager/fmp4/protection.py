"""Common encryption boxes (ISO/IEC 23001-7 §8, ISO/IEC 14496-12 §8.12).

In the init segment, a protected track's sample entry becomes ``encv`` or
``enca`` with a ``sinf`` (``frma`` keeps the original format, ``schm``
names the scheme, ``schi`` > ``tenc`` gives the default key ID, the IV size
or constant IV, and the ``cbcs`` pattern), and ``moov`` carries ``pssh``
boxes. In each ``traf`` of a fragment, ``senc`` holds the sample auxiliary
information (per-sample IVs, subsample lists), ``saiz``/``saio`` point at
it, and when the fragment's key is not the init segment's default, a
``seig`` sample group (``sgpd`` + ``sbgp``) names the key.

Every function here returns finished box bytes; nothing touches keys other
than to copy a key ID or a constant IV into a box.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drm.cenc import EncryptedSample
from drm.model import ContentKey, DrmSystemData, KeyPeriod, Protection, SystemId
from packager.fmp4.boxes import box, full_box
from packager.fmp4.errors import Fmp4UsageError

SCHEME_VERSION = 0x00010000
#: sbgp group_description_index of the fragment's own first sgpd entry (§8.9.4).
FRAGMENT_LOCAL_GROUP = 0x10001
_SENC_SUBSAMPLES = 0x000002


@dataclass(frozen=True, slots=True)
class TrackProtection:
    """How one track is protected: scheme, pattern and IV size."""

    scheme: Protection
    pattern: tuple[int, int]
    per_sample_iv_size: int

    @property
    def four_cc(self) -> bytes:
        return self.scheme.value.encode("ascii")


def _key_info(protection: TrackProtection, key: ContentKey) -> bytes:
    """The fields ``tenc`` and a ``seig`` entry share, from the pattern
    byte on (their first byte is reserved in both)."""
    crypt, skip = protection.pattern
    fields = struct.pack(">BBB", (crypt << 4) | skip, 1, protection.per_sample_iv_size) + key.kid
    if protection.per_sample_iv_size == 0:
        fields += struct.pack(">B", len(key.iv)) + key.iv
    return fields


def tenc(protection: TrackProtection, key: ContentKey) -> bytes:
    """``tenc``: version 1 (with the pattern byte) for ``cbcs``, version 0
    (that byte reserved) for ``cenc``."""
    version = 1 if protection.scheme is Protection.CBCS else 0
    info = _key_info(protection, key)
    if version == 0:
        info = b"\x00" + info[1:]
    return full_box(b"tenc", version, 0, b"\x00", info)


def sinf(original_format: bytes, protection: TrackProtection, key: ContentKey) -> bytes:
    return box(
        b"sinf",
        box(b"frma", original_format),
        full_box(b"schm", 0, 0, protection.four_cc, struct.pack(">I", SCHEME_VERSION)),
        box(b"schi", tenc(protection, key)),
    )


def protected_entry(entry: bytes, video: bool, protection: TrackProtection, key: ContentKey) -> bytes:
    """Turn a sample entry box into ``encv``/``enca``: same fields and
    children, its original type moved into ``frma``, ``sinf`` appended."""
    original = entry[4:8]
    return box(b"encv" if video else b"enca", entry[8:], sinf(original, protection, key))


def pssh(system_id: uuid.UUID, kids: Sequence[bytes] = (), data: bytes = b"") -> bytes:
    """A ``pssh`` box: version 1 listing ``kids`` (the W3C common system
    form), or version 0 when there are none."""
    if kids:
        return full_box(b"pssh", 1, 0, system_id.bytes, struct.pack(">I", len(kids)), *kids,
                        struct.pack(">I", len(data)), data)
    return full_box(b"pssh", 0, 0, system_id.bytes, struct.pack(">I", len(data)), data)


def pssh_boxes(period: KeyPeriod) -> list[bytes]:
    """The ClearKey box listing the period's key ID, then every ``pssh`` the
    key provider supplied for the period (Widevine, PlayReady...)."""
    boxes = [pssh(SystemId.CLEARKEY.value, [period.key.kid])]
    boxes += [system.pssh for system in _systems(period.systems) if system.pssh]
    return boxes


def _systems(systems: Iterable[DrmSystemData]) -> list[DrmSystemData]:
    out = []
    for system in systems:
        if system.pssh is not None and system.pssh[4:8] != b"pssh":
            raise Fmp4UsageError(f"the DRM system data for {system.system_id} holds no pssh box")
        out.append(system)
    return out


def senc(samples: Sequence[EncryptedSample], subsamples: bool) -> bytes:
    """``senc`` with one entry per sample (its IV, then its subsamples)."""
    rows = []
    for sample in samples:
        row = sample.iv
        if subsamples:
            row += struct.pack(">H", len(sample.subsamples))
            row += b"".join(struct.pack(">HI", s.clear, s.protected) for s in sample.subsamples)
        rows.append(row)
    return full_box(b"senc", 0, _SENC_SUBSAMPLES if subsamples else 0, struct.pack(">I", len(samples)), *rows)


def aux_info_sizes(samples: Sequence[EncryptedSample], subsamples: bool) -> list[int]:
    sizes = []
    for sample in samples:
        size = len(sample.iv)
        if subsamples:
            size += 2 + 6 * len(sample.subsamples)
        if size > 0xFF:
            raise Fmp4UsageError(f"a sample of {len(sample.subsamples)} subsamples needs more than 255 bytes of saiz")
        sizes.append(size)
    return sizes


def saiz(sizes: Sequence[int]) -> bytes:
    """``saiz``: one default size when all samples agree, else a table."""
    if sizes and all(s == sizes[0] for s in sizes) and sizes[0]:
        return full_box(b"saiz", 0, 0, struct.pack(">BI", sizes[0], len(sizes)))
    return full_box(b"saiz", 0, 0, struct.pack(">BI", 0, len(sizes)), bytes(sizes))


def saio(offset: int) -> bytes:
    """``saio`` with one offset, from the ``moof`` (the base data offset
    that default-base-is-moof sets) to the first sample's entry in senc."""
    if not 0 <= offset <= 0xFFFFFFFF:
        raise Fmp4UsageError(f"saio offset {offset} does not fit 32 bits")
    return full_box(b"saio", 0, 0, struct.pack(">II", 1, offset))


SAIO_SIZE = len(saio(0))
#: From a senc box's first byte to its first sample entry.
SENC_ENTRIES_OFFSET = 16


def seig_group(protection: TrackProtection, key: ContentKey, sample_count: int) -> bytes:
    """``sgpd`` + ``sbgp`` that put every sample of the traf in one ``seig``
    group naming ``key`` (key rotation, §8.9 of ISO/IEC 23001-7)."""
    entry = b"\x00" + _key_info(protection, key)
    sgpd = full_box(b"sgpd", 1, 0, b"seig", struct.pack(">II", len(entry), 1), entry)
    sbgp = full_box(b"sbgp", 0, 0, b"seig", struct.pack(">III", 1, sample_count, FRAGMENT_LOCAL_GROUP))
    return sgpd + sbgp


@dataclass(frozen=True, slots=True)
class TrafProtection:
    """What a ``traf`` adds for one encrypted track run: the encrypted
    samples (whose data replaces the clear samples'), whether senc lists
    subsamples, and the ``seig`` group when the key is not the default."""

    samples: Sequence[EncryptedSample]
    subsamples: bool
    group: bytes = b""

    def boxes(self, senc_offset_from_moof: int) -> bytes:
        """The boxes that follow ``trun``; ``senc_offset_from_moof`` is
        where they start, counted from the ``moof``'s first byte."""
        sizes = aux_info_sizes(self.samples, self.subsamples)
        head = self.group + saiz(sizes)
        start = senc_offset_from_moof + len(head) + SAIO_SIZE + SENC_ENTRIES_OFFSET
        return head + saio(start) + senc(self.samples, self.subsamples)
