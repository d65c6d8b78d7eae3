"""Token-bucket rate limits keyed by user, address or both.

Sans-I/O: the caller passes ``now``. Buckets live in memory, bounded in
number (the least recently used are forgotten first), because a limiter that
grows with every spoofed username is itself a denial-of-service vector.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    """``limit`` requests per ``period_s`` seconds per key, in bursts of up
    to ``limit``. :meth:`hit` counts one request and returns 0 when it is
    allowed, otherwise the seconds until the next one would be;
    :meth:`peek` answers the same without counting."""

    def __init__(self, limit: int, period_s: float = 60.0, max_keys: int = 100_000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        self.capacity = float(limit)
        self.rate = limit / period_s
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + max(0.0, now - last) * self.rate)

    def peek(self, key: str, now: float) -> float:
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def hit(self, key: str, now: float) -> float:
        tokens = self._tokens(key, now)
        self._buckets.pop(key, None)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class AuthLimits:
    """The limits on the auth routes, built so that nobody can lock another
    person out by guessing badly.

    * every auth request counts against the caller's address;
    * wrong passwords and codes count against the pair of user and address
      (``failures_per_pair`` at once, refilled at that many an hour), so one
      address guessing at a user only slows itself;
    * and against the user from all addresses together (``failures_per_user``
      an hour): the ceiling on a guessing campaign spread over many
      addresses. One address alone cannot reach it while ``failures_per_pair``
      is well below it.

    Call :meth:`before` ahead of checking credentials and :meth:`failed`
    when they were wrong; both return the seconds to wait (0: go ahead).
    """

    def __init__(self, per_minute_per_address: int, failures_per_pair: int, failures_per_user: int,
                 max_keys: int = 100_000) -> None:
        self.address = RateLimiter(per_minute_per_address, 60.0, max_keys)
        self.pair = RateLimiter(failures_per_pair, 3600.0, max_keys)
        self.user = RateLimiter(failures_per_user, 3600.0, max_keys)

    @staticmethod
    def _pair_key(username: str, address: str) -> str:
        return f"{username}\x00{address}"

    def before(self, address: str, username: str | None, now: float) -> tuple[float, str]:
        """Count one request from ``address``; ``(wait, reason)`` with
        ``wait`` 0 when it may go on to check credentials for ``username``."""
        wait = self.address.hit(address, now)
        if wait > 0:
            return wait, "too many auth requests from this address"
        if username is not None:
            wait = self.pair.peek(self._pair_key(username, address), now)
            if wait > 0:
                return wait, "too many failed attempts for this user from this address"
            wait = self.user.peek(username, now)
            if wait > 0:
                return wait, "too many failed attempts for this user"
        return 0.0, ""

    def failed(self, address: str, username: str, now: float) -> None:
        """Count one wrong password or code for ``username`` from ``address``."""
        self.pair.hit(self._pair_key(username, address), now)
        self.user.hit(username, now)
