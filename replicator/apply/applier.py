"""The applier: one member of the consumer group, turning polled batches into DynamoDB writes.

Per batch, along the seams of a streaming sink:

1. the assembler (:mod:`~replicator.apply.assembler`, pure) decodes, puts chunks together and keeps the newest
   state per Redis key (states, not operations: older ones in the same batch are superseded);
2. the planner (:func:`replicator.core.mapping.plan_writes`, pure) turns each state into conditional item writes
   against the key's applied state (cached, else loaded);
3. the sink (:mod:`~replicator.apply.sink`) writes them, batched, and returns a typed result per write; heads of
   collection keys go after their items;
4. what is poison is dead-lettered, and the offset tracker (:mod:`~replicator.apply.offsets`) commits.

Offsets are committed only after DynamoDB acknowledged every write and the dead-letter topic every poison record
before them. A retryable failure retries the same batch with backoff and commits nothing meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from replicator import metrics, retry
from replicator.adapters.dynamodb.store import DynamoWriter
from replicator.adapters.kafka.consumer import GroupConsumer
from replicator.adapters.kafka.dead_letters import DeadLetters
from replicator.apply.assembler import BatchAssembler, DeadLetter, KeyWork
from replicator.apply.offsets import Commit, OffsetTracker
from replicator.apply.sink import DynamoSink, Head, Result, WriteResult
from replicator.core import failures
from replicator.core.avro import EventCodec
from replicator.core.config import ApplyConfig
from replicator.core.cutover import Plan as CutoverPlan
from replicator.core.errors import BrokerError
from replicator.core.events import Op, Origin
from replicator.core.mapping import ItemWrite, KeyState, RuleSet, plan_writes

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

#: How often the consumer heartbeats (pause + poll(0)) while a batch is being written.
KEEPALIVE_S = 1.0


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


class Applier:
    def __init__(self, consumer: GroupConsumer, writer: DynamoWriter, rules: RuleSet, config: ApplyConfig,
                 dead_letters: DeadLetters, codec: EventCodec | None = None,
                 lag_interval_s: float = 15.0, plan: Callable[[], CutoverPlan] | None = None) -> None:
        self._consumer = consumer
        #: The cutover plan as of at most a refresh ago: events of switched owners are skipped (the fence).
        self._plan = plan
        self._config = config
        self._dead_letters = dead_letters
        self.topic = consumer.topic
        self._assembler = BatchAssembler(rules, codec or EventCodec(), config.abandon_chunks_after_s)
        self._offsets = OffsetTracker()
        self._cache = StateCache(config.cache_keys)
        self._pool = ThreadPoolExecutor(max_workers=config.write_concurrency, thread_name_prefix="apply")
        self._sink = DynamoSink(writer, config.write_mode, self._parallel, known_items=config.cache_keys)
        #: Set while this applier owns at least one partition (what /readyz reports).
        self.assigned = threading.Event()
        self._lag_interval_s = lag_interval_s
        self._lag_due = 0.0

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set. The batch in flight is finished and committed before returning."""
        self._consumer.join(self._forget_partitions, stop)
        log.info("applying", extra={"kv": {"topic": self.topic}})
        try:
            polls = retry.Backoff(retry.KAFKA_POLL, stop)
            while not stop.is_set():
                try:
                    batch = self._consumer.poll(self._config.poll_timeout_ms, self._config.max_batch)
                except BrokerError as exc:
                    polls.wait(exc)
                    continue
                polls.reset()
                if self._consumer.assigned():
                    self.assigned.set()
                else:
                    self.assigned.clear()
                if batch:
                    self.process(batch, stop)
                elif self._offsets.carried:
                    self._offsets.commit(self._consumer.commit, {})
                if time.monotonic() >= self._lag_due:
                    self._refresh_lag()
        finally:
            self._pool.shutdown(wait=True)
            self._dead_letters.close()
            self._consumer.close()

    def process(self, batch: dict[Any, list[Any]], stop: threading.Event | None = None) -> bool:
        """Apply one polled batch and commit it. Returns False if it was not committed (stopped, or rebalanced).

        While the batch is in flight the consumer keeps its group membership (see
        :meth:`GroupConsumer.keepalive`), so a big state or a long retry does not get this applier evicted and its
        work redone forever.
        """
        try:
            return self._process(batch, stop)
        finally:
            self._consumer.resume()

    def _wait(self, stop: threading.Event | None, seconds: float) -> bool:
        """Back off for ``seconds`` while keeping the group membership. True if asked to stop."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if stop is not None and stop.wait(min(1.0, left)):
                return True
            if stop is None:
                time.sleep(min(1.0, left))
            self._consumer.keepalive()
        return stop is not None and stop.is_set()

    def _process(self, batch: dict[Any, list[Any]], stop: threading.Event | None) -> bool:
        started = time.monotonic()
        try:  # infrastructure failures: the same batch again, until it succeeds
            retry.call(lambda: self._apply_and_flush(batch), retry.APPLY_BATCH, stop=stop,
                       sleep=lambda seconds: self._wait(stop, seconds))
        except retry.Stopped:
            return False
        commit = self._offsets.commit(self._consumer.commit,
                                      self._offsets.next_offsets(batch, self._assembler.held_offset))
        if commit is Commit.REFUSED:
            self._cache.drop_partitions(tp.partition for tp in batch)
        metrics.APPLY_BATCH_SECONDS.observe(time.monotonic() - started)
        return commit is Commit.DONE

    def _apply_and_flush(self, batch: dict[Any, list[Any]]) -> None:
        self._apply(batch)
        try:
            self._dead_letters.flush()  # a poison record must be safe in the DLQ before we commit past it
        except BrokerError:
            self._offsets.dead_letters_unsure()
            raise

    def _refresh_lag(self) -> None:
        """Set replicator_consumer_lag for every owned partition: log end offset - committed offset.

        Measured by the applier itself, so it stops moving when no applier runs: alert on it together with
        "events captured but none applied" (the chart's PrometheusRule does), or watch `replicator status`.
        """
        self._lag_due = time.monotonic() + self._lag_interval_s
        try:
            lags = self._consumer.lag(self._offsets.committed)
        except BrokerError as exc:
            log.debug("lag refresh failed", extra={"kv": {"error": str(exc)}})
            return
        for tp, lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)

    def _forget_partitions(self, partitions: set[int]) -> None:
        """Partitions revoked: another applier may write these owners from now on, so cached states could go
        stale, and chunks held back will be redelivered to it from the committed offset."""
        self._cache.drop_partitions(partitions)
        self._offsets.forget(partitions)
        self._assembler.forget(partitions)
        for partition in partitions:
            with contextlib.suppress(KeyError):  # whoever owns the partition now reports its lag
                metrics.CONSUMER_LAG.remove(self.topic, str(partition))

    # ----------------------------------------------------------------------------------------------------------------

    def _apply(self, batch: dict[Any, list[Any]]) -> None:
        assembly = self._assembler.assemble(batch)
        for dead in assembly.dead:
            self._dead_letter(dead)
        work = self._fence(assembly.work)
        self._load_states(work)
        writes: list[tuple[KeyWork, ItemWrite]] = []
        for w in work:
            if w.poison is not None:
                continue
            try:
                w.plan = plan_writes(w.rule, w.variables, w.event, w.previous)
            except Exception as exc:
                self._failed(w, exc, "planning")
                continue
            writes.extend((w, iw) for iw in w.plan.writes)
        results = self._sink.write([iw for _w, iw in writes])
        # Items another writer had already moved past (a zombie applier during a rebalance): DynamoDB is not what
        # the plan says for them, so the key's state is reloaded next time instead of cached.
        partly_stale = set()
        landed = set()  # keys at least one of whose writes DynamoDB took
        for (w, _iw), result in zip(writes, results, strict=True):
            self._settle(w, result)
            if result.status is Result.STALE:
                partly_stale.add(id(w))
            elif result.status is Result.APPLIED:
                landed.add(id(w))
        heads = [w for w in work if w.rule.is_collection and w.plan is not None and not w.plan.stale
                 and w.poison is None]
        head_results = self._sink.put_heads([Head(w.rule, w.event.key, w.event.version, w.event.op is Op.DELETE,
                                                  exists=w.previous.version >= 0) for w in heads])
        for w, result in zip(heads, head_results, strict=True):
            self._settle(w, result)
        now = time.time()
        for w in work:
            partition = w.record.partition
            self._assembler.settled(partition, w.event.key, w.event.version)
            if w.poison is not None or w.plan is None:
                if w.rule.is_collection:
                    self._cache.forget(partition, w.rule.name, w.event.key)
                continue
            table = w.rule.table
            # Stale: older than the key's head, or every item write refused (DynamoDB holds newer versions of all
            # of it, e.g. what the application wrote there after cutover).
            if w.plan.stale or (id(w) in partly_stale and id(w) not in landed):
                metrics.EVENTS_APPLIED.labels(table=table, result="stale").inc()
                if w.rule.is_collection:
                    self._cache.forget(partition, w.rule.name, w.event.key)
                continue
            if w.rule.is_collection and id(w) not in partly_stale:
                self._cache.put(partition, w.rule.name, w.event.key, w.plan.state)
            elif w.rule.is_collection:
                self._cache.forget(partition, w.rule.name, w.event.key)
            result = "tombstoned" if w.event.op is Op.DELETE else "applied"
            metrics.EVENTS_APPLIED.labels(table=table, result=result).inc()
            metrics.END_TO_END_LATENCY.observe(max(0.0, now - w.event.captured_at_us / 1e6))

    def _fence(self, work: list[KeyWork]) -> list[KeyWork]:
        """Skip the events of owners switched to DynamoDB: the application writes their data there now, and Redis
        (a warm copy, or written by someone who never switched) must not touch it. Native versions refuse such writes
        anyway; the fence also keeps items the application has not written since the switch."""
        plan = self._plan() if self._plan is not None else None
        if plan is None or plan.dynamodb == 0:
            return work
        kept = []
        for w in work:
            if w.poison is None and plan.stage(w.event.owner).switched:
                self._assembler.settled(w.record.partition, w.event.key, w.event.version)
                if w.rule.is_collection:
                    self._cache.forget(w.record.partition, w.rule.name, w.event.key)
                metrics.EVENTS_APPLIED.labels(table=w.rule.table, result="switched").inc()
            else:
                kept.append(w)
        return kept

    def _settle(self, w: KeyWork, result: WriteResult) -> None:
        if result.status is Result.POISON:
            assert result.error is not None
            self._failed(w, result.error, "write")

    def _failed(self, w: KeyWork, exc: BaseException, stage: str) -> None:
        """A step of one key's work failed: retry the batch if the cause is infrastructure, else the key is poison.

        :mod:`replicator.core.failures` decides which; this is where every per-key step reports its failure.
        """
        if failures.is_retryable(exc):
            raise exc
        if w.poison is None:
            w.poison = failures.reason(exc, stage)
            for record in w.records:
                self._dead_letter(DeadLetter(record, w.poison, failures.describe(exc)))

    def _load_states(self, work: list[KeyWork]) -> None:
        missing = []
        for w in work:
            if not w.rule.is_collection:
                continue
            # A repair exists because DynamoDB may differ from what this applier believes it wrote: read it.
            repair = w.event.origin is Origin.REPAIR
            cached = None if repair else self._cache.get(w.record.partition, w.rule.name, w.event.key)
            if cached is None:
                missing.append(w)
            else:
                w.previous = cached
        states = self._sink.load_states([(w.rule, w.event.key, w.variables) for w in missing])
        for w, state in zip(missing, states, strict=True):
            if isinstance(state, Exception):
                self._failed(w, state, "state_load")
            else:
                w.previous = state

    def _dead_letter(self, dead: DeadLetter) -> None:
        if self._offsets.first_dead_letter(dead.record.partition, dead.record.offset):
            self._dead_letters.send(dead.record, dead.reason, dead.error)

    def _parallel(self, fn: Callable[[T], R], items: list[T]) -> list[Any]:
        """Run ``fn`` over ``items`` on the pool; results (or the exceptions raised) in input order, with inputs.
        The consumer keeps its group membership meanwhile."""
        if not items:
            return []
        futures = [self._pool.submit(fn, item) for item in items]
        while wait(futures, timeout=KEEPALIVE_S).not_done:
            self._consumer.keepalive()
        out = []
        for item, future in zip(items, futures, strict=True):
            try:
                out.append((item, future.result()))
            except Exception as exc:
                out.append((item, exc))
        return out
