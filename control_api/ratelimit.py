"""Token-bucket rate limits keyed by user or address.

Sans-I/O: the caller passes ``now``. Buckets live in memory, bounded in
number (the least recently used are forgotten first), because a limiter that
grows with every spoofed username is itself a denial-of-service vector.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    """``per_minute`` requests a minute per key, in bursts of up to
    ``per_minute``. :meth:`hit` returns 0 when allowed, otherwise the seconds
    until the next request would be."""

    def __init__(self, per_minute: int, max_keys: int = 100_000) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def hit(self, key: str, now: float) -> float:
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + max(0.0, now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
