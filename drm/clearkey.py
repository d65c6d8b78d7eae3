"""The W3C ClearKey licence exchange (Encrypted Media Extensions, section
9.1.3 and 9.1.4), sans-I/O.

A player's request is JSON ``{"kids": [base64url key IDs], "type":
"temporary"}``; the answer is a JSON Web Key set ``{"keys": [{"kty": "oct",
"k": base64url key, "kid": base64url key ID}], "type": "temporary"}``.
Only temporary licences are given. :func:`parse_request` reads a request
from an untrusted body and raises :class:`drm.errors.LicenceRequestError`
for anything else; :func:`answer` writes the key set.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable

from drm.errors import LicenceRequestError
from drm.model import KEY_BYTES, ContentKey

MAX_REQUEST_BYTES = 16 * 1024
MAX_KIDS = 64
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64url(data: bytes) -> str:
    """base64url without padding, as JSON Web Keys write it."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    """Read base64url with or without padding; ``ValueError`` otherwise."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    body = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def parse_request(body: bytes) -> list[bytes]:
    """The key IDs a licence request asks for, in order, each once."""
    if len(body) > MAX_REQUEST_BYTES:
        raise LicenceRequestError(f"a licence request is at most {MAX_REQUEST_BYTES} bytes")
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LicenceRequestError("a licence request is a JSON object") from None
    if not isinstance(request, dict):
        raise LicenceRequestError("a licence request is a JSON object")
    kind = request.get("type", "temporary")
    if kind != "temporary":
        raise LicenceRequestError("only temporary licences are given (type \"temporary\")")
    kids = request.get("kids")
    if not isinstance(kids, list) or not kids:
        raise LicenceRequestError("a licence request lists the key IDs it needs in \"kids\"")
    if len(kids) > MAX_KIDS:
        raise LicenceRequestError(f"a licence request names at most {MAX_KIDS} key IDs")
    out: list[bytes] = []
    for item in kids:
        if not isinstance(item, str):
            raise LicenceRequestError("each key ID is a base64url string")
        try:
            kid = b64url_decode(item)
        except ValueError:
            raise LicenceRequestError("each key ID is a base64url string") from None
        if len(kid) != KEY_BYTES:
            raise LicenceRequestError(f"a key ID is {KEY_BYTES} bytes")
        if kid not in out:
            out.append(kid)
    return out


def answer(keys: Iterable[ContentKey]) -> bytes:
    """The licence: a JSON Web Key set of ``keys``."""
    return json.dumps(
        {"keys": [{"kty": "oct", "k": b64url(k.key), "kid": b64url(k.kid)} for k in keys], "type": "temporary"},
        separators=(",", ":"),
    ).encode()
