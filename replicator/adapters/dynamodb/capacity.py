"""The read capacity a long read (verify) consumes, counted from DynamoDB's own answers and paced to a limit.

DynamoDB says what each request cost when asked (``ReturnConsumedCapacity``); that is exact whatever the item
sizes, where an estimate from sizes would be wrong for parts, filters and Scan pages. Hooked on the client, so
every read path (BatchGetItem, Query, Scan, GetItem, PartiQL SELECTs) is counted without threading a parameter
through each.
"""

from __future__ import annotations

import threading
from typing import Any

from replicator.core.ratelimit import RateLimiter

_READS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "ExecuteStatement"})


class ReadCapacity:
    """Counts read capacity units (RCU) consumed through ``client`` and, with ``limit``, keeps them at most that
    many per second on average: a request that went over makes the next one (from any thread) wait.

    Meant for a client of its own process (verify's): the hooks stay on the client for its life.
    """

    def __init__(self, client: Any, limit: float | None = None) -> None:
        self.units = 0.0
        self._lock = threading.Lock()
        self._limiter = RateLimiter(limit)
        events = client.meta.events
        events.register("provide-client-params.dynamodb", self._ask, unique_id="replicator-read-capacity-ask")
        events.register("after-call.dynamodb", self._count, unique_id="replicator-read-capacity-count")

    @staticmethod
    def _ask(params: dict[str, Any], model: Any = None, **_kwargs: Any) -> None:
        if model is not None and model.name in _READS:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _count(self, parsed: dict[str, Any] | None = None, model: Any = None, **_kwargs: Any) -> None:
        if model is None or model.name not in _READS or not parsed:
            return
        consumed = parsed.get("ConsumedCapacity") or []
        units = sum(c.get("CapacityUnits", 0.0) for c in (consumed if isinstance(consumed, list) else [consumed]))
        with self._lock:
            self.units += units
        self._limiter.take(units)
