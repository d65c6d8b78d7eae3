"""MPEG-DASH manifests (ISO/IEC 23009-1, DASH-IF IOP) as data, rendered to XML.

This module is sans-I/O: a :class:`Manifest` holds every value the MPD
states (no clock is read here) and :func:`render` writes it. The segments it
names are the CMAF files the HLS output writes; :mod:`packager.dash.manifest`
builds a :class:`Manifest` from that output's state.

Times inside a Representation are integers in its ``timescale``; Period
starts are exact :class:`~fractions.Fraction` seconds, chosen by the caller
so that ``presentation_time_offset / timescale`` equals the Period's start in
the stream's media timeline (the XML then states both exactly).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from xml.sax.saxutils import escape, quoteattr

from drm.model import DrmSystemData, KeyPeriod, Protection, SystemId
from drm.pssh import clearkey_pssh
from packager.errors import ManifestError

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
CENC_NS = "urn:mpeg:cenc:2013"
DASHIF_NS = "https://dashif.org/CPS"
PROFILE_LIVE = "urn:mpeg:dash:profile:isoff-live:2011"
UTC_HTTP_XSDATE = "urn:mpeg:dash:utc:http-xsdate:2014"
MP4_PROTECTION = "urn:mpeg:dash:mp4protection:2011"

_NAMESPACES = {"xmlns": MPD_NS, "xmlns:cenc": CENC_NS, "xmlns:dashif": DASHIF_NS}


@dataclass(slots=True)
class _Element:
    """An XML element as the writer builds it (names carry their prefix)."""

    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[_Element] = field(default_factory=list)
    text: str | None = None

    def add(self, name: str, attrs: dict[str, str] | None = None) -> _Element:
        child = _Element(name, dict(attrs or {}))
        self.children.append(child)
        return child

    def write(self, out: list[str], depth: int) -> None:
        pad = "  " * depth
        attrs = "".join(f" {k}={quoteattr(v)}" for k, v in self.attrs.items())
        if self.text is not None:
            out.append(f"{pad}<{self.name}{attrs}>{escape(self.text)}</{self.name}>")
        elif not self.children:
            out.append(f"{pad}<{self.name}{attrs}/>")
        else:
            out.append(f"{pad}<{self.name}{attrs}>")
            for child in self.children:
                child.write(out, depth + 1)
            out.append(f"{pad}</{self.name}>")


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One media segment: its ``$Number$`` and its time and duration in the
    Representation's timescale (SegmentTimeline ``S@t``/``S@d``)."""

    number: int
    time: int
    duration: int


@dataclass(frozen=True, slots=True)
class Representation:
    """One variant within one Period: its init segment and media segments.

    ``initialization`` and ``media`` are SegmentTemplate strings relative to
    the manifest (``media`` holds ``$Number$``); the caller has already
    appended any query a viewer's URLs carry.
    """

    id: str
    bandwidth: int
    codecs: str
    mime_type: str
    timescale: int
    presentation_time_offset: int
    initialization: str
    media: str
    segments: tuple[TimelineEntry, ...]
    width: int | None = None
    height: int | None = None
    frame_rate: Fraction | None = None
    audio_sampling_rate: int | None = None


@dataclass(frozen=True, slots=True)
class ContentProtection:
    """How a Period's media is encrypted and where its keys come from."""

    scheme: Protection
    key_period: KeyPeriod
    clearkey_licence_url: str | None = None
    """The W3C ClearKey licence endpoint (``dashif:Laurl``), with the viewer's token."""


@dataclass(frozen=True, slots=True)
class AdaptationSet:
    id: int
    content_type: str
    """``video`` (video, possibly with the audio muxed in) or ``audio``."""
    mime_type: str
    representations: tuple[Representation, ...]


