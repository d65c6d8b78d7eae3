"""The fMP4/CMAF writer one output holds: init segment once, then fragments.

Usage::

    writer = Fmp4Writer(tracks)
    init = writer.init_segment()           # serve as EXT-X-MAP
    part = writer.fragment(packets, seq)   # one moof+mdat per LL-HLS part
    segment = writer.segment_type() + b"".join(parts)   # optional styp

Encrypted (common encryption, ``cbcs`` or ``cenc``)::

    writer = Fmp4Writer(tracks, CencEncryption(Protection.CBCS, period))
    init = writer.init_segment()           # encv/enca + sinf, pssh
    part = writer.fragment(packets, seq)   # senc/saiz/saio, period's key
    part = writer.fragment(packets, seq, later_period)   # key rotation

A fragment encrypted with another period's key than the init segment's
names that key in a ``seig`` sample group and carries the period's ``pssh``
boxes in its ``moof``, so one init segment serves every key period (players
that handle ``seig``: Shaka, dash.js, ExoPlayer, AVFoundation). Callers that
prefer a new init segment per period get one from
``init_segment(period)``.

The writer keeps no state between fragments: ``tfdt`` is each first
packet's rescaled decode time, so fragments are continuous exactly when the
packets are, and a writer can be rebuilt at any time from the same tracks.
After a discontinuity (:class:`engine.media.StreamStarted` with new tracks)
make a new writer and a new init segment. With ``cenc``, per-sample IVs
derive from the sequence number (:func:`drm.cenc.cenc_iv_index`), so a
key period must never repeat a sequence number; the writer stays
stateless there too. Encryption is CPU work in C: call :meth:`fragment`
off the event loop, one thread per writer at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from drm.cenc import CencEncryption, TrackEncryptor
from drm.errors import SampleEncryptionError
from drm.model import KeyPeriod
from engine.codecs import CodecError, describe_track
from engine.media import Codec, MediaKind, Packet, Track
from packager.fmp4.boxes import box
from packager.fmp4.entries import sample_entry
from packager.fmp4.errors import Fmp4EncryptionError, Fmp4TrackError, Fmp4UsageError
from packager.fmp4.fragment import Sample, fragment, samples_for
from packager.fmp4.init import TrackSlot, init_segment
from packager.fmp4.protection import TrackProtection, TrafProtection, protected_entry, pssh_boxes, seig_group

VIDEO_TIMESCALE = 90000
SUPPORTED_CODECS = frozenset({Codec.H264, Codec.HEVC, Codec.AV1, Codec.AAC, Codec.OPUS})
#: ``styp`` brands for media segments (ISO/IEC 23000-19 §7.3.2).
SEGMENT_BRANDS = (b"msdh", b"msix", b"cmfs")


class Fmp4Writer:
    """Writes one fMP4 output holding ``tracks`` (one, or several muxed).

    Track IDs are the tracks' positions in ``tracks`` plus one. Video is
    timed at 90 kHz, audio at its sample rate (48 kHz for Opus). Packets name
    their track by :attr:`Track.index`.
    """

    def __init__(self, tracks: Sequence[Track], encryption: CencEncryption | None = None) -> None:
        if not tracks:
            raise Fmp4UsageError("an fMP4 writer needs at least one track")
        slots = []
        self._by_index: dict[int, TrackSlot] = {}
        for position, track in enumerate(tracks):
            if track.codec not in SUPPORTED_CODECS:
                raise Fmp4TrackError(f"track {track.index}: {track.codec.value} is not packaged in fMP4")
            if track.index in self._by_index:
                raise Fmp4UsageError(f"two tracks have index {track.index}")
            try:
                described = describe_track(track)
            except CodecError as exc:
                raise Fmp4TrackError(f"track {track.index} ({track.codec.value}): {exc}") from exc
            slot = TrackSlot(described, position + 1, _timescale(described))
            slots.append(slot)
            self._by_index[track.index] = slot
        self._slots = tuple(slots)
        self._encryption = encryption
        self._encryptors: dict[int, TrackEncryptor] = {}
        if encryption is not None:
            for slot in self._slots:
                try:
                    self._encryptors[slot.track_id] = TrackEncryptor(slot.track, encryption.scheme)
                except SampleEncryptionError as exc:
                    raise Fmp4TrackError(f"track {slot.track.index}: {exc}") from exc
        self._init = self._build_init(None)

    @property
    def tracks(self) -> tuple[Track, ...]:
        """The tracks as written (sizes and rates filled from extradata)."""
        return tuple(s.track for s in self._slots)

    def timescale(self, track_index: int) -> int:
        """The MP4 timescale used for the track with :attr:`Track.index`."""
        return self._slot(track_index).timescale

    @property
    def encryption(self) -> CencEncryption | None:
        return self._encryption

    @property
    def unreadable_slices(self) -> int:
        """Slices left clear so far because their header could not be read
        (see :class:`drm.subsamples.SubsampleMap`): report it as a metric."""
        return sum(e.map.unreadable_slices for e in self._encryptors.values() if e.map is not None)

    @property
    def unreadable_parameter_sets(self) -> int:
        """In-band parameter sets that did not parse so far (the slices that
        name them are then among :attr:`unreadable_slices`)."""
        return sum(e.map.unreadable_parameter_sets for e in self._encryptors.values() if e.map is not None)

    def init_segment(self, period: KeyPeriod | None = None) -> bytes:
        """``ftyp`` + ``moov``: the initialization segment (EXT-X-MAP).

        Encrypted, its tracks are ``encv``/``enca`` whose default key ID is
        ``period``'s (default: the writer's period), and ``moov`` carries
        the period's ``pssh`` boxes."""
        if period is None:
            return self._init
        if self._encryption is None:
            raise Fmp4UsageError("a clear writer has no key period")
        return self._build_init(period)

    def _build_init(self, period: KeyPeriod | None) -> bytes:
        if self._encryption is None:
            return init_segment(self._slots)
        period = period or self._encryption.period
        entries = {}
        for slot in self._slots:
            video = slot.track.kind is MediaKind.VIDEO
            entries[slot.track_id] = protected_entry(
                sample_entry(slot.track), video, self._protection(slot), period.key
            )
        return init_segment(self._slots, entries, pssh_boxes(period))

    def _protection(self, slot: TrackSlot) -> TrackProtection:
        encryptor = self._encryptors[slot.track_id]
        return TrackProtection(encryptor.scheme, encryptor.pattern, encryptor.per_sample_iv_size)

    def segment_type(self) -> bytes:
        """A ``styp`` box a caller may put before a media segment."""
        return box(b"styp", SEGMENT_BRANDS[0], bytes(4), *SEGMENT_BRANDS)

    def fragment(self, packets: Sequence[Packet], sequence_number: int, period: KeyPeriod | None = None) -> bytes:
        """One ``moof`` + ``mdat`` holding ``packets``.

        An encrypting writer encrypts the samples with ``period``'s key
        (default: the writer's period); a key other than the init segment's
        default is named by a ``seig`` group, with the period's ``pssh``
        boxes in the ``moof``.

        Packets may interleave tracks; each track's packets must be in decode
        order with decode times of 0 or more. ``sequence_number`` goes in
        ``mfhd`` and should grow by one per fragment. See
        :func:`packager.fmp4.fragment.samples_for` for how durations are set
        when ``Packet.duration`` is 0.
        """
        grouped: dict[int, list[Packet]] = {}
        for packet in packets:
            self._slot(packet.track)
            grouped.setdefault(packet.track, []).append(packet)
        runs: list[tuple[TrackSlot, Sequence[Sample]]] = []
        for slot in self._slots:
            group = grouped.get(slot.track.index)
            if group:
                runs.append((slot, samples_for(slot, group)))
        if self._encryption is None:
            if period is not None:
                raise Fmp4UsageError("a clear writer cannot encrypt with a key period")
            return fragment(runs, sequence_number)
        return self._encrypted_fragment(runs, sequence_number, period or self._encryption.period)

    def _encrypted_fragment(
        self, runs: list[tuple[TrackSlot, Sequence[Sample]]], sequence_number: int, period: KeyPeriod
    ) -> bytes:
        assert self._encryption is not None
        rotated = period.key.kid != self._encryption.period.key.kid
        protections = {}
        encrypted_runs: list[tuple[TrackSlot, Sequence[Sample]]] = []
        for slot, samples in runs:
            encryptor = self._encryptors[slot.track_id]
            try:
                encrypted = encryptor.encrypt([s.data for s in samples], period.key, sequence_number, slot.track_id)
            except SampleEncryptionError as exc:
                raise Fmp4EncryptionError(f"track {slot.track.index}: {exc}") from exc
            group = seig_group(self._protection(slot), period.key, len(samples)) if rotated else b""
            protections[slot.track_id] = TrafProtection(encrypted, encryptor.map is not None, group)
            encrypted_runs.append(
                (slot, [dataclasses.replace(s, data=e.data) for s, e in zip(samples, encrypted, strict=True)])
            )
        moof_boxes = pssh_boxes(period) if rotated else []
        return fragment(encrypted_runs, sequence_number, protections, moof_boxes)

    def _slot(self, track_index: int) -> TrackSlot:
        try:
            return self._by_index[track_index]
        except KeyError:
            raise Fmp4UsageError(f"this writer holds no track with index {track_index}") from None


def _timescale(track: Track) -> int:
    if track.kind is MediaKind.VIDEO:
        return VIDEO_TIMESCALE
    if track.codec is Codec.OPUS:
        return 48000
    if not track.sample_rate:
        raise Fmp4TrackError(f"track {track.index}: audio sample rate unknown")
    return track.sample_rate
