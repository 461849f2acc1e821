"""Rate limits at the HTTP edge: failed enrollment attempts per client address and per claim token."""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from fleet.errors import RateLimited


class EnrollmentGuard:
    """Counts failed enrollments in a moving one-minute window; refuses attempts past the limit with 429.

    In memory, per API process: a limit an attacker can multiply by the number of processes, but not by the
    number of requests. Claim tokens are keyed by a hash, so no token is held in memory longer than a
    request."""

    def __init__(self, per_source: int, per_token: int) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._source = RateLimitItemPerMinute(per_source)
        self._token = RateLimitItemPerMinute(per_token)

    def check(self, source: str, token: str) -> None:
        """Raise RateLimited when this source or this token has used up its failures for the window."""
        for item, scope, key in self._keys(source, token):
            if not self._limiter.test(item, scope, key):
                reset_at = self._limiter.get_window_stats(item, scope, key).reset_time
                retry = max(1, math.ceil(reset_at - time.time()))
                raise RateLimited(
                    f"too many failed enrollment attempts from this {scope}; retry in {retry} s",
                    retry_after_s=retry,
                    details={"reason": "rate_limited", "scope": scope},
                )

    def failed(self, source: str, token: str) -> None:
        for item, scope, key in self._keys(source, token):
            self._limiter.hit(item, scope, key)

    def _keys(self, source: str, token: str) -> list[tuple[RateLimitItemPerMinute, str, str]]:
        token_key = hashlib.sha256(token.encode()).hexdigest()[:32]
        return [(self._source, "source", source), (self._token, "token", token_key)]
