"""CPIX documents (DASH-IF Content Protection Information Exchange, 2.3):
what the engine sends an outside key service and reads from its answer.

Sans-I/O: :func:`serialize` writes a :class:`CpixDocument` and
:func:`parse` reads one, both on bytes. A request names the content ID, the
key period (``ContentKeyPeriod`` with its ``index``, tied to the key by a
``ContentKeyUsageRule``), the key ID the engine proposes, and one empty
``DRMSystem`` per DRM system whose data it wants; the service answers the
same document filled in: the key in ``Data/Secret/PlainValue``, a ``PSSH``
per system, and for HLS ``URIExtXKey``, ``KeyFormat`` or a whole
``HLSSignalingData`` line (FairPlay's ``skd://`` URI).

Answers are parsed as untrusted input: a size limit, no DTD (so no entity
expansion and no external entities: ``defusedxml`` when it is installed,
otherwise the standard library's expat with every DTD refused before the
tree is built), strict base64, and every key, IV and ``pssh`` checked.
Whatever is wrong raises :class:`drm.errors.CpixError`.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn
from xml.parsers import expat

from drm.errors import CpixError
from drm.model import KEY_BYTES, SystemId
from drm.pssh import check_pssh

CPIX_NS = "urn:dashif:org:cpix"
PSKC_NS = "urn:ietf:params:xml:ns:keyprov:pskc"
MAX_DOCUMENT_BYTES = 1 << 20
MAX_ITEMS = 1000
FAIRPLAY_KEY_FORMAT = "com.apple.streamingkeydelivery"
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\r\n]*)')

try:  # an optional hardening: the standard library path below refuses DTDs too
    from defusedxml import ElementTree as _defused
except ImportError:  # pragma: no cover - depends on what is installed
    _defused = None


@dataclass(frozen=True, slots=True)
class CpixKey:
    """One ``ContentKey``: ``key`` is ``None`` in a request."""

    kid: bytes
    key: bytes | None = field(default=None, repr=False)
    iv: bytes | None = None
    scheme: str | None = None


@dataclass(frozen=True, slots=True)
class CpixSystem:
    """One ``DRMSystem`` for one key: empty in a request (the systems
    whose data are wanted), filled in by the answer."""

    kid: bytes
    system_id: uuid.UUID
    pssh: bytes | None = None
    hls_key_format: str | None = None
    hls_key_uri: str | None = None


@dataclass(frozen=True, slots=True)
class CpixDocument:
    content_id: str | None
    keys: tuple[CpixKey, ...]
    systems: tuple[CpixSystem, ...] = ()
    periods: tuple[tuple[str, int | None], ...] = ()
    """``(id, index)`` of each ``ContentKeyPeriod``."""
    rules: tuple[tuple[bytes, tuple[str, ...]], ...] = ()
    """``(kid, period ids)`` of each ``ContentKeyUsageRule``."""


# -- writing ----------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def serialize(doc: CpixDocument) -> bytes:
    """The document as UTF-8 XML. A key without a value and a system
    without data are written as empty elements: a request."""
    # Prefixed names written as they are (no change to ElementTree's
    # global prefix registry); the root declares both prefixes.
    def c(tag: str) -> str:
        return f"cpix:{tag}"

    root = ET.Element(c("CPIX"), {"xmlns:cpix": CPIX_NS, "xmlns:pskc": PSKC_NS, "version": "2.3"})
    if doc.content_id is not None:
        root.set("contentId", doc.content_id)
    keys = ET.SubElement(root, c("ContentKeyList"))
    for key in doc.keys:
        element = ET.SubElement(keys, c("ContentKey"), {"kid": str(uuid.UUID(bytes=key.kid))})
        if key.iv is not None:
            element.set("explicitIV", _b64(key.iv))
        if key.scheme is not None:
            element.set("commonEncryptionScheme", key.scheme)
        if key.key is not None:
            secret = ET.SubElement(ET.SubElement(element, c("Data")), "pskc:Secret")
            ET.SubElement(secret, "pskc:PlainValue").text = _b64(key.key)
    if doc.systems:
        systems = ET.SubElement(root, c("DRMSystemList"))
        for system in doc.systems:
            element = ET.SubElement(
                systems, c("DRMSystem"), {"kid": str(uuid.UUID(bytes=system.kid)), "systemId": str(system.system_id)}
            )
            ET.SubElement(element, c("PSSH")).text = _b64(system.pssh) if system.pssh else None
            if system.system_id == SystemId.FAIRPLAY.value or system.hls_key_uri or system.hls_key_format:
                ET.SubElement(element, c("URIExtXKey")).text = (
                    _b64(system.hls_key_uri.encode()) if system.hls_key_uri else None
                )
                ET.SubElement(element, c("KeyFormat")).text = (
                    _b64(system.hls_key_format.encode()) if system.hls_key_format else None
                )
    if doc.periods:
        periods = ET.SubElement(root, c("ContentKeyPeriodList"))
        for period_id, index in doc.periods:
            element = ET.SubElement(periods, c("ContentKeyPeriod"), {"id": period_id})
            if index is not None:
                element.set("index", str(index))
    if doc.rules:
        rules = ET.SubElement(root, c("ContentKeyUsageRuleList"))
        for kid, period_ids in doc.rules:
            rule = ET.SubElement(rules, c("ContentKeyUsageRule"), {"kid": str(uuid.UUID(bytes=kid))})
            for period_id in period_ids:
                ET.SubElement(rule, c("KeyPeriodFilter"), {"periodId": period_id})
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def period_id(index: int) -> str:
    return f"keyPeriod_{index}"


def request(content_id: str, index: int, kid: bytes, systems: tuple[uuid.UUID, ...],
            scheme: str | None = None) -> bytes:
    """The request for key period ``index`` of ``content_id``, proposing
    key ID ``kid`` and asking for the data of ``systems``."""
    pid = period_id(index)
    return serialize(CpixDocument(
        content_id=content_id,
        keys=(CpixKey(kid=kid, scheme=scheme),),
        systems=tuple(CpixSystem(kid=kid, system_id=s) for s in systems),
        periods=((pid, index),),
        rules=((kid, (pid,)),),
    ))


# -- reading ----------------------------------------------------------------------
def _refuse_dtd(data: bytes) -> None:
    """Run expat over ``data`` refusing any DTD: with none, no entity can be
    declared, so nothing expands and nothing external is fetched."""

    def refuse(*_: Any) -> NoReturn:
        raise CpixError("the CPIX document has a DTD or entities; refused")

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise CpixError(f"the CPIX document is not well-formed XML: {exc}") from None
    except LookupError as exc:  # an XML declaration naming an unknown encoding
        raise CpixError(f"the CPIX document declares an unknown encoding: {exc}") from None


def parse_xml(data: bytes) -> ET.Element:
    """``data`` as an element tree, refusing DTDs and entities."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CpixError(f"the CPIX document is larger than {MAX_DOCUMENT_BYTES} bytes")
    if _defused is not None:  # pragma: no cover - depends on what is installed
        try:
            return _defused.fromstring(data, forbid_dtd=True)  # type: ignore[no-any-return, unused-ignore]
        except ET.ParseError as exc:
            raise CpixError(f"the CPIX document is not well-formed XML: {exc}") from None
        except ValueError as exc:  # defusedxml's DTDForbidden, EntitiesForbidden...
            raise CpixError(f"the CPIX document has a DTD or entities; refused ({type(exc).__name__})") from None
    _refuse_dtd(data)
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise CpixError(f"the CPIX document is not well-formed XML: {exc}") from None


