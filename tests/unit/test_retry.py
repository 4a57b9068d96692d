"""The retry policy in memory: full-jitter waits within bounds and capped, bounded retries, a stop request ending the
wait, non-retryable errors passing through, and exactly one log line and one metric increment per retry -- for a test
policy and for every named one. A fake
event and a fake sleep stand in for the clock: nothing here sleeps."""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from replicator import retry
from replicator.core.errors import SinkError, SourceError

POLICY = retry.Policy("test_op", "retrying the test operation", base_s=0.5, cap_s=4.0, retries=3)


class FakeEvent:
    """A threading.Event whose wait() records the timeout and returns at once; set after ``set_after`` waits."""

    def __init__(self, set_after: int | None = None) -> None:
        self.waits: list[float] = []
        self._set = False
        self._set_after = set_after

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if self._set_after is not None and len(self.waits) >= self._set_after:
            self._set = True
        return self._set


def _retries(operation: str) -> float:
    return REGISTRY.get_sample_value("replicator_retries_total", {"operation": operation}) or 0.0


def _failing(times: int, error: Exception, result: str = "done"):
    calls = []

    def operation() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return operation, calls


def test_delays_are_full_jitter_exponential_and_capped(monkeypatch):
    bounds = []
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: bounds.append((low, high)) or high)
    assert [POLICY.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert {low for low, _high in bounds} == {0}


def test_delays_are_drawn_within_the_bounds():
    for n in range(1, 8):
        draws = [POLICY.delay(n) for _ in range(200)]
        assert all(0 <= d <= min(4.0, 0.5 * 2**n) for d in draws)
        assert len(set(draws)) > 1  # jittered, not fixed


def test_a_failing_operation_is_retried_until_it_succeeds():
    event = FakeEvent()
    operation, calls = _failing(2, SourceError("redis away", retryable=True))
    assert retry.call(operation, POLICY, stop=event) == "done"
    assert len(calls) == 3 and len(event.waits) == 2
    assert all(0 <= w <= 4.0 for w in event.waits)


def test_retries_are_bounded_when_the_policy_says_so_and_the_last_error_is_raised():
    sleeps: list[float] = []
    error = SourceError("redis away", retryable=True)
    operation, calls = _failing(10, error)
    with pytest.raises(SourceError) as raised:
        retry.call(operation, POLICY, sleep=sleeps.append)
    assert raised.value is error
    assert len(calls) == 1 + POLICY.retries and len(sleeps) == POLICY.retries


def test_unbounded_policy_retries_until_success():
    sleeps: list[float] = []
    operation, calls = _failing(20, SourceError("redis away", retryable=True))
    assert retry.call(operation, replace(POLICY, retries=None), sleep=sleeps.append) == "done"
    assert len(calls) == 21 and len(sleeps) == 20


def test_a_stop_request_ends_the_wait_and_the_retries():
    event = FakeEvent(set_after=2)
    operation, calls = _failing(10, SourceError("redis away", retryable=True))
    with pytest.raises(retry.Stopped):
        retry.call(operation, replace(POLICY, retries=None), stop=event)
    assert len(event.waits) == 2 and len(calls) == 2  # the interrupted wait is not followed by another try


def test_a_backoff_does_not_retry_once_stopped():
    event = FakeEvent()
    event.set()
    backoff = retry.Backoff(POLICY, stop=event)
    before = _retries("test_op")
    assert not backoff.wait(SourceError("x", retryable=True))
    assert event.waits == [] and _retries("test_op") == before


def test_a_custom_sleep_that_reports_a_stop_ends_the_retries():
    operation, calls = _failing(10, SourceError("redis away", retryable=True))
    with pytest.raises(retry.Stopped):
        retry.call(operation, POLICY, sleep=lambda seconds: True)
    assert len(calls) == 1


@pytest.mark.parametrize("error", [SourceError("bad config", retryable=False), KeyError("a bug")])
def test_errors_the_policy_does_not_retry_pass_straight_through(error):
    sleeps: list[float] = []
    before = _retries("test_op")
    operation, calls = _failing(1, error)
    with pytest.raises(type(error)) as raised:
        retry.call(operation, POLICY, sleep=sleeps.append)
    assert raised.value is error and len(calls) == 1 and sleeps == []
    assert _retries("test_op") == before


def test_every_retry_logs_one_line_and_counts_one(caplog):
    policy = replace(POLICY, operation="test_counted")
    before = _retries("test_counted")
    operation, _calls = _failing(3, SourceError("redis away", retryable=True))
    with caplog.at_level(logging.INFO, logger="replicator.retry"):
        assert retry.call(operation, policy, sleep=lambda s: None, node="n1") == "done"
    lines = [r for r in caplog.records if r.name == "replicator.retry"]
    assert [r.getMessage() for r in lines] == ["retrying the test operation"] * 3
    assert [r.kv["attempt"] for r in lines] == [1, 2, 3]
    assert all(r.kv["operation"] == "test_counted" and r.kv["node"] == "n1" and r.kv["error"] == "redis away"
               and r.levelno == logging.WARNING for r in lines)
    assert _retries("test_counted") == before + 3


def test_a_backoff_counts_its_retries_and_starts_over_after_a_reset(monkeypatch):
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)
    sleeps: list[float] = []
    backoff = retry.Backoff(POLICY, sleep=sleeps.append)
    assert backoff.wait("throttled") and backoff.wait("throttled")
    backoff.reset()
    assert backoff.wait("throttled") and backoff.wait("throttled") and backoff.wait("throttled")
    assert backoff.exhausted and not backoff.wait("throttled")
    assert sleeps == [1.0, 2.0, 1.0, 2.0, 4.0]


