"""Turns parsed FLV tags with RTMP timestamps into the engine's tracks and
packets.

RTMP has no explicit track list: ``onMetaData`` may announce which media
follow, and each codec's configuration arrives in its own sequence header.
The assembler holds coded frames (a bounded number) until every announced
track has its configuration, or, with no announcement, until both audio and
video are configured or a bounded number of media messages has passed. Then
it reports the track set (video first) and releases the held frames in
arrival order, so the first packets of a publish are not lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from engine.media import Codec, MediaKind, Packet, TimestampUnwrapper, Track
from ingest.rtmp.amf0 import UNDEFINED, AmfValue, as_number
from ingest.rtmp.errors import RtmpLimitError, RtmpProtocolError
from ingest.rtmp.events import Event, MediaPacket, TracksChanged, TracksReady
from ingest.rtmp.flv import MediaTag, TagRole, aac_rate_and_channels

TIME_BASE = Fraction(1, 1000)
"""RTMP timestamps are milliseconds."""


@dataclass(frozen=True, slots=True)
class MetadataHints:
    """What ``onMetaData`` declared, normalised. ``has_video``/``has_audio``
    are ``None`` when the metadata does not say."""

    has_video: bool | None = None
    has_audio: bool | None = None
    width: int | None = None
    height: int | None = None
    frame_rate: Fraction | None = None
    video_bitrate: int | None = None
    audio_bitrate: int | None = None
    sample_rate: int | None = None
    channels: int | None = None


def _positive_int(value: AmfValue) -> int | None:
    number = as_number(value)
    if number is None or number <= 0 or number > 1 << 31:
        return None
    return round(number)


def _frame_rate(rate: float) -> Fraction:
    """Metadata frame rates are floats: 29.97 stands for 30000/1001."""
    if abs(rate - round(rate)) < 1e-3:
        return Fraction(round(rate))
    ntsc = rate * 1.001
    if abs(ntsc - round(ntsc)) < 1e-2:
        return Fraction(round(ntsc) * 1000, 1001)
    return Fraction(rate).limit_denominator(1000)


def _declared(meta: dict[str, AmfValue], key: str) -> bool | None:
    if key not in meta:
        return None
    value = meta[key]
    return value is not None and value is not UNDEFINED and value != 0 and value != ""


def hints_from_metadata(meta: dict[str, AmfValue]) -> MetadataHints:
    """Read the fields encoders put in ``onMetaData`` (ffmpeg, OBS and
    GStreamer agree on these names; data rates are in kbit/s)."""
    rate = as_number(meta.get("framerate", meta.get("videoframerate")))
    frame_rate = _frame_rate(rate) if rate is not None and 0 < rate < 1000 else None
    channels = _positive_int(meta.get("audiochannels"))
    if channels is None and isinstance(meta.get("stereo"), bool):
        channels = 2 if meta["stereo"] else 1
    vrate = as_number(meta.get("videodatarate"))
    arate = as_number(meta.get("audiodatarate"))
    return MetadataHints(
        has_video=_declared(meta, "videocodecid"),
        has_audio=_declared(meta, "audiocodecid"),
        width=_positive_int(meta.get("width")),
        height=_positive_int(meta.get("height")),
        frame_rate=frame_rate,
        video_bitrate=int(vrate * 1000) if vrate is not None and 0 < vrate < 1e7 else None,
        audio_bitrate=int(arate * 1000) if arate is not None and 0 < arate < 1e7 else None,
        sample_rate=_positive_int(meta.get("audiosamplerate")),
        channels=channels,
    )


@dataclass(slots=True)
class _Config:
    codec: Codec
    extradata: bytes


@dataclass(slots=True)
class _Held:
    kind: MediaKind
    tag: MediaTag
    dts: int


class TrackAssembler:
    """Feed it tags with :meth:`push`; it returns the events to report.

    ``probe_messages`` is how many media messages may pass, with no track
    announcement, before the configured tracks start anyway;
    ``max_held`` bounds the frames held meanwhile (exceeding it when the
    announced configurations never arrive is a limit error).
    """

    def __init__(self, probe_messages: int, max_held: int) -> None:
        self._probe = probe_messages
        self._max_held = max_held
        self.hints = MetadataHints()
        self._configs: dict[MediaKind, _Config] = {}
        self._index: dict[MediaKind, int] = {}
        self._clocks = {MediaKind.VIDEO: TimestampUnwrapper(), MediaKind.AUDIO: TimestampUnwrapper()}
        self._held: list[_Held] = []
        self._seen = 0
        self.tracks: tuple[Track, ...] = ()
        self.ready = False
        self.dropped = 0
        """Coded frames dropped because their track had no configuration."""

    def set_metadata(self, hints: MetadataHints) -> None:
        self.hints = hints

    def _expected(self) -> set[MediaKind]:
        h = self.hints
        if h.has_video is None and h.has_audio is None:
            return {MediaKind.VIDEO, MediaKind.AUDIO}
        expected = set()
        if h.has_video:
            expected.add(MediaKind.VIDEO)
        if h.has_audio:
            expected.add(MediaKind.AUDIO)
        return expected

    def _build_track(self, kind: MediaKind, index: int) -> Track:
        cfg = self._configs[kind]
        h = self.hints
        if kind is MediaKind.VIDEO:
            return Track(index, cfg.codec, TIME_BASE, cfg.extradata, width=h.width, height=h.height,
                         frame_rate=h.frame_rate, bitrate=h.video_bitrate)
        rate, channels = (None, None)
        if cfg.codec is Codec.AAC:
            rate, channels = aac_rate_and_channels(cfg.extradata)
        elif cfg.codec is Codec.OPUS:
            rate = 48000
            if len(cfg.extradata) >= 10 and cfg.extradata[:8] == b"OpusHead":
                channels = cfg.extradata[9] or None
        return Track(index, cfg.codec, TIME_BASE, cfg.extradata, sample_rate=rate or h.sample_rate,
                     channels=channels or h.channels, bitrate=h.audio_bitrate)

    def _rebuild(self) -> tuple[Track, ...]:
        tracks = [self._build_track(kind, index) for kind, index in self._index.items()]
        self.tracks = tuple(sorted(tracks, key=lambda t: t.index))
        return self.tracks

    def push(self, kind: MediaKind, tag: MediaTag, wire_ts: int) -> list[Event]:
        """Take one tag with its 32-bit RTMP timestamp."""
        dts = self._clocks[kind].unwrap(wire_ts)
        events: list[Event] = []
        if tag.role is TagRole.CONFIG:
            cfg = _Config(tag.codec, tag.data)
            if self._configs.get(kind) == cfg:
                return events
            self._configs[kind] = cfg
            if self.ready:
                if kind not in self._index:
                    self._index[kind] = len(self._index)
                events.append(TracksChanged(self._rebuild()))
                return events
        elif tag.role is TagRole.FRAME:
            cfg_now = self._configs.get(kind)
            if cfg_now is not None and cfg_now.codec is not tag.codec:
                raise RtmpProtocolError(f"{tag.codec.value} frames on a {cfg_now.codec.value} track")
            if self.ready:
                self._emit(kind, tag, dts, events)
                return events
            if len(self._held) >= self._max_held:
                raise RtmpLimitError(f"track configuration still incomplete after {self._max_held} media messages")
            self._held.append(_Held(kind, tag, dts))
            self._seen += 1
        else:
            return events  # end of sequence: the media model needs no marker
        if not self.ready and self._configs:
            if self._expected() <= self._configs.keys() or self._seen >= self._probe:
                self._start(events)
        return events

    def _start(self, events: list[Event]) -> None:
        self.ready = True
        for kind in (MediaKind.VIDEO, MediaKind.AUDIO):
            if kind in self._configs:
                self._index[kind] = len(self._index)
        events.append(TracksReady(self._rebuild()))
        held, self._held = self._held, []
        for item in held:
            self._emit(item.kind, item.tag, item.dts, events)

    def _emit(self, kind: MediaKind, tag: MediaTag, dts: int, events: list[Event]) -> None:
        index = self._index.get(kind)
        if index is None:
            self.dropped += 1
            return
        pts = dts + tag.cts if kind is MediaKind.VIDEO else dts
        events.append(MediaPacket(Packet(index, pts, dts, TIME_BASE, tag.data, keyframe=tag.keyframe)))
