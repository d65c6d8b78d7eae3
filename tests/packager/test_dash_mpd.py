"""The DASH manifest writer: exact vectors, and generated segment timelines
(durations, discontinuities, new keys, window slides, renditions that start
late) whose manifests, read back with the standard library's XML parser,
state every segment of the HLS state exactly once, at its exact time."""

from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drm.model import ContentKey, DrmSystemData, KeyPeriod, Protection, SystemId
from drm.pssh import clearkey_pssh
from engine.media import Codec, Track
from packager.dash.manifest import (
    Links,
    LiveTiming,
    VariantView,
    build,
    nominal_frame_rate,
    period_boundaries,
)
from packager.dash.mpd import (
    AdaptationSet,
    ContentProtection,
    Manifest,
    Period,
    Representation,
    TimelineEntry,
    format_datetime,
    format_duration,
    render,
)
from packager.errors import ManifestError
from packager.hls.playlist import SegmentEntry

NS = {"m": "urn:mpeg:dash:schema:mpd:2011", "cenc": "urn:mpeg:cenc:2013", "dashif": "https://dashif.org/CPS"}
# avcC and AudioSpecificConfig of libx264 640x360 High and 48 kHz stereo AAC-LC, as ffmpeg writes them.
AVCC_640x360 = bytes.fromhex(
    "0164001effe1001a6764001eacd940a02ff970110000030001000003003c0f162d9601000468efbcb0fdf8f800"
)
VIDEO = Track(0, Codec.H264, Fraction(1, 1000), AVCC_640x360, width=640, height=360)
AUDIO = Track(1, Codec.AAC, Fraction(1, 1000), bytes.fromhex("1190"), sample_rate=48000, channels=2)
TIMING = LiveTiming(Fraction(2), 6)
CLOCK = 1_800_000_000.0


def seconds(text: str) -> Fraction:
    match = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", text)
    assert match, text
    return Fraction(Decimal(match.group(1)))


def key_period(index: int) -> KeyPeriod:
    kid = bytes([index + 1]) * 16
    widevine = DrmSystemData(SystemId.WIDEVINE.value, pssh=b"\x00\x00\x00\x20pssh" + bytes(24))
    return KeyPeriod("star", index, ContentKey(kid, bytes(16), bytes(16)), (widevine,))


# -- vectors -------------------------------------------------------------------
def test_a_small_static_manifest_renders_exactly() -> None:
    rep = Representation(
        id="src", bandwidth=1_000_000, codecs="avc1.64001e,mp4a.40.2", mime_type="video/mp4", timescale=90000,
        presentation_time_offset=900000, initialization="src/init_a_1.mp4?token=t%26k",
        media="src/seg_a_$Number$.m4s?token=t%26k",
        segments=(
            TimelineEntry(0, 900000, 180000), TimelineEntry(1, 1080000, 180000), TimelineEntry(2, 1260000, 90000)
        ),
        width=640, height=360, frame_rate=Fraction(30000, 1001),
    )
    manifest = Manifest(
        dynamic=False, periods=(Period("p0", Fraction(0), (AdaptationSet(0, "video", "video/mp4", (rep,)),)),),
        publish_time=CLOCK, min_buffer_time=Fraction(2), max_segment_duration=Fraction(2), duration=Fraction(5),
    )
    assert render(manifest) == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:cenc="urn:mpeg:cenc:2013" '
        'xmlns:dashif="https://dashif.org/CPS" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" '
        'minBufferTime="PT2S" maxSegmentDuration="PT2S" publishTime="2027-01-15T08:00:00.000Z" '
        'mediaPresentationDuration="PT5S">\n'
        '  <Period id="p0" start="PT0S">\n'
        '    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" '
        'startWithSAP="1">\n'
        '      <Representation id="src" bandwidth="1000000" codecs="avc1.64001e,mp4a.40.2" mimeType="video/mp4" '
        'width="640" height="360" frameRate="30000/1001">\n'
        '        <SegmentTemplate timescale="90000" presentationTimeOffset="900000" startNumber="0" '
        'initialization="src/init_a_1.mp4?token=t%26k" media="src/seg_a_$Number$.m4s?token=t%26k">\n'
        '          <SegmentTimeline>\n'
        '            <S t="900000" d="180000" r="1"/>\n'
        '            <S t="1260000" d="90000"/>\n'
        '          </SegmentTimeline>\n'
        '        </SegmentTemplate>\n'
        '      </Representation>\n'
        '    </AdaptationSet>\n'
        '  </Period>\n'
        '</MPD>\n'
    )


