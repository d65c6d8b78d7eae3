"""The default key provider: content keys made on this node, kept sealed
in the content key store (:mod:`drm.store`)."""

from __future__ import annotations

import secrets

from drm.model import KEY_BYTES, ContentKey, DrmSystemData, KeyPeriod, SystemId
from drm.pssh import clearkey_pssh
from drm.store import ContentKeyStore

MAX_CONTENT_ID = 256


def check_content_id(content_id: str, index: int | None = None) -> None:
    """Raise ``ValueError`` for a content ID or period index no caller
    should pass (a misuse, not a peer's error): content IDs are playback
    names and asset ids."""
    if not content_id or len(content_id) > MAX_CONTENT_ID or not content_id.isprintable():
        raise ValueError(f"a content ID is 1-{MAX_CONTENT_ID} printable characters")
    if index is not None and index < 0:
        raise ValueError("a key period index is not negative")


def clearkey_system(kid: bytes) -> DrmSystemData:
    """The W3C common system's data for one key: keys of this engine are
    handed out by its own ClearKey licence endpoint."""
    return DrmSystemData(system_id=SystemId.CLEARKEY.value, pssh=clearkey_pssh([kid]))


class LocalKeyProvider:
    """:class:`drm.model.KeyProvider` over the local store: a key period's
    key, key ID and IV are random, made on first use; every later call, in
    any thread or worker process sharing the data directory, gets the same."""

    def __init__(self, store: ContentKeyStore) -> None:
        self.store = store

    def key_period(self, content_id: str, index: int) -> KeyPeriod:
        check_content_id(content_id, index)
        found = self.store.get(content_id, index)
        if found is not None:
            return found
        kid = secrets.token_bytes(KEY_BYTES)
        key = ContentKey(kid=kid, key=secrets.token_bytes(KEY_BYTES), iv=secrets.token_bytes(KEY_BYTES))
        return self.store.put_if_absent(KeyPeriod(content_id, index, key, (clearkey_system(kid),)))

    def find_key(self, content_id: str, kid: bytes) -> ContentKey | None:
        if len(kid) != KEY_BYTES:
            return None
        check_content_id(content_id)
        return self.store.find(content_id, kid)

    def highest_period(self, content_id: str) -> int | None:
        """See :meth:`drm.store.ContentKeyStore.highest_period`."""
        return self.store.highest_period(content_id)
