"""From read states to change events, and the one read-and-publish path (:class:`KeyCapture`).

The states come from the atomic reader of states.py (on one server) or cluster.py (on each key's primary); both are
below this module, so the imports point one way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import redis

from replicator import metrics
from replicator.adapters.redis.cluster import state_reader
from replicator.adapters.redis.states import RawState
from replicator.core.config import CaptureConfig
from replicator.core.events import ChangeEvent, Chunk, KeyType, Op, Origin, Value
from replicator.core.mapping import RuleSet
from replicator.core.shards import in_shard

log = logging.getLogger(__name__)

#: Redis types no rule or mirror item can hold yet.
_UNSUPPORTED = (KeyType.STREAM, KeyType.UNKNOWN)


def to_events(state: RawState, rules: RuleSet, origin: Origin, node: str, db: int, captured_at_us: int,
              chunk_bytes: int) -> list[ChangeEvent]:
    """The state as one event, or as chunks of one version when its value is larger than ``chunk_bytes``."""
    event = to_event(state, rules, origin, node, db, captured_at_us)
    if event is None:
        return []
    if type(event.value) is bytes and len(event.value) <= chunk_bytes:
        return [event]
    pieces = split_value(event.value, chunk_bytes)
    if len(pieces) <= 1:
        return [event]
    return [replace(event, value=piece, chunk=Chunk(i, len(pieces))) for i, piece in enumerate(pieces)]


def split_value(value: Value, chunk_bytes: int) -> list[Value]:
    """Split a value into pieces of about ``chunk_bytes`` (bytes sliced; collections by whole members)."""
    if value is None:
        return [value]
    if isinstance(value, bytes):
        return [value[i : i + chunk_bytes] for i in range(0, len(value), chunk_bytes)] or [value]
    pieces: list[Value] = []
    current: list = []
    size = 0
    for element in value:
        weight = 8 + (len(element) if isinstance(element, bytes) else sum(
            len(part) if isinstance(part, bytes) else 8 for part in element))
        if current and size + weight > chunk_bytes:
            pieces.append(tuple(current))
            current, size = [], 0
        current.append(element)
        size += weight
    pieces.append(tuple(current))
    return pieces


def to_event(state: RawState, rules: RuleSet, origin: Origin, node: str, db: int, captured_at_us: int,
             ) -> ChangeEvent | None:
    """The event for a read state, or None when no rule captures the key or its type is not replicated."""
    matched = rules.match(state.key)
    if matched is None:
        return None
    rule, variables = matched
    if state.type in _UNSUPPORTED:
        return None
    deleted = state.type is KeyType.NONE
    expire_at = None
    if not deleted and state.pttl_ms > 0:
        expire_at = state.version // 1000 + state.pttl_ms
    return ChangeEvent(
        key=state.key,
        type=state.type,
        op=Op.DELETE if deleted else Op.UPSERT,
        origin=origin,
        version=state.version,
        captured_at_us=captured_at_us,
        owner=rules.owner(rule, state.key, variables),
        value=None if deleted else state.value,
        expire_at_ms=expire_at,
        node=node,
        db=db,
        event_id=ChangeEvent.new_id(),
    )


class Publisher(Protocol):
    """Where captured events go (the Kafka producer in production): the Redis side does not need to know Kafka."""

    def publish(self, event: ChangeEvent) -> None: ...


class KeyCapture:
    """Read keys atomically and publish their states: the one path shared by the listener, snapshot and repair.

    With ``capture.shards`` > 1, keys whose owner is not in ``capture.shard`` are left to the other shards.
    """

    def __init__(self, client: redis.Redis, rules: RuleSet, publisher: Publisher, node: str, db: int,
                 config: CaptureConfig | None = None) -> None:
        config = config or CaptureConfig()
        self._reader = state_reader(client, config.max_inline_members)
        self._chunk_bytes = config.chunk_bytes
        self._shard, self._shards = config.shard, config.shards
        self._rules = rules
        self._publisher = publisher
        self.node = node
        self.db = db
        #: The labelled counters, looked up once: a lookup costs more than the increment.
        self._captured = {o: metrics.EVENTS_CAPTURED.labels(node=node, origin=o.value) for o in Origin}
        self._unsupported = metrics.CAPTURE_SKIPPED.labels(node=node, reason="unsupported_type")
        self._warned_at = -math.inf

    def _skipped(self, state: RawState) -> None:
        """A captured key of a type not replicated (a stream): counted, and said once a minute (a hot stream would
        flood the log). Keys no rule captures are none of our business (globs select more than the rules)."""
        if self._rules.match(state.key) is None:
            return
        self._unsupported.inc()
        if time.monotonic() - self._warned_at >= 60:
            self._warned_at = time.monotonic()
            log.warning("key not replicated: its Redis type is not supported", extra={"kv": {
                "node": self.node, "key": state.key, "type": state.type.value.lower()}})

    def capture(self, keys: Sequence[bytes], origin: Origin) -> int:
        """Returns the number of events handed to the publisher (acknowledged later; see EventPublisher.flush)."""
        return self.publish(self.read(keys), origin)

    def read(self, keys: Sequence[bytes]) -> Reading:
        """The states of ``keys`` (those of this shard), and when they were read."""
        if self._shards > 1:
            owner_of = self._rules.owner_of
            keys = [k for k in keys if (o := owner_of(k)) is not None and in_shard(o, self._shard, self._shards)]
        read_at_us = time.time_ns() // 1000
        return Reading(self._reader.read(keys), read_at_us)

    def publish(self, reading: Reading, origin: Origin) -> int:
        """Publish the states of a :meth:`read` (split in two so a caller can read ahead while it publishes)."""
        publish = self._publisher.publish
        published = 0
        try:
            for state in reading.states:
                events = to_events(state, self._rules, origin, self.node, self.db, reading.read_at_us,
                                   self._chunk_bytes)
                for event in events:
                    publish(event)
                if events:
                    published += 1
                elif state.type in _UNSUPPORTED:
                    self._skipped(state)
        finally:
            if published:
                self._captured[origin].inc(published)
        return published


@dataclass(frozen=True, slots=True)
class Reading:
    states: list[RawState]
    read_at_us: int
