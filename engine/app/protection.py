"""Which streams are encrypted, how, and with whose keys: the composition
root's side of :mod:`packager.hls.keys`.

A stream's scheme is the one its publish grant named (the control API's
stream record, kept as the stream's ``protection`` setting), else the
configured default. Its keys come from the engine's key provider, under the
stream's playback name, which is what the key endpoint ``/keys/NAME/KID``
looks them up by.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from drm.model import KeyProvider, Protection
from engine.auth import PROTECTION_SETTING
from engine.registry import StreamRegistry
from packager.hls.keys import ProtectionError, SegmentProtection, key_uri_under
from packager.hls.live import ProtectionPlans

log = logging.getLogger(__name__)

DEFAULT_KEY_URI_BASE = "/keys"


@dataclass(frozen=True, slots=True)
class ProtectionPolicy:
    """``default``: the scheme of streams whose grant names none.
    ``rotate_every``: segments per key period (0: one period per
    publish, plus one per reconnect). ``key_uri_base``: where playlists
    send players for keys (the engine's key endpoint unless keys are served
    from elsewhere)."""

    default: Protection = Protection.NONE
    provider: KeyProvider | None = None
    rotate_every: int = 0
    key_uri_base: str = DEFAULT_KEY_URI_BASE

    def plan(self, content_id: str, scheme: Protection) -> SegmentProtection | None:
        """The protection of one stream or asset; ``None`` for clear media.
        Raises :class:`ProtectionError` when encryption is wanted and no
        key provider is configured.

        Its periods start one past the highest the provider has stored for
        ``content_id`` (asked once, from the packager's job queue): a name
        published again, or an asset packaged again, never reuses a key."""
        if not scheme.encrypted:
            return None
        provider = self.provider
        if provider is None:
            raise ProtectionError(f"{scheme.value} is asked for but no key provider is configured")
        return SegmentProtection(
            scheme,
            functools.partial(provider.key_period, content_id),
            key_uri_under(self.key_uri_base, content_id),
            self.rotate_every,
            _Once(lambda: next_period(provider, content_id)),
        )


def next_period(provider: KeyProvider, content_id: str) -> int:
    """The first key period of a new broadcast (or packaging) of ``content_id``."""
    highest = provider.highest_period(content_id)
    return 0 if highest is None else highest + 1


class _Once:
    """Calls ``compute`` on first use only, in whichever thread asks first;
    every rendition of a stream gets the same first period."""

    def __init__(self, compute: Callable[[], int]) -> None:
        self._compute = compute
        self._lock = threading.Lock()
        self._value: int | None = None

    def __call__(self) -> int:
        with self._lock:
            if self._value is None:
                self._value = self._compute()
            return self._value


def stream_plans(policy: ProtectionPolicy, registry: StreamRegistry) -> ProtectionPlans:
    """The :class:`~packager.hls.live.HlsService` hook: each new source
    stream's protection, from its settings or the policy's default."""

    def plan(name: str) -> SegmentProtection | None:
        requested = registry.settings(name).get(PROTECTION_SETTING)
        scheme = policy.default
        if requested is not None:
            try:
                scheme = Protection(requested)
            except ValueError as exc:
                raise ProtectionError(f"unknown protection {requested!r}") from exc
        return policy.plan(name, scheme)

    return plan
