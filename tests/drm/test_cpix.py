"""CPIX documents both ways, and the parser on hostile input: any bytes
give a document or a CpixError, never another exception; DTDs, entities
and external references are refused."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drm import cpix
from drm.errors import CpixError
from drm.model import SystemId
from tests.drm.cpix_service import pssh_box

# Text an XML attribute or element holds as it is: no control characters
# (XML 1.0 cannot carry most, and parsers normalise tabs and newlines).
XML_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=30)
KIDS = st.binary(min_size=16, max_size=16)
SCHEMES = st.sampled_from(["cbcs", "cenc"])
SYSTEM_IDS = st.sampled_from([s.value for s in SystemId])


@st.composite
def documents(draw: st.DrawFn) -> cpix.CpixDocument:
    kids = draw(st.lists(KIDS, min_size=1, max_size=4, unique=True))
    keys = tuple(
        cpix.CpixKey(kid, draw(st.none() | KIDS), draw(st.none() | KIDS), draw(st.none() | SCHEMES))
        for kid in kids
    )
    systems = []
    for kid in kids:
        for system_id in draw(st.lists(SYSTEM_IDS, max_size=3, unique=True)):
            pssh = draw(st.none() | st.binary(max_size=40).map(lambda d, s=system_id: pssh_box(s, d)))
            uri = draw(st.none() | XML_TEXT.filter(lambda t: '"' not in t and t.isprintable() and t == t.strip()))
            key_format = draw(st.none() | st.just("com.example.format"))
            if system_id == SystemId.FAIRPLAY.value and uri is not None and key_format is None:
                key_format = cpix.FAIRPLAY_KEY_FORMAT  # what the parser fills in
            systems.append(cpix.CpixSystem(kid, system_id, pssh, key_format, uri))
    periods = tuple(
        (pid, draw(st.none() | st.integers(0, 2**40)))
        for pid in draw(st.lists(XML_TEXT.filter(lambda t: t == t.strip() and " " not in t), max_size=3, unique=True))
    )
    rules = tuple((kid, tuple(draw(st.lists(st.sampled_from([p for p, _ in periods]), max_size=2))) if periods else ())
                  for kid in kids)
    return cpix.CpixDocument(draw(st.none() | XML_TEXT), keys, tuple(systems), periods, rules)


@given(documents())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_documents_round_trip(doc: cpix.CpixDocument) -> None:
    assert cpix.parse(cpix.serialize(doc)) == doc


@given(st.binary(max_size=3000))
@settings(max_examples=300)
def test_any_bytes_parse_or_raise_cpix_error(data: bytes) -> None:
    try:
        cpix.parse(data)
    except CpixError:
        pass


@given(documents(), st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_damaged_documents_parse_or_raise_cpix_error(doc: cpix.CpixDocument, data: st.DataObject) -> None:
    text = bytearray(cpix.serialize(doc))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            text[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del text[at:at + data.draw(st.integers(1, 20))]
        else:
            text[at:at] = data.draw(st.sampled_from([b"<", b"&", b'"', b"==", b"<x>", b"\x00", b"]]>"]))
        if not text:
            break
    try:
        cpix.parse(bytes(text))
    except CpixError:
        pass


def test_a_request_reads_back_and_says_what_it_wants() -> None:
    kid = bytes(range(16))
    doc = cpix.parse(cpix.request("stream-9", 12, kid, (SystemId.WIDEVINE.value, SystemId.FAIRPLAY.value), "cenc"))
    assert doc.content_id == "stream-9"
    assert doc.keys == (cpix.CpixKey(kid, None, None, "cenc"),)
    assert doc.periods == (("keyPeriod_12", 12),) and doc.rules == ((kid, ("keyPeriod_12",)),)
    assert [s.system_id for s in doc.systems] == [SystemId.WIDEVINE.value, SystemId.FAIRPLAY.value]
    assert all(s.kid == kid and s.pssh is None and s.hls_key_uri is None for s in doc.systems)


def test_an_answer_in_the_default_namespace_with_another_prefix_reads_the_same() -> None:
    kid = uuid.UUID("0dc3ec4f-7683-548b-81e7-3c64e582e136")
    text = f"""<?xml version="1.0" encoding="utf-8"?>
<CPIX xmlns="urn:dashif:org:cpix" xmlns:p="urn:ietf:params:xml:ns:keyprov:pskc" contentId="abc">
  <ContentKeyList>
    <ContentKey kid="{str(kid).upper()}" explicitIV="AAECAwQFBgcICQoLDA0ODw==">
      <Data><p:Secret><p:PlainValue>
        WADwG2qCqkq5TVml+U5PXw==
      </p:PlainValue></p:Secret></Data>
    </ContentKey>
  </ContentKeyList>