def test_content_protection_names_the_key_and_every_system() -> None:
    kp = key_period(0)
    protection = ContentProtection(Protection.CENC, kp, "http://h/drm/clearkey/star?token=a&b")
    rep = Representation("src", 1, "avc1.64001e", "video/mp4", 90000, 0, "src/i.mp4", "src/s$Number$.m4s",
                         (TimelineEntry(3, 0, 90000),))
    manifest = Manifest(False, (Period("p3", Fraction(0), (AdaptationSet(0, "video", "video/mp4", (rep,)),),
                                       protection),), CLOCK, Fraction(1), Fraction(1), duration=Fraction(1))
    root = ET.fromstring(render(manifest))
    elements = root.findall(".//m:AdaptationSet/m:ContentProtection", NS)
    kid = str(uuid.UUID(bytes=kp.key.kid))
    assert [e.get("schemeIdUri") for e in elements] == [
        "urn:mpeg:dash:mp4protection:2011", f"urn:uuid:{SystemId.CLEARKEY.value}", f"urn:uuid:{SystemId.WIDEVINE.value}"
    ]
    assert elements[0].get("value") == "cenc"
    assert all(e.get(f"{{{NS['cenc']}}}default_KID") == kid for e in elements)
    clearkey, widevine = elements[1], elements[2]
    laurl = clearkey.find("dashif:Laurl", NS)
    assert laurl is not None and laurl.text == "http://h/drm/clearkey/star?token=a&b"
    assert laurl.get("licenseType") == "EME-1.0"
    pssh = clearkey.find("cenc:pssh", NS)
    assert pssh is not None and base64.b64decode(pssh.text or "") == clearkey_pssh([kp.key.kid])
    pssh = widevine.find("cenc:pssh", NS)
    assert pssh is not None and base64.b64decode(pssh.text or "") == kp.systems[0].pssh
    assert widevine.find("dashif:Laurl", NS) is None


def test_aes_128_is_not_a_dash_scheme() -> None:
    rep = Representation("src", 1, "avc1.64001e", "video/mp4", 90000, 0, "i", "s$Number$", (TimelineEntry(0, 0, 1),))
    period = Period("p0", Fraction(0), (AdaptationSet(0, "video", "video/mp4", (rep,)),),
                    ContentProtection(Protection.AES_128, key_period(0)))
    with pytest.raises(ManifestError):
        render(Manifest(False, (period,), CLOCK, Fraction(1), Fraction(1), duration=Fraction(1)))


@pytest.mark.parametrize(
    ("value", "text"),
    [(Fraction(0), "PT0S"), (Fraction(5, 2), "PT2.5S"), (Fraction(1, 3), "PT0.333334S"), (Fraction(12), "PT12S")],
)
def test_durations(value: Fraction, text: str) -> None:
    assert format_duration(value) == text


def test_broken_timelines_are_refused() -> None:
    def manifest(*segments: TimelineEntry) -> Manifest:
        rep = Representation("r", 1, "mp4a.40.2", "audio/mp4", 48000, 0, "i", "s$Number$", segments)
        return Manifest(False, (Period("p", Fraction(0), (AdaptationSet(0, "audio", "audio/mp4", (rep,)),)),),
                        CLOCK, Fraction(1), Fraction(1), duration=Fraction(1))

    with pytest.raises(ManifestError):
        render(manifest(TimelineEntry(0, 0, 10), TimelineEntry(2, 10, 10)))  # a number skipped
    with pytest.raises(ManifestError):
        render(manifest(TimelineEntry(0, 0, 10), TimelineEntry(1, 5, 10)))  # overlapping
    with pytest.raises(ManifestError):
        render(manifest(TimelineEntry(0, 0, 0)))
    with pytest.raises(ManifestError):
        render(manifest())


@pytest.mark.parametrize(
    ("measured", "rate"),
    [(29.43, Fraction(30)), (29.97003, Fraction(30000, 1001)), (14.48, Fraction(15)), (25.2, Fraction(25)),
     (37.0, None), (None, None)],
)
def test_nominal_frame_rates(measured: float | None, rate: Fraction | None) -> None:
    assert nominal_frame_rate(measured) == rate


