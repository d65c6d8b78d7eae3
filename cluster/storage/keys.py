"""The rule every object key and listing prefix follows.

A key is one to 32 segments joined by ``/``; a segment is 1-128 of
``A-Z a-z 0-9 _ - .`` and does not start with ``.``. So a key is never
absolute, never holds ``..`` or ``.``, backslashes, NUL, control
characters or percent signs, and reads the same as a relative path on
disk and as an S3 object name: no escape from the storage root, no key
that two backends would store under different names. Names starting with
``.`` are left to the local backend's temporary files, which listings
therefore never show.

A prefix (for listing and deleting many objects) is empty, or whole
segments each followed by ``/``, optionally ending in the start of a
segment: ``rec/abc/`` or ``rec/ab``. Prefixes match as plain string
prefixes of keys, as in S3.
"""

from __future__ import annotations

import re

from cluster.storage.errors import InvalidKeyError

SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"
MAX_SEGMENTS = 32
MAX_KEY_LENGTH = 1024
_KEY = re.compile(rf"{SEGMENT}(?:/{SEGMENT}){{0,{MAX_SEGMENTS - 1}}}")
_PREFIX = re.compile(rf"(?:{SEGMENT}/){{0,{MAX_SEGMENTS - 1}}}(?:{SEGMENT})?")


def check_key(key: str) -> str:
    """``key`` itself when it follows the key rule; :class:`InvalidKeyError`
    otherwise (the message shows the key with ``repr``, so control
    characters cannot forge log lines)."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise InvalidKeyError(f"invalid storage key {key!r}: 1-{MAX_SEGMENTS} '/'-separated segments of "
                              "A-Z a-z 0-9 _ - . (not starting with '.')")
    return key


def check_prefix(prefix: str) -> str:
    """``prefix`` itself when it is a valid listing prefix (may be empty)."""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_LENGTH or not _PREFIX.fullmatch(prefix):
        raise InvalidKeyError(f"invalid storage prefix {prefix!r}")
    return prefix