</CPIX>""".encode()
    key, systems = cpix.key_for_period(cpix.parse(text), 0, b"\x00" * 16)
    assert key.kid == kid.bytes and key.iv == bytes(range(16)) and len(key.key or b"") == 16 and systems == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'<?xml version="1.0"?><!DOCTYPE CPIX [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
         b'<CPIX xmlns="urn:dashif:org:cpix" contentId="&x;"/>', "DTD"),
        (b'<?xml version="1.0"?><!DOCTYPE CPIX [<!ENTITY a "aaaaaaaaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">'
         b'<!ENTITY c "&b;&b;&b;&b;&b;&b;">]><CPIX contentId="&c;"/>', "DTD"),
        (b'<!DOCTYPE CPIX SYSTEM "http://127.0.0.1:1/evil.dtd"><CPIX/>', "DTD"),
        (b"<CPIX/><trailing/>", "well-formed"),
        (b"<NotCPIX/>", "root"),
        (b'<CPIX><ContentKeyList><ContentKey kid="nope"/></ContentKeyList></CPIX>', "not a UUID"),
        (b'<CPIX><ContentKeyList><ContentKey/></ContentKeyList></CPIX>', "no kid"),
        (b'<CPIX><ContentKeyList><ContentKey kid="0dc3ec4f-7683-548b-81e7-3c64e582e136"><Data><Secret>'
         b"<PlainValue>AAAA</PlainValue></Secret></Data></ContentKey></ContentKeyList></CPIX>", "3 bytes"),
        (b'<CPIX><ContentKeyList><ContentKey kid="0dc3ec4f-7683-548b-81e7-3c64e582e136"><Data><Secret>'
         b"<EncryptedValue/></Secret></Data></ContentKey></ContentKeyList></CPIX>", "encrypted"),
        (b'<CPIX><ContentKeyList><ContentKey kid="0dc3ec4f-7683-548b-81e7-3c64e582e136"><Data><Secret>'
         b"<PlainValue>!!notbase64!!</PlainValue></Secret></Data></ContentKey></ContentKeyList></CPIX>", "base64"),
        (b'<CPIX><DRMSystemList><DRMSystem kid="0dc3ec4f-7683-548b-81e7-3c64e582e136" '
         b'systemId="edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"><PSSH>AAAAIHBzc2g=</PSSH></DRMSystem></DRMSystemList></CPIX>',
         "PSSH is malformed"),
        (b'<CPIX><DRMSystemList><DRMSystem kid="0dc3ec4f-7683-548b-81e7-3c64e582e136" '
         b'systemId="94ce86fb-07ff-4f43-adb8-93d2fa968ca2"><URIExtXKey>c2tkOi8vYSJiCg==</URIExtXKey></DRMSystem>'
         b"</DRMSystemList></CPIX>", "cannot hold"),
        (b" " * (cpix.MAX_DOCUMENT_BYTES + 1), "larger than"),
    ],
)
def test_unsafe_or_malformed_documents_are_refused(text: bytes, message: str) -> None:
    with pytest.raises(CpixError, match=message):
        cpix.parse(text)


def test_a_pssh_of_another_system_is_refused() -> None:
    box = pssh_box(SystemId.PLAYREADY.value, b"data")
    import base64

    text = (b'<CPIX><DRMSystemList><DRMSystem kid="0dc3ec4f-7683-548b-81e7-3c64e582e136" '
            b'systemId="edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"><PSSH>' + base64.b64encode(box) +
            b"</PSSH></DRMSystem></DRMSystemList></CPIX>")
    with pytest.raises(CpixError, match="another DRM system"):
        cpix.parse(text)


def test_the_period_rule_picks_the_key() -> None:
    a, b = bytes([1] * 16), bytes([2] * 16)
    doc = cpix.CpixDocument(
        "c", (cpix.CpixKey(a, bytes(16)), cpix.CpixKey(b, bytes([9] * 16))),
        (cpix.CpixSystem(b, SystemId.WIDEVINE.value, pssh_box(SystemId.WIDEVINE.value, b"x")),),
        (("p1", 1), ("p2", 2)), ((a, ("p1",)), (b, ("p2",))),
    )
    key, systems = cpix.key_for_period(doc, 2, a)
    assert key.kid == b and [s.kid for s in systems] == [b]
    assert cpix.key_for_period(doc, 1, b)[0].kid == a
    assert cpix.key_for_period(doc, 7, a)[0].kid == a  # no rule for 7: the proposed key
    with pytest.raises(CpixError, match="no content keys"):
        cpix.key_for_period(doc, 7, bytes(16))
