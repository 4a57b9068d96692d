"""The applier: one member of the consumer group, turning polled batches into DynamoDB writes.

Per batch: decode → keep the newest event per Redis key (states, not operations, so older ones in the same batch
are superseded) → plan writes against the key's applied state → write (concurrently; items of one key before its
head) → dead-letter what is poison → commit. Offsets are committed only after DynamoDB acknowledged every write
and the dead-letter topic every poison record before them. A retryable failure retries the same batch with backoff
and commits nothing meanwhile.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata

from replicator import metrics
from replicator.apply.dead_letters import DeadLetters
from replicator.apply.dynamodb import DynamoWriter, is_poison
from replicator.config import ApplyConfig
from replicator.errors import MappingError, SerializationError, SinkError
from replicator.events import ChangeEvent, EventCodec, Op
from replicator.mapping import EMPTY_STATE, ItemWrite, KeyState, Plan, Rule, RuleSet, plan_writes

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

#: Backoff for retryable DynamoDB failures: full jitter, capped.
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 20.0


@dataclass
class _KeyWork:
    record: Any
    event: ChangeEvent
    rule: Rule
    variables: dict[str, bytes]
    previous: KeyState = EMPTY_STATE
    plan: Plan | None = None
    poison: str | None = None


class StateCache:
    """The last applied state of collection keys, per assigned partition, least recently used evicted first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[int, str, bytes], KeyState] = OrderedDict()

    def get(self, partition: int, rule: str, key: bytes) -> KeyState | None:
        entry = self._entries.get((partition, rule, key))
        if entry is not None:
            self._entries.move_to_end((partition, rule, key))
        return entry

    def put(self, partition: int, rule: str, key: bytes, state: KeyState) -> None:
        if self._capacity <= 0:
            return
        self._entries[(partition, rule, key)] = state
        self._entries.move_to_end((partition, rule, key))
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, partition: int, rule: str, key: bytes) -> None:
        self._entries.pop((partition, rule, key), None)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for entry in [e for e in self._entries if e[0] in gone]:
            del self._entries[entry]

    def __len__(self) -> int:
        return len(self._entries)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, cache: StateCache) -> None:
        self._cache = cache

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Another applier may write these owners from now on: our cached states could go stale.
        self._cache.drop_partitions(tp.partition for tp in revoked)
        log.info("partitions revoked", extra={"kv": {"partitions": sorted(tp.partition for tp in revoked)}})

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned", extra={"kv": {"partitions": sorted(tp.partition for tp in assigned)}})


