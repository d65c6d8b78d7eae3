"""The ClearKey licence request and answer (EME 9.1.3, 9.1.4): what a
player sends is read strictly, hostile bodies are refused with
LicenceRequestError, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drm import clearkey
from drm.errors import LicenceRequestError
from drm.model import ContentKey

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def test_a_request_reads_and_the_answer_is_a_jwk_set() -> None:
    kids = [bytes([i] * 16) for i in range(3)]
    body = json.dumps({"kids": [clearkey.b64url(k) for k in [*kids, kids[0]]], "type": "temporary"}).encode()
    assert clearkey.parse_request(body) == kids  # in order, each once
    key = ContentKey(kid=kids[0], key=bytes(range(16)), iv=bytes(16))
    answer = json.loads(clearkey.answer([key]))
    assert answer == {"keys": [{"kty": "oct", "k": "AAECAwQFBgcICQoLDA0ODw", "kid": "AAAAAAAAAAAAAAAAAAAAAA"}],
                      "type": "temporary"}
    # Padding and a missing type are accepted, as players differ.
    assert clearkey.parse_request(b'{"kids":["AQEBAQEBAQEBAQEBAQEBAQ=="]}') == [kids[1]]


@pytest.mark.parametrize(
    "body",
    [
        b"", b"null", b"[]", b'"kids"', b"{}", b'{"kids": []}', b'{"kids": "AQEBAQEBAQEBAQEBAQEBAQ"}',
        b'{"kids": [1]}', b'{"kids": ["AQEB"]}', b'{"kids": ["AQEBAQEBAQEBAQEBAQEBAQ+/"]}',
        b'{"kids": ["AQEBAQEBAQEBAQEBAQEBAQ"], "type": "persistent-license"}',
        b'{"kids": ["\\u0000"]}', b"\xff\xfe{", b"[" * 100_000,
        json.dumps({"kids": [clearkey.b64url(bytes([i % 256]) * 16) for i in range(clearkey.MAX_KIDS + 1)]}).encode(),
        b'{"kids": ["' + b"A" * clearkey.MAX_REQUEST_BYTES + b'"]}',
    ],
)
def test_bad_requests_are_refused(body: bytes) -> None:
    with pytest.raises(LicenceRequestError):
        clearkey.parse_request(body)


@given(st.binary(max_size=500))
@settings(max_examples=300)
def test_any_bytes_read_or_are_refused(body: bytes) -> None:
    try:
        kids = clearkey.parse_request(body)
    except LicenceRequestError:
        return
    assert kids and all(len(k) == 16 for k in kids)


@given(JSON)
@settings(max_examples=300)
def test_any_json_reads_or_is_refused(value: object) -> None:
    for body in (json.dumps(value).encode(), json.dumps({"kids": value}).encode(),
                 json.dumps({"kids": [value], "type": value}).encode()):
        try:
            kids = clearkey.parse_request(body)
        except LicenceRequestError:
            continue
        assert kids and all(len(k) == 16 for k in kids)


@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=clearkey.MAX_KIDS, unique=True))
def test_key_ids_round_trip(kids: list[bytes]) -> None:
    body = json.dumps({"kids": [clearkey.b64url(k) for k in kids], "type": "temporary"}).encode()
    assert clearkey.parse_request(body) == kids
