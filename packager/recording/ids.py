"""Recording ids: ``rec_`` and 20 lowercase base32 characters (100 random
bits). Ids name storage keys and journal files, so they are made here and
validated before use, never taken from user input as names."""

from __future__ import annotations

import base64
import re
import secrets

from packager.recording.errors import RecordingIdError

_ID = re.compile(r"rec_[a-z2-7]{20}")


def new_recording_id() -> str:
    return "rec_" + base64.b32encode(secrets.token_bytes(15)).decode("ascii").lower()[:20]


def check_recording_id(value: object) -> str:
    """``value`` when it is a recording id; RecordingIdError otherwise."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise RecordingIdError(f"not a recording id: {value!r}")
    return value


def recording_prefix(recording_id: str) -> str:
    """The storage prefix of every object of the recording."""
    return f"recordings/{check_recording_id(recording_id)}/"
