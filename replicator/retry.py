"""Retrying what failed for a reason outside the data: one backoff, one loop, one log line and one metric per retry.

Every wait before a retry is *full jitter*, exponential, capped: before retry ``n`` (1, 2, …) a uniform draw in
``[0, min(cap_s, base_s · 2ⁿ)]``, so ``base_s`` is the mean of the first wait. Full jitter because processes that
failed together (every applier when DynamoDB throttles, every listener when Redis restarts) would otherwise retry
together and fail together again.

What differs per kind of failure is a :class:`Policy`: its bounds, how many retries it allows (or: until stopped),
the line it logs. The policies are the constants below, one per kind of failure. A caller either hands one
operation to :func:`call`, or, when the loop is its own (a subscription that runs for hours and then drops, a round
of statements some of which came back throttled), keeps a :class:`Backoff` and calls :meth:`Backoff.wait` after
each failure. Either way each retry logs one line (``operation``, ``attempt``, ``retry_in_s``, ``error``) and adds
one to ``replicator_retries_total{operation}``; a wait given a stop event ends as soon as the event is set.

How this composes with botocore's own retries (the DynamoDB client of :mod:`replicator.adapters.dynamodb.store`,
standard mode, 5 attempts): botocore retries one *request* (throttling, 5xx, a dropped connection) with its own
backoff before we see anything, and does not count towards ``replicator_retries_total``; an error that reaches
our code has exhausted those attempts. Ours work at a coarser grain that botocore cannot see: statements that came
back throttled inside a successful BatchExecuteStatement (:data:`THROTTLED_STATEMENTS`), keys a BatchGetItem left
unprocessed (:data:`UNPROCESSED_KEYS`), and, above both, the whole polled batch (:data:`APPLY_BATCH`), which is
idempotent and retried until it succeeds.

Not retries, and so not here: loops that poll for a *condition* (a table becoming ACTIVE, a new topic's partitions
getting leaders, the applier group committing past a watermark): they wait for progress with a deadline, not
for a failure to pass.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from replicator import metrics
from replicator.core import failures

log = logging.getLogger(__name__)
T = TypeVar("T")


class Stopped(Exception):
    """Raised by :func:`call` when a stop request ended the wait before a retry."""


@dataclass(frozen=True)
class Policy:
    """How one kind of failure is retried."""

    #: The ``operation`` label of ``replicator_retries_total`` and field of the log line.
    operation: str
    #: The log line of each retry (kept stable: operators and the README search for them).
    message: str
    #: Mean of the first wait; the bound doubles from ``2 · base_s`` on each retry.
    base_s: float
    #: The most any one wait can be.
    cap_s: float
    #: Retries allowed after the first try; None: until it succeeds or a stop is requested.
    retries: int | None = None
    #: Which exceptions :func:`call` retries; anything else passes straight through.
    retryable: Callable[[BaseException], bool] = field(default=failures.is_retryable)
    #: Log level of the retry line (INFO for failures that are routine, like a cluster resharding).
    level: int = logging.WARNING

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1, 2, …): full jitter, exponential, capped."""
        return random.uniform(0, min(self.cap_s, self.base_s * 2**retry))


# --- one policy per kind of failure (values as each call site used them before they were gathered here) ----------

#: A service (Redis, Kafka, DynamoDB) not answering while a command starts: the pod waits, not ready (cli).
SERVICE_START = Policy("service_start", "waiting for dependencies", base_s=1.0, cap_s=30.0)
#: A lost keyspace subscription; its bounds come from ``capture.reconnect_backoff_s`` (capture/listener.py).
REDIS_SUBSCRIPTION = Policy("redis_subscription", "keyspace subscription lost; reconnecting", base_s=0.2, cap_s=10.0)
#: A re-snapshot or reconcile after a gap that failed (Redis, DynamoDB or Kafka away): healed again from the start.
GAP_HEALING = Policy("gap_healing", "healing a gap failed; retrying", base_s=1.0, cap_s=30.0)
#: A poll of the change topic that failed (brokers away): polled again; the client reconnects meanwhile (applier).
KAFKA_POLL = Policy("kafka_poll", "kafka unavailable; polling again", base_s=0.5, cap_s=5.0)
#: A polled batch that failed for an infrastructure reason: retried whole, nothing committed meanwhile (applier).
APPLY_BATCH = Policy("apply_batch", "retrying batch", base_s=0.1, cap_s=20.0)
#: Statements DynamoDB throttled inside a BatchExecuteStatement response: sent again, then the batch fails (sink).
THROTTLED_STATEMENTS = Policy("throttled_statements", "resending throttled statements", base_s=0.05, cap_s=2.0,
                              retries=6, level=logging.INFO)
