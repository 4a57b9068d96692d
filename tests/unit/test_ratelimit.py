"""The rate limiter keeps the average rate, across calls, without sleeping when under it (fake clock)."""

from __future__ import annotations

from replicator.core.ratelimit import RateLimiter


def test_keys_are_spread_to_the_rate():
    now, slept = [100.0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.take(500)  # 2,500 keys at 1,000/s: 2.5 s, the first batch free
    assert abs(now[0] - 100.0 - 2.0) < 1e-9 and len(slept) == 4
    now[0] += 60  # idle for a minute: no burst credit beyond one batch
    limiter.take(500)
    assert len(slept) == 4


def test_no_rate_means_no_waiting():
    limiter = RateLimiter(None, sleep=lambda s: (_ for _ in ()).throw(AssertionError("slept")))
    limiter.take(10**9)
