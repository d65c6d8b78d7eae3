"""A key provider with fixed, derivable keys: a test double of the engine's own
:class:`drm.model.KeyProvider` interface, for packaging tests.

Each (content ID, period) gets a key, key ID and IV derived from a hash, so a
test (or a key server in the test) can compute any key the packager used.
"""

from __future__ import annotations

import hashlib
import threading

from drm.model import ContentKey, DrmSystemData, KeyPeriod


def fixed_key(content_id: str, index: int) -> ContentKey:
    digest = hashlib.sha256(f"{content_id}/{index}".encode()).digest()
    iv = hashlib.sha256(digest).digest()[:16]
    return ContentKey(kid=digest[16:], key=digest[:16], iv=iv)


class FixedKeys:
    """Implements :class:`drm.model.KeyProvider`; counts the periods asked for."""

    def __init__(self, systems: tuple[DrmSystemData, ...] = ()) -> None:
        self.systems = systems
        self.asked: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._known: dict[bytes, tuple[str, ContentKey]] = {}

    def key_period(self, content_id: str, index: int) -> KeyPeriod:
        key = fixed_key(content_id, index)
        with self._lock:
            self.asked.append((content_id, index))
            self._known[key.kid] = (content_id, key)
        return KeyPeriod(content_id, index, key, self.systems)

    def highest_period(self, content_id: str) -> int | None:
        with self._lock:
            known = [index for name, index in self.asked if name == content_id]
        return max(known) if known else None

    def find_key(self, content_id: str, kid: bytes) -> ContentKey | None:
        with self._lock:
            found = self._known.get(kid)
        if found is None or found[0] != content_id:
            return None
        return found[1]
