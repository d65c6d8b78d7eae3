"""The media model every ingest writes and every output reads.

Ingests (RTMP, WHIP, files) turn their wire formats into :class:`Track` and
:class:`Packet` values; outputs (HLS, WHEP, recorder) consume them. Timestamps
are integers counted in an exact :class:`fractions.Fraction` time base, never
floats, so rescaling between protocols never drifts.

Bitstream conventions, fixed here so that no output has to guess:

* H.264 and HEVC packets carry length-prefixed NAL units (AVCC / HVCC, 4-byte
  lengths); the track's ``extradata`` is the ``avcC`` / ``hvcC`` record.
* AV1 packets carry low-overhead OBUs; ``extradata`` is the ``av1C`` record.
* AAC packets carry raw access units (no ADTS); ``extradata`` is the
  AudioSpecificConfig.
* Opus packets carry raw Opus packets; ``extradata`` may be empty.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction

from engine.errors import StreamNameError

STREAM_NAME_RULE = "1 to 64 characters, each a letter A-Z or a-z, a digit, '_' or '-'"
"""What a stream name (and a rendition's rung name) may be. Names become URL
path segments and folder names, so they never hold '/', '.', or anything a
path, a playlist or a log line would read differently."""

_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_stream_name(name: str, what: str = "stream name") -> str:
    """Return ``name`` when it follows :data:`STREAM_NAME_RULE` (whole
    string, no trailing newline), else raise :class:`StreamNameError`."""
    if not isinstance(name, str) or _STREAM_NAME.fullmatch(name) is None:
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise StreamNameError(f"{what} {shown} is not allowed: use {STREAM_NAME_RULE}")
    return name


@dataclass(frozen=True, slots=True)
class RenditionId:
    """The identity of a rendition: a stream of its own (the transcoder
    publishes each rung), tied to its source by structure, never by parsing a
    name. ``str()`` gives ``SOURCE/RUNG`` for logs and metric labels only;
    no code reads that string back."""

    source: str
    rung: str

    def __post_init__(self) -> None:
        check_stream_name(self.source, "source stream name")
        check_stream_name(self.rung, "rung name")

    def __str__(self) -> str:
        return f"{self.source}/{self.rung}"


StreamKey = str | RenditionId
"""What the registry knows a stream by: a source's name, or a rendition's id."""


class MediaKind(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"


class Codec(enum.Enum):
    """Codecs the engine carries end to end."""

    H264 = "h264"
    HEVC = "hevc"
    AV1 = "av1"
    VP8 = "vp8"
    VP9 = "vp9"
    AAC = "aac"
    OPUS = "opus"

    @property
    def kind(self) -> MediaKind:
        if self in (Codec.AAC, Codec.OPUS):
            return MediaKind.AUDIO
        return MediaKind.VIDEO


@dataclass(frozen=True, slots=True)
class Track:
    """One elementary stream of a live stream.

    ``index`` is the track's position within its stream and is what
    :attr:`Packet.track` refers to. Video fields are ``None`` for audio and
    the other way round. ``bitrate`` is the publisher's declared bit rate
    (bits per second) when it declared one.
    """

    index: int
    codec: Codec
    time_base: Fraction
    extradata: bytes = b""
    width: int | None = None
    height: int | None = None
    frame_rate: Fraction | None = None
    sample_rate: int | None = None
    channels: int | None = None
    bitrate: int | None = None

    @property
    def kind(self) -> MediaKind:
        return self.codec.kind

    def with_changes(self, **changes: object) -> Track:
        """Return a copy with ``changes`` applied (tracks are immutable)."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Packet:
    """One encoded access unit of one track.

    ``pts`` and ``dts`` count ``time_base`` units from an origin chosen by the
    ingest; they never go backwards for a given track within one publish
    (ingests unwrap 32-bit wire clocks). ``duration`` is 0 when unknown.
    """

    track: int
    pts: int
    dts: int
    time_base: Fraction
    data: bytes
    keyframe: bool = False
    duration: int = 0

    def rescaled(self, time_base: Fraction) -> Packet:
        """Return this packet with timestamps expressed in ``time_base``."""
        if time_base == self.time_base:
            return self
        return replace(
            self,
            pts=rescale(self.pts, self.time_base, time_base),
            dts=rescale(self.dts, self.time_base, time_base),
            duration=rescale(self.duration, self.time_base, time_base),
            time_base=time_base,
        )

    @property
    def pts_seconds(self) -> Fraction:
        return self.pts * self.time_base

    @property
    def dts_seconds(self) -> Fraction:
        return self.dts * self.time_base


def rescale(value: int, src: Fraction, dst: Fraction) -> int:
    """Convert ``value`` from time base ``src`` to ``dst``, rounding to nearest.

    Ties round half away from zero, like FFmpeg's ``av_rescale``, so that
    round trips between common time bases (1/1000, 1/90000, 1/48000) are exact
    whenever the value is representable in both.
    """
    if src == dst:
        return value
    num = value * src.numerator * dst.denominator
    den = src.denominator * dst.numerator
    if num >= 0:
        return (2 * num + den) // (2 * den)
    return -((-2 * num + den) // (2 * den))


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The stream's track set, sent first to every consumer and again after a
    reconnect (``discontinuity`` is then true: timestamps restart and codec
    parameters may have changed, so outputs mark a discontinuity)."""

    tracks: tuple[Track, ...]
    discontinuity: bool = False
    clock_continues: bool = False
    """With ``discontinuity``: the timestamps carry on from the previous
    track set (the codec parameters changed mid-stream, e.g. a rendition
    switched from a copied to an encoded picture), so outputs keep their
    timeline instead of re-basing it as after a reconnect."""


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The publisher is gone for good (the reconnect grace window passed)."""

    reason: str = ""


StreamItem = Packet | StreamStarted | StreamEnded


@dataclass(slots=True)
class TimestampUnwrapper:
    """Turns a wrapping wire clock (RTMP's 32-bit milliseconds) into a
    monotonic 64-bit count.

    A jump backwards by more than half the range is taken as a wrap; smaller
    backward steps (B-frame reordering never moves dts back, but broken
    publishers do) are passed through so that the caller can decide.
    """

    bits: int = 32
    _last: int | None = None
    _offset: int = 0
    _modulus: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._modulus = 1 << self.bits

    def unwrap(self, value: int) -> int:
        value &= self._modulus - 1
        if self._last is not None:
            delta = value - self._last
            if delta < -(self._modulus // 2):
                self._offset += self._modulus
            elif delta > self._modulus // 2 and self._offset >= self._modulus:
                # A late value from before the wrap we already took.
                self._last = value
                return value + self._offset - self._modulus
        self._last = value
        return value + self._offset