class Applier:
    def __init__(self, consumer: KafkaConsumer, writer: DynamoWriter, rules: RuleSet, config: ApplyConfig,
                 dead_letters: DeadLetters, topic: str, codec: EventCodec | None = None) -> None:
        self._consumer = consumer
        self._writer = writer
        self._rules = rules
        self._config = config
        self._dead_letters = dead_letters
        self.topic = topic
        self._codec = codec or EventCodec()
        self._cache = StateCache(config.cache_keys)
        self._pool = ThreadPoolExecutor(max_workers=config.write_concurrency, thread_name_prefix="apply")
        self.assigned = threading.Event()
        #: Records of the batch in flight already dead-lettered: a retried batch must not send them twice.
        self._dead_lettered: set[tuple[int, int]] = set()

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set. The batch in flight is finished and committed before returning."""
        self._consumer.subscribe([self.topic], listener=_Rebalance(self._cache))
        log.info("applying", extra={"kv": {"topic": self.topic}})
        try:
            while not stop.is_set():
                batch = self._consumer.poll(timeout_ms=self._config.poll_timeout_ms,
                                            max_records=self._config.max_batch)
                if self._consumer.assignment():
                    self.assigned.set()
                if batch:
                    self.process(batch, stop)
        finally:
            self._pool.shutdown(wait=True)
            self._dead_letters.close()
            # Everything applied was committed batch by batch; closing must not commit a position past it.
            self._consumer.close(autocommit=False)

    def process(self, batch: dict[TopicPartition, list[Any]], stop: threading.Event | None = None) -> bool:
        """Apply one polled batch and commit it. Returns False if stopped before the batch could be applied."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                self._apply(batch)
                break
            except SinkError as exc:
                if not exc.retryable:
                    raise
                attempt += 1
                delay = exc.retry_after or random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
                log.warning("retrying batch", extra={"kv": {"attempt": attempt, "delay_s": round(delay, 3),
                                                            "error": str(exc)}})
                if stop is not None and stop.wait(delay):
                    return False
                if stop is None:
                    time.sleep(delay)
        self._dead_letters.flush()
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in batch.items()}
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while the batch was applied (brokers before 0.10.1 only see heartbeats from
            # poll(), so a long retry outlives the session). The writes are in DynamoDB and idempotent: whoever
            # gets these partitions re-applies them harmlessly. Nothing is lost by not committing.
            self._cache.drop_partitions(tp.partition for tp in offsets)
            log.warning("commit refused after a rebalance; the batch will be re-applied by the partitions' new owner",
                        extra={"kv": {"error": str(exc)}})
            return False
        # Only now: a batch redelivered after a refused commit must not dead-letter its records twice.
        self._dead_lettered.clear()
        metrics.APPLY_BATCH_SECONDS.observe(time.monotonic() - started)
        return True

    # ----------------------------------------------------------------------------------------------------------------

    def _apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        work = self._newest_per_key(batch)
        self._load_states(work)
        writes: list[tuple[_KeyWork, ItemWrite]] = []
        for w in work:
            if w.poison is not None:
                continue
            try:
                w.plan = plan_writes(w.rule, w.variables, w.event, w.previous)
            except MappingError as exc:
                w.poison = "unmappable"
                self._dead_letter(w.record, "unmappable", str(exc))
                continue
            writes.extend((w, iw) for iw in w.plan.writes)
        results = self._parallel(lambda pair: self._write(*pair), writes)
        failed_keys = self._raise_retryable_or_dead_letter(results)
        heads = [w for w in work if w.rule.is_collection and w.plan is not None and not w.plan.stale
                 and id(w) not in failed_keys]
        self._raise_retryable_or_dead_letter(self._parallel(self._put_head, heads))
        now = time.time()
        for w in work:
            partition = w.record.partition
            if w.poison is not None or w.plan is None:
                if w.rule.is_collection:
                    self._cache.forget(partition, w.rule.name, w.event.key)
                continue
            table = w.rule.table
            if w.plan.stale:
                metrics.EVENTS_APPLIED.labels(table=table, result="stale").inc()
                continue
            if w.rule.is_collection:
                self._cache.put(partition, w.rule.name, w.event.key, w.plan.state)
            result = "tombstoned" if w.event.op is Op.DELETE else "applied"
            metrics.EVENTS_APPLIED.labels(table=table, result=result).inc()
            metrics.END_TO_END_LATENCY.observe(max(0.0, now - w.event.captured_at_us / 1e6))

    def _newest_per_key(self, batch: dict[TopicPartition, list[Any]]) -> list[_KeyWork]:
        newest: dict[tuple[str, bytes], _KeyWork] = {}
        for records in batch.values():
            for record in records:
                try:
                    event = self._codec.decode(record.value)
                except SerializationError as exc:
                    self._dead_letter(record, "undecodable", str(exc))
                    continue
                matched = self._rules.match(event.key)
                if matched is None:
                    # No rule maps this key (rules changed since capture): nothing to write, nothing lost.
                    log.warning("no rule maps key", extra={"kv": {
                        "key": event.key, "position": f"{record.topic}[{record.partition}]@{record.offset}"}})
                    continue
                rule, variables = matched
                slot = (rule.name, event.key)
                current = newest.get(slot)
                if current is not None:
                    # Two states of one key in one batch: only the newer one needs writing.
                    metrics.EVENTS_APPLIED.labels(table=rule.table, result="superseded").inc()
                if current is None or event.version >= current.event.version:
                    newest[slot] = _KeyWork(record, event, rule, variables)
        return list(newest.values())

    def _load_states(self, work: list[_KeyWork]) -> None:
        missing = []
        for w in work:
            if not w.rule.is_collection:
                continue
            cached = self._cache.get(w.record.partition, w.rule.name, w.event.key)
            if cached is None:
                missing.append(w)
            else:
                w.previous = cached
        loaded = self._parallel(lambda w: self._writer.load_state(w.rule, w.event.key, w.variables), missing)
        for w, state in loaded:
            if isinstance(state, MappingError):
                w.poison = "unmappable"
                self._dead_letter(w.record, "unmappable", str(state))
            elif isinstance(state, Exception):
                raise state
            else:
                w.previous = state

    def _dead_letter(self, record: Any, reason: str, error: str) -> None:
        if (record.partition, record.offset) not in self._dead_lettered:
            self._dead_lettered.add((record.partition, record.offset))
            self._dead_letters.send(record, reason, error)

    def _write(self, w: _KeyWork, write: ItemWrite) -> bool:
        return self._writer.write(write)

    def _put_head(self, w: _KeyWork) -> None:
        self._writer.put_head(w.rule, w.event.key, w.event.version, deleted=w.event.op is Op.DELETE)

    def _raise_retryable_or_dead_letter(self, results: list[Any]) -> set[int]:
        """Re-raise the first retryable or fatal error; dead-letter poison. Returns ids of keys dead-lettered."""
        poisoned: set[int] = set()
        for item, result in results:
            if not isinstance(result, Exception):
                continue
            if isinstance(result, SinkError) and is_poison(result):
                w = item[0] if isinstance(item, tuple) else item
                if id(w) not in poisoned:
                    poisoned.add(id(w))
                    w.poison = "rejected_by_dynamodb"
                    self._dead_letter(w.record, "rejected_by_dynamodb", str(result))
                continue
            raise result
        return poisoned

    def _parallel(self, fn: Callable[[T], R], items: list[T]) -> list[Any]:
        """Run ``fn`` over ``items`` on the pool; results (or the exceptions raised) in input order, with inputs."""
        if not items:
            return []
        futures = [self._pool.submit(fn, item) for item in items]
        out = []
        for item, future in zip(items, futures, strict=True):
            try:
                out.append((item, future.result()))
            except Exception as exc:
                out.append((item, exc))
        return out