@dataclass(frozen=True, slots=True)
class Period:
    id: str
    start: Fraction
    adaptation_sets: tuple[AdaptationSet, ...]
    protection: ContentProtection | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A whole MPD. ``dynamic`` manifests need ``availability_start`` (the
    wall-clock time of MPD time 0, seconds since the epoch) and state the
    update, buffer and delay figures; static ones state their duration."""

    dynamic: bool
    periods: tuple[Period, ...]
    publish_time: float
    min_buffer_time: Fraction
    max_segment_duration: Fraction
    availability_start: float | None = None
    minimum_update_period: Fraction | None = None
    time_shift_buffer_depth: Fraction | None = None
    suggested_presentation_delay: Fraction | None = None
    duration: Fraction | None = None
    utc_timing_url: str | None = None


def format_duration(seconds: Fraction) -> str:
    """An xs:duration in seconds (``PT12.5S``): exact when the value has a
    finite decimal form within six places, else rounded up to the
    microsecond (durations are maxima or minima, never positions)."""
    if seconds < 0:
        raise ManifestError(f"a negative duration: {seconds}")
    return f"PT{_decimal(seconds)}S"


def _decimal(value: Fraction) -> str:
    micro = value * 1_000_000
    whole = math.ceil(micro)
    text = f"{whole // 1_000_000}"
    rest = whole % 1_000_000
    if rest:
        text += "." + f"{rest:06d}".rstrip("0")
    return text


def format_datetime(epoch_seconds: float) -> str:
    """An xs:dateTime in UTC with milliseconds (also the ``/dash/time`` answer)."""
    dt = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _timeline(parent: _Element, segments: Sequence[TimelineEntry]) -> None:
    """``S`` elements, runs of contiguous equal durations folded into ``@r``."""
    timeline = parent.add("SegmentTimeline")
    run_start: TimelineEntry | None = None
    repeat = 0
    expected_next = None
    for i, seg in enumerate(segments):
        if i and seg.number != segments[i - 1].number + 1:
            raise ManifestError("segment numbers within a Representation must increase by one")
        if seg.duration <= 0:
            raise ManifestError(f"segment {seg.number} has no duration")
        if (
            run_start is not None
            and seg.duration == run_start.duration
            and seg.time == expected_next
        ):
            repeat += 1
        else:
            if run_start is not None:
                _s(timeline, run_start, repeat)
            if expected_next is not None and seg.time < expected_next:
                raise ManifestError(f"segment {seg.number} starts before the previous one ends")
            run_start, repeat = seg, 0
        expected_next = seg.time + seg.duration
    if run_start is not None:
        _s(timeline, run_start, repeat)


def _s(timeline: _Element, seg: TimelineEntry, repeat: int) -> None:
    attrs = {"t": str(seg.time), "d": str(seg.duration)}
    if repeat:
        attrs["r"] = str(repeat)
    timeline.add("S", attrs)


def _frame_rate(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def _representation(parent: _Element, rep: Representation) -> None:
    if not rep.segments:
        raise ManifestError(f"representation {rep.id} lists no segment")
    attrs = {
        "id": rep.id,
        "bandwidth": str(max(1, rep.bandwidth)),
        "codecs": rep.codecs,
        "mimeType": rep.mime_type,
    }
    if rep.width and rep.height:
        attrs["width"], attrs["height"] = str(rep.width), str(rep.height)
    if rep.frame_rate:
        attrs["frameRate"] = _frame_rate(rep.frame_rate)
    if rep.audio_sampling_rate:
        attrs["audioSamplingRate"] = str(rep.audio_sampling_rate)
    element = parent.add("Representation", attrs)
    template = element.add(
        "SegmentTemplate",
        {
            "timescale": str(rep.timescale),
            "presentationTimeOffset": str(rep.presentation_time_offset),
            "startNumber": str(rep.segments[0].number),
            "initialization": rep.initialization,
            "media": rep.media,
        },
    )
    if rep.segments[0].time < rep.presentation_time_offset:
        raise ManifestError(f"representation {rep.id} starts before its Period")
    _timeline(template, rep.segments)


def _content_protection(parent: _Element, protection: ContentProtection) -> None:
    """The scheme element with ``cenc:default_KID``, then one element per
    DRM system with its ``pssh`` (DASH-IF IOP 7.7.2)."""
    if not protection.scheme.common_encryption:
        raise ManifestError(f"DASH carries cenc or cbcs, not {protection.scheme.value}")
    kid = str(protection.key_period.key.kid_uuid)
    parent.add("ContentProtection", {"schemeIdUri": MP4_PROTECTION, "value": protection.scheme.value,
                                     "cenc:default_KID": kid})
    systems = {s.system_id: s for s in protection.key_period.systems}
    if SystemId.CLEARKEY.value not in systems and protection.clearkey_licence_url is not None:
        # Keys this engine hands out itself: the W3C common system's box names them.
        clearkey = DrmSystemData(SystemId.CLEARKEY.value, pssh=clearkey_pssh([protection.key_period.key.kid]))
        systems = {SystemId.CLEARKEY.value: clearkey, **systems}
    for system_id, data in systems.items():
        element = parent.add("ContentProtection", {"schemeIdUri": f"urn:uuid:{system_id}", "cenc:default_KID": kid})
        if system_id == SystemId.CLEARKEY.value and protection.clearkey_licence_url is not None:
            element.add("dashif:Laurl", {"licenseType": "EME-1.0"}).text = protection.clearkey_licence_url
        if data.pssh:
            element.add("cenc:pssh").text = base64.b64encode(data.pssh).decode("ascii")


def render(manifest: Manifest) -> str:
    """The MPD text (UTF-8 XML with its declaration)."""
    if not manifest.periods:
        raise ManifestError("a manifest needs at least one Period")
    attrs = {
        "profiles": PROFILE_LIVE,
        "type": "dynamic" if manifest.dynamic else "static",
        "minBufferTime": format_duration(manifest.min_buffer_time),
        "maxSegmentDuration": format_duration(manifest.max_segment_duration),
        "publishTime": format_datetime(manifest.publish_time),
    }
    if manifest.dynamic:
        if manifest.availability_start is None or manifest.minimum_update_period is None:
            raise ManifestError("a dynamic manifest needs availabilityStartTime and minimumUpdatePeriod")
        attrs["availabilityStartTime"] = format_datetime(manifest.availability_start)
        attrs["minimumUpdatePeriod"] = format_duration(manifest.minimum_update_period)
        if manifest.time_shift_buffer_depth is not None:
            attrs["timeShiftBufferDepth"] = format_duration(manifest.time_shift_buffer_depth)
        if manifest.suggested_presentation_delay is not None:
            attrs["suggestedPresentationDelay"] = format_duration(manifest.suggested_presentation_delay)
    else:
        if manifest.duration is None:
            raise ManifestError("a static manifest needs its duration")
        attrs["mediaPresentationDuration"] = format_duration(manifest.duration)
    root = _Element("MPD", {**_NAMESPACES, **attrs})
    previous: Fraction | None = None
    for period in manifest.periods:
        if previous is not None and period.start <= previous:
            raise ManifestError("Periods must start in increasing order")
        previous = period.start
        element = root.add("Period", {"id": period.id, "start": format_duration(period.start)})
        for adaptation in period.adaptation_sets:
            aset = element.add(
                "AdaptationSet",
                {
                    "id": str(adaptation.id),
                    "contentType": adaptation.content_type,
                    "mimeType": adaptation.mime_type,
                    "segmentAlignment": "true",
                    "startWithSAP": "1",
                },
            )
            if period.protection is not None:
                _content_protection(aset, period.protection)
            for rep in adaptation.representations:
                _representation(aset, rep)
    if manifest.dynamic and manifest.utc_timing_url is not None:
        root.add("UTCTiming", {"schemeIdUri": UTC_HTTP_XSDATE, "value": manifest.utc_timing_url})
    out = ['<?xml version="1.0" encoding="UTF-8"?>']
    root.write(out, 0)
    return "\n".join(out) + "\n"
