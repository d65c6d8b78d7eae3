"""The rule asset ids and the file names inside an asset follow.

An asset id is 3-64 of ``a-z 0-9 _ -``, starting with a letter or digit
(a recording's id, a 32-digit hex string, fits; so does a name chosen for a
transcoded file such as ``intro-2026``). A file name inside an asset is a
name without dots followed by one known extension. Neither can hold ``/``,
``.``-segments, ``%`` or control characters, so neither can leave the
asset's prefix in storage, whatever the request says.
"""

from __future__ import annotations

import re

from packager.errors import AssetIdError

ASSET_ID = re.compile(r"[a-z0-9][a-z0-9_-]{2,63}")
VARIANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\.(?:m3u8|mp4|m4s|ts|mpd)")

ASSET_PREFIXES = ("assets/", "recordings/")
"""Where assets live in storage: transcoded files under ``assets/ID/``,
recordings under ``recordings/ID/`` (the recorder's layout)."""


def check_asset_id(asset_id: str) -> str:
    """``asset_id`` when it follows the rule; :class:`AssetIdError` otherwise."""
    if not isinstance(asset_id, str) or not ASSET_ID.fullmatch(asset_id):
        raise AssetIdError(f"invalid asset id {asset_id!r}: 3-64 of a-z 0-9 _ - (not starting with _ or -)")
    return asset_id


def is_asset_id(text: str) -> bool:
    return isinstance(text, str) and ASSET_ID.fullmatch(text) is not None