NAMED = [value for value in vars(retry).values() if isinstance(value, retry.Policy)]
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("policy", NAMED, ids=lambda policy: policy.operation)
def test_every_named_policy_waits_a_jittered_capped_time_averaging_its_base_first(policy, monkeypatch):
    monkeypatch.setattr(retry.random, "uniform", random.Random(23).uniform)  # the same draws on every run
    first = [policy.delay(1) for _ in range(4000)]
    assert sum(first) / len(first) == pytest.approx(min(policy.base_s, policy.cap_s / 2), rel=0.05)
    for n in (1, 3, 10, 64):
        draws = [policy.delay(n) for _ in range(200)]
        assert all(0 <= d <= policy.cap_s for d in draws), (n, max(draws))
        assert len(set(draws)) > 100, n  # drawn, not fixed: processes that failed together spread out
    assert max(policy.delay(64) for _ in range(200)) > policy.cap_s / 2  # the cap bounds the waits, not shrinks them


@pytest.mark.parametrize("policy", NAMED, ids=lambda policy: policy.operation)
def test_every_named_policy_gives_up_only_if_bounded_raising_the_last_error_and_counts_each_retry(policy):
    errors = [SourceError(f"failure {n}", retryable=True) for n in range(60)]
    calls: list[int] = []
    sleeps: list[float] = []

    def operation() -> str:
        calls.append(1)
        if len(calls) <= 50:  # more failures than any bounded policy allows
            raise errors[len(calls) - 1]
        return "done"

    before = _retries(policy.operation)
    if policy.retries is None:
        assert retry.call(operation, policy, sleep=sleeps.append) == "done"
        retried = 50
    else:
        with pytest.raises(SourceError) as raised:
            retry.call(operation, policy, sleep=sleeps.append)
        retried = policy.retries
        assert raised.value is errors[retried]
    assert len(calls) == retried + 1 and len(sleeps) == retried
    assert _retries(policy.operation) == before + retried


def test_the_line_an_apply_batch_retry_logs_is_the_one_the_readme_tells_operators_to_look_for(caplog):
    operation, _calls = _failing(1, SinkError("AccessDenied", retryable=True))
    with caplog.at_level(logging.INFO, logger="replicator.retry"):
        retry.call(operation, retry.APPLY_BATCH, sleep=lambda s: None)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "replicator.retry"]
    assert f"`{line} " in README, line