# -- generated timelines -------------------------------------------------------
@st.composite
def stream_states(draw: st.DrawFn) -> tuple[list[VariantView], dict[int, Fraction], dict[int, KeyPeriod]]:
    """Variants of one stream as the HLS output holds them: aligned numbers,
    a continuous media timeline, discontinuities with new init segments, key
    periods, a window that slid, renditions whose timeline is a little off
    the source's, and renditions that joined late."""
    count = draw(st.integers(3, 30))
    first = draw(st.integers(0, 50))
    durations = draw(st.lists(st.integers(200, 4000), min_size=count, max_size=count))
    breaks = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    key_every = draw(st.one_of(st.none(), st.integers(1, 8)))
    start = Fraction(10) + Fraction(draw(st.integers(0, 999)), 1000)
    moments = []
    version = 1
    for i in range(count):
        discontinuity = i > 0 and breaks[i]
        version += 1 if discontinuity else 0
        moments.append((first + i, start, Fraction(durations[i], 1000), discontinuity, version))
        start += Fraction(durations[i], 1000)
    keys = {first + i: key_period(i // key_every) for i in range(0, count, key_every)} if key_every else {}
    names = draw(st.lists(st.sampled_from(["src", "720p", "480p", "audio"]), min_size=1, max_size=4, unique=True))
    window = draw(st.integers(3, count))
    views = []
    recorded: dict[int, Fraction] = {}
    for name in names:
        skew = Fraction(draw(st.integers(0, 60)), 90000)  # a rendition's priming delay
        joined = draw(st.integers(0, count - 1)) if name != names[0] else 0
        tracks = (AUDIO,) if name == "audio" else (VIDEO, AUDIO)
        segments = []
        for number, at, duration, discontinuity, init in moments[joined:]:
            uri = f"init_ab12_{init}.mp4"
            segments.append(SegmentEntry(number, f"seg_ab12_{number}.m4s", duration, CLOCK, discontinuity, uri, 1000,
                                         start=at + skew))
            if number == first or discontinuity or number in keys:
                recorded[number] = min(recorded.get(number, at + skew), at + skew)
        listed = segments[-window:]
        inits = {s.init_uri: tracks for s in listed if s.init_uri is not None}
        views.append(VariantView(name, listed, inits, 500_000 + len(name)))
    return views, recorded, keys


def expand(template: ET.Element) -> list[tuple[int, int, int]]:
    """(number, t, d) of every segment a SegmentTemplate lists."""
    number = int(template.get("startNumber", "1"))
    out = []
    t = None
    timeline = template.find("m:SegmentTimeline", NS)
    assert timeline is not None
    for s in timeline.findall("m:S", NS):
        stated = s.get("t")
        t = int(stated) if stated is not None else t
        assert t is not None
        d = int(s.get("d", "0"))
        for _ in range(int(s.get("r", "0")) + 1):
            out.append((number, t, d))
            number += 1
            t += d
    return out


def check(
    views: list[VariantView], keys: dict[int, KeyPeriod], text: str, dynamic: bool, query: str
) -> dict[str, Fraction]:
    """Read ``text`` back and compare every element with ``views``; the
    Periods' starts by id."""
    root = ET.fromstring(text)
    assert root.get("type") == ("dynamic" if dynamic else "static")
    if dynamic:
        assert root.get("availabilityStartTime") == format_datetime(CLOCK)
        assert seconds(root.get("timeShiftBufferDepth", "")) == TIMING.time_shift_buffer_depth
        assert seconds(root.get("suggestedPresentationDelay", "")) == 6
        assert seconds(root.get("minimumUpdatePeriod", "")) == 2
        timing = root.find("m:UTCTiming", NS)
        assert timing is not None and timing.get("value") == "http://h/dash/time"
        assert timing.get("schemeIdUri") == "urn:mpeg:dash:utc:http-xsdate:2014"
    wanted = {(v.name, s.sequence): s for v in views for s in v.segments}
    longest = max(s.duration for s in wanted.values())
    assert seconds(root.get("maxSegmentDuration", "")) == longest
    seen: dict[tuple[str, int], SegmentEntry] = {}
    period_starts: dict[str, Fraction] = {}
    shift = None
    previous = None
    for period in root.findall("m:Period", NS):
        pid, start = period.get("id", ""), seconds(period.get("start", ""))
        assert previous is None or start > previous
        previous = start
        period_starts[pid] = start
        in_period: list[SegmentEntry] = []
        for aset in period.findall("m:AdaptationSet", NS):
            protection = aset.findall("m:ContentProtection", NS)
            for rep in aset.findall("m:Representation", NS):
                view = next(v for v in views if v.name == rep.get("id"))
                assert aset.get("contentType") == ("audio" if view.name == "audio" else "video")
                template = rep.find("m:SegmentTemplate", NS)
                assert template is not None
                scale = int(template.get("timescale", ""))
                assert scale == (48000 if view.name == "audio" else 90000)
                pto = int(template.get("presentationTimeOffset", ""))
                entries = expand(template)
                first = wanted[(view.name, entries[0][0])]
                assert template.get("initialization") == f"{view.name}/{first.init_uri}{query}"
                assert first.start is not None
                if shift is None:
                    shift = Fraction(pto, scale) - start
                # Period@start and presentationTimeOffset state one instant.
                assert Fraction(pto, scale) - shift == start
                for number, t, d in entries:
                    seg = wanted[(view.name, number)]
                    assert (view.name, number) not in seen
                    seen[(view.name, number)] = seg
                    in_period.append(seg)
                    assert seg.start is not None
                    assert t == round(seg.start * scale) and t + d == round((seg.start + seg.duration) * scale)
                    assert t >= pto
                    media = template.get("media", "").replace("$Number$", str(number))
                    assert media == f"{view.name}/{seg.uri}{query}"
                    assert seg.init_uri == first.init_uri
                    if number != entries[0][0]:
                        assert not seg.discontinuity
                if keys:
                    opened = max(n for n in keys if n <= entries[0][0])
                    kid = str(uuid.UUID(bytes=keys[opened].key.kid))
                    assert protection and protection[0].get(f"{{{NS['cenc']}}}default_KID") == kid
                    assert protection[0].get("value") == "cenc"
                    for number, _, _ in entries:  # one key per Period
                        assert keys[max(n for n in keys if n <= number)].key.kid == keys[opened].key.kid
                else:
                    assert protection == []
        assert in_period
    assert seen.keys() == wanted.keys()
    return period_starts


@settings(max_examples=150, deadline=None)
@given(stream_states(), st.booleans(), st.sampled_from(["", "?token=a%2Bb%26c"]))
def test_every_listed_segment_is_stated_once_at_its_time(state, dynamic: bool, query: str) -> None:  # type: ignore[no-untyped-def]
    views, recorded, keys = state
    protection = Protection.CENC if keys else Protection.NONE
    links = Links(query=query, utc_timing_url="http://h/dash/time", clearkey_licence_url="http://h/drm/clearkey/s")
    nothing: dict[int, Fraction] = {}
    for boundaries in (recorded, nothing):
        manifest = build(views, boundaries=boundaries, dynamic=dynamic, now=CLOCK + 60, timing=TIMING,
                         clock_origin=CLOCK, links=links, protection=protection, key_period_at=_lookup(keys))
        check(views, keys, render(manifest), dynamic, query)


@settings(max_examples=100, deadline=None)
@given(stream_states(), st.integers(1, 5))
def test_periods_keep_their_ids_and_starts_as_the_window_slides(state, slide: int) -> None:  # type: ignore[no-untyped-def]
    views, recorded, keys = state
    links = Links(utc_timing_url="http://h/dash/time")
    before = render(build(views, boundaries=recorded, dynamic=True, now=CLOCK, timing=TIMING, clock_origin=CLOCK,
                          links=links, protection=Protection.CENC, key_period_at=_lookup(keys)))
    slid = [VariantView(v.name, v.segments[slide:], v.init_tracks, v.bandwidth) for v in views]
    if not any(v.segments for v in slid):
        return
    after = render(build(slid, boundaries=recorded, dynamic=True, now=CLOCK, timing=TIMING, clock_origin=CLOCK,
                         links=links, protection=Protection.CENC, key_period_at=_lookup(keys)))
    starts_before = check(views, keys, before, True, "")
    starts_after = check([v for v in slid if v.segments], keys, after, True, "")
    for pid, start in starts_after.items():
        if pid in starts_before:
            assert starts_before[pid] == start


def _lookup(keys: dict[int, KeyPeriod]):  # type: ignore[no-untyped-def]
    def at(sequence: int) -> KeyPeriod | None:
        found = [n for n in keys if n <= sequence]
        return keys[max(found)] if found else None

    return at


def test_period_boundaries_prefer_what_was_recorded() -> None:
    segs = [SegmentEntry(n, f"seg_x_{n}.m4s", Fraction(2), CLOCK, n == 7, "init_x_1.mp4" if n < 7 else "init_x_2.mp4",
                         1, start=Fraction(2 * n)) for n in range(5, 10)]
    view = VariantView("src", segs, {"init_x_1.mp4": (VIDEO,), "init_x_2.mp4": (VIDEO,)}, 1)
    # The period that began at segment 2 (slid out) keeps its recorded start.
    assert period_boundaries([view], {2: Fraction(4), 7: Fraction(14)}) == {2: Fraction(4), 7: Fraction(14)}
    assert period_boundaries([view], {}) == {5: Fraction(10), 7: Fraction(14)}


def test_a_segment_without_its_start_time_is_refused() -> None:
    seg = SegmentEntry(0, "seg_x_0.m4s", Fraction(2), CLOCK, False, "init_x_1.mp4", 1)
    with pytest.raises(ManifestError):
        build([VariantView("src", [seg], {"init_x_1.mp4": (VIDEO,)}, 1)], boundaries={}, dynamic=False, now=CLOCK,
              timing=TIMING)


def test_mpeg_ts_segments_have_no_dash_manifest() -> None:
    seg = SegmentEntry(0, "seg_x_0.ts", Fraction(2), CLOCK, False, None, 1, start=Fraction(10))
    with pytest.raises(ManifestError, match="init segment"):
        build([VariantView("src", [seg], {}, 1)], boundaries={}, dynamic=False, now=CLOCK, timing=TIMING)