def _local(tag: object) -> str:
    """An element's name without its namespace: services differ in prefixes
    and default namespaces."""
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    for count, child in enumerate(c for c in element if _local(c.tag) == name):
        if count >= MAX_ITEMS:
            raise CpixError(f"more than {MAX_ITEMS} {name} elements")
        yield child


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next(_children(element, name), None)


def _decode_b64(text: str | None, what: str) -> bytes:
    compact = "".join((text or "").split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise CpixError(f"{what} is not base64") from None


def _kid(element: ET.Element, what: str) -> bytes:
    text = element.get("kid")
    if text is None:
        raise CpixError(f"a {what} has no kid")
    try:
        return uuid.UUID(text.strip()).bytes
    except ValueError:
        raise CpixError(f"a {what}'s kid {text[:40]!r} is not a UUID") from None


def _text_value(element: ET.Element | None, what: str) -> str | None:
    """A base64 child holding text (a URI, a key format), or ``None``."""
    if element is None or not (element.text or "").strip():
        return None
    raw = _decode_b64(element.text, what)
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CpixError(f"{what} is not UTF-8 text") from None
    if not text.isprintable() or '"' in text:
        raise CpixError(f"{what} has characters a playlist attribute cannot hold")
    return text


def _read_key(element: ET.Element) -> CpixKey:
    kid = _kid(element, "ContentKey")
    iv = None
    if element.get("explicitIV") is not None:
        iv = _decode_b64(element.get("explicitIV"), "a ContentKey's explicitIV")
        if len(iv) != KEY_BYTES:
            raise CpixError(f"a ContentKey's explicitIV is {len(iv)} bytes, not {KEY_BYTES}")
    value = None
    data = _child(element, "Data")
    if data is not None:
        secret = _child(data, "Secret")
        if secret is None:
            raise CpixError("a ContentKey's Data has no Secret")
        if _child(secret, "EncryptedValue") is not None:
            raise CpixError("encrypted content keys are not supported: have the key service answer PlainValue "
                            "(over HTTPS)")
        plain = _child(secret, "PlainValue")
        if plain is None:
            raise CpixError("a ContentKey's Secret has no PlainValue")
        value = _decode_b64(plain.text, "a ContentKey's PlainValue")
        if len(value) != KEY_BYTES:
            raise CpixError(f"a content key is {len(value)} bytes, not {KEY_BYTES}")
    return CpixKey(kid=kid, key=value, iv=iv, scheme=element.get("commonEncryptionScheme"))


def _read_system(element: ET.Element) -> CpixSystem:
    kid = _kid(element, "DRMSystem")
    try:
        system_id = uuid.UUID((element.get("systemId") or "").strip())
    except ValueError:
        raise CpixError("a DRMSystem's systemId is not a UUID") from None
    pssh_element = _child(element, "PSSH")
    pssh = None
    if pssh_element is not None and (pssh_element.text or "").strip():
        pssh = _decode_b64(pssh_element.text, "a DRMSystem's PSSH")
        try:
            check_pssh(pssh, system_id)
        except ValueError as exc:
            raise CpixError(f"a DRMSystem's PSSH is malformed: {exc}") from None
    uri = _text_value(_child(element, "URIExtXKey"), "a DRMSystem's URIExtXKey")
    key_format = _text_value(_child(element, "KeyFormat"), "a DRMSystem's KeyFormat")
    for signaling in _children(element, "HLSSignalingData"):
        if signaling.get("playlist", "media") != "media" or not (signaling.text or "").strip():
            continue
        line = _decode_b64(signaling.text, "a DRMSystem's HLSSignalingData").decode("utf-8", "replace")
        found = {name: value.strip('"') for name, value in _ATTRIBUTE.findall(line.partition(":")[2])}
        uri = uri or found.get("URI")
        key_format = key_format or found.get("KEYFORMAT")
    if uri is not None and ('"' in uri or not uri.isprintable()):
        raise CpixError("a DRMSystem's key URI has characters a playlist attribute cannot hold")
    if key_format is None and system_id == SystemId.FAIRPLAY.value and uri is not None:
        key_format = FAIRPLAY_KEY_FORMAT
    return CpixSystem(kid=kid, system_id=system_id, pssh=pssh, hls_key_format=key_format, hls_key_uri=uri)


def parse(data: bytes) -> CpixDocument:
    """Read a CPIX document; raises :class:`CpixError` for anything this
    engine cannot use safely."""
    root = parse_xml(data)
    if _local(root.tag) != "CPIX":
        raise CpixError(f"the document's root is {_local(root.tag)!r}, not CPIX")
    key_list = _child(root, "ContentKeyList")
    keys = tuple(_read_key(e) for e in _children(key_list, "ContentKey")) if key_list is not None else ()
    system_list = _child(root, "DRMSystemList")
    systems = tuple(_read_system(e) for e in _children(system_list, "DRMSystem")) if system_list is not None else ()
    periods: list[tuple[str, int | None]] = []
    period_list = _child(root, "ContentKeyPeriodList")
    for element in _children(period_list, "ContentKeyPeriod") if period_list is not None else ():
        pid, index_text = element.get("id"), element.get("index")
        if not pid:
            raise CpixError("a ContentKeyPeriod has no id")
        try:
            index = int(index_text) if index_text is not None else None
        except ValueError:
            raise CpixError("a ContentKeyPeriod's index is not an integer") from None
        periods.append((pid, index))
    rules: list[tuple[bytes, tuple[str, ...]]] = []
    rule_list = _child(root, "ContentKeyUsageRuleList")
    for element in _children(rule_list, "ContentKeyUsageRule") if rule_list is not None else ():
        filters = tuple(f.get("periodId") or "" for f in _children(element, "KeyPeriodFilter"))
        rules.append((_kid(element, "ContentKeyUsageRule"), filters))
    return CpixDocument(root.get("contentId"), keys, systems, tuple(periods), tuple(rules))


def key_for_period(doc: CpixDocument, index: int, proposed_kid: bytes) -> tuple[CpixKey, tuple[CpixSystem, ...]]:
    """The content key (with a value) an answer gives for period ``index``,
    and its DRM systems. The period's usage rule decides when there is one;
    else the key the request proposed; else the answer's only key."""
    candidates: list[CpixKey] = []
    wanted_periods = {pid for pid, i in doc.periods if i == index}
    if wanted_periods:
        kids = {kid for kid, filters in doc.rules if wanted_periods & set(filters)}
        candidates = [k for k in doc.keys if k.kid in kids]
    if not candidates:
        candidates = [k for k in doc.keys if k.kid == proposed_kid]
    if not candidates and len(doc.keys) == 1:
        candidates = list(doc.keys)
    if len({k.kid for k in candidates}) != 1:
        raise CpixError(f"the answer names {'no' if not candidates else 'several'} content keys for key period {index}")
    key = candidates[0]
    if key.key is None:
        raise CpixError(f"the answer gives no value for the key of key period {index}")
    return key, tuple(s for s in doc.systems if s.kid == key.kid)