#: Keys a BatchGetItem of head versions left unprocessed: asked again (8 tries in all), then the batch fails.
UNPROCESSED_KEYS = Policy("unprocessed_keys", "reading unprocessed keys again", base_s=0.05, cap_s=2.0,
                          retries=7, level=logging.INFO)
#: A Redis Cluster read that met a moved slot or a failover: the slot map is refreshed and the primary read again.
CLUSTER_TOPOLOGY = Policy("cluster_topology", "cluster topology changed; refreshing the slot map", base_s=0.2,
                          cap_s=2.0, retries=8, level=logging.INFO)


class Backoff:
    """The retries of one loop that is the caller's own: counts them and, per retry, logs, counts and waits.

    ``stop``: a wait ends when it is set (and no retry is logged once it is). ``sleep(seconds)`` replaces the wait
    (the applier's keeps its group membership meanwhile) and returns True when asked to stop; without either,
    :func:`time.sleep`.
    """

    def __init__(self, policy: Policy, stop: threading.Event | None = None,
                 sleep: Callable[[float], object] | None = None) -> None:
        self.policy = policy
        self.retries = 0
        self._stop = stop
        self._sleep = sleep

    @property
    def exhausted(self) -> bool:
        """Whether the policy allows no further retry."""
        return self.policy.retries is not None and self.retries >= self.policy.retries

    def reset(self) -> None:
        """After a success: the next failure starts again from the first, shortest wait."""
        self.retries = 0

    def wait(self, error: BaseException | str, **kv: Any) -> bool:
        """After a failure: log it, count it and wait the policy's delay; True to try again.

        False, without logging or waiting, when the policy allows no further retry or a stop was requested; False
        too when a stop request ended the wait.
        """
        if self.exhausted or (self._stop is not None and self._stop.is_set()):
            return False
        self.retries += 1
        seconds = self.policy.delay(self.retries)
        what = error if isinstance(error, str) else failures.describe(error)
        log.log(self.policy.level, self.policy.message, extra={"kv": {
            "operation": self.policy.operation, "attempt": self.retries, "retry_in_s": round(seconds, 3),
            "error": what[:300], **kv}})
        metrics.RETRIES.labels(operation=self.policy.operation).inc()
        if self._sleep is not None:
            return not self._sleep(seconds)
        if self._stop is not None:
            return not self._stop.wait(seconds)
        time.sleep(seconds)
        return True


def call(operation: Callable[[], T], policy: Policy, stop: threading.Event | None = None,
         sleep: Callable[[float], object] | None = None,
         on_retry: Callable[[BaseException], None] | None = None, **kv: Any) -> T:
    """``operation()``, retried by ``policy`` while it raises what the policy retries.

    Raises what the policy does not retry at once, the last error once the retries are exhausted, and
    :class:`Stopped` when a stop request (``stop``, or ``sleep`` returning True, see :class:`Backoff`) ended a
    wait. ``on_retry(error)`` runs before each wait (to report it, say); ``kv`` goes into every retry's log line.
    """
    backoff = Backoff(policy, stop, sleep)
    while True:
        try:
            return operation()
        except Exception as exc:
            if not policy.retryable(exc) or backoff.exhausted:
                raise
            if on_retry is not None:
                on_retry(exc)
            if not backoff.wait(exc, **kv):
                raise Stopped(policy.operation) from exc
