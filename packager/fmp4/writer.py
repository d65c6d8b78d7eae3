"""The fMP4/CMAF writer one output holds: init segment once, then fragments.

Usage::

    writer = Fmp4Writer(tracks)
    init = writer.init_segment()           # serve as EXT-X-MAP
    part = writer.fragment(packets, seq)   # one moof+mdat per LL-HLS part
    segment = writer.segment_type() + b"".join(parts)   # optional styp

The writer keeps no state between fragments: ``tfdt`` is each first
packet's rescaled decode time, so fragments are continuous exactly when the
packets are, and a writer can be rebuilt at any time from the same tracks.
After a discontinuity (:class:`engine.media.StreamStarted` with new tracks)
make a new writer and a new init segment.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.codecs import CodecError, describe_track
from engine.media import Codec, MediaKind, Packet, Track
from packager.fmp4.boxes import box
from packager.fmp4.errors import Fmp4TrackError, Fmp4UsageError
from packager.fmp4.fragment import Sample, fragment, samples_for
from packager.fmp4.init import TrackSlot, init_segment

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

    def __init__(self, tracks: Sequence[Track]) -> None:
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
        self._init = init_segment(self._slots)

    @property
    def tracks(self) -> tuple[Track, ...]:
        """The tracks as written (sizes and rates filled from extradata)."""
        return tuple(s.track for s in self._slots)

    def timescale(self, track_index: int) -> int:
        """The MP4 timescale used for the track with :attr:`Track.index`."""
        return self._slot(track_index).timescale

    def init_segment(self) -> bytes:
        """``ftyp`` + ``moov``: the initialization segment (EXT-X-MAP)."""
        return self._init

    def segment_type(self) -> bytes:
        """A ``styp`` box a caller may put before a media segment."""
        return box(b"styp", SEGMENT_BRANDS[0], bytes(4), *SEGMENT_BRANDS)

    def fragment(self, packets: Sequence[Packet], sequence_number: int) -> bytes:
        """One ``moof`` + ``mdat`` holding ``packets``.

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
        return fragment(runs, sequence_number)

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
