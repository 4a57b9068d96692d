"""Keeping a scan gentle on a production Redis (and DynamoDB): at most N keys per second, across threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """At most ``rate`` keys per second on average (None or 0: unlimited). Thread-safe."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._rate = rate
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep
        self._next = clock()

    def take(self, n: float) -> None:
        """Account for ``n`` keys, sleeping first if they would go faster than the rate."""
        if not self._rate:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + n / self._rate
        if start > now:
            self._sleep(start - now)
