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
import time
from collections.abc import Callable
from dataclasses import dataclass

from drm.model import KeyProvider, Protection
from engine.auth import PROTECTION_SETTING
from engine.registry import StreamRegistry
from packager.hls.keys import KeySchedule, ProtectionError, SegmentProtection, key_uri_under
from packager.hls.live import ProtectionPlans

log = logging.getLogger(__name__)

PERIODS_PER_BROADCAST_BITS = 16
"""A live broadcast's key periods are numbered from its start time in
milliseconds shifted left by this many bits: a name published again never
reuses an earlier broadcast's keys, and a broadcast has room for 65536 key
periods before it could meet a later one's numbers."""

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

    def plan(self, content_id: str, scheme: Protection, first_period: int = 0) -> SegmentProtection | None:
        """The protection of one stream or asset; ``None`` for clear media.
        Raises :class:`ProtectionError` when encryption is wanted and no
        key provider is configured."""
        if not scheme.encrypted:
            return None
        if self.provider is None:
            raise ProtectionError(f"{scheme.value} is asked for but no key provider is configured")
        return SegmentProtection(
            scheme,
            functools.partial(self.provider.key_period, content_id),
            key_uri_under(self.key_uri_base, content_id),
            KeySchedule(self.rotate_every, first_period),
        )


def first_period_of_broadcast(now: float) -> int:
    return int(now * 1000) << PERIODS_PER_BROADCAST_BITS


def stream_plans(
    policy: ProtectionPolicy, registry: StreamRegistry, clock: Callable[[], float] = time.time
) -> ProtectionPlans:
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
        return policy.plan(name, scheme, first_period_of_broadcast(clock()))

    return plan
