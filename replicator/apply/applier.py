"""The applier: one member of the consumer group, turning polled batches into DynamoDB writes.

Per batch: decode → keep the newest event per Redis key (states, not operations, so older ones in the same batch
are superseded) → plan writes against the key's applied state → write (concurrently; items of one key before its
head) → dead-letter what is poison → commit. Offsets are committed only after DynamoDB acknowledged every write
and the dead-letter topic every poison record before them. A retryable failure retries the same batch with backoff
and commits nothing meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from replicator import metrics
from replicator.apply import failures, requests
from replicator.apply.dead_letters import DeadLetters
from replicator.apply.dynamodb import DynamoWriter
from replicator.config import ApplyConfig
from replicator.errors import BrokerError, ReplicatorError, SinkError
from replicator.events import ChangeEvent, EventCodec, Op, Origin
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
    #: For a state assembled from chunks: the records of the other chunks (dead-lettered together).
    chunk_records: tuple[Any, ...] = ()


@dataclass
class _Partial:
    """Chunks of one big state (one key, one version) received so far."""

    count: int
    first_offset: int
    parts: dict[int, tuple[Any, ChangeEvent]]
    #: When its state was read: chunks of one state are published within the producer's delivery timeout of it.
    captured_at_us: int = 0


class _ChunkError(Exception):
    """Chunks of one state that cannot be put together (indexes or value types that do not fit)."""

    def __init__(self, records: tuple[Any, ...]) -> None:
        super().__init__("chunks do not assemble into one state")
        self.records = records


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


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, applier: Applier) -> None:
        self._applier = applier

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Another applier may write these owners from now on: our cached states could go stale, and chunks held
        # back will be redelivered to it from the committed offset.
        self._applier._forget_partitions({tp.partition for tp in revoked})
        log.info("partitions revoked", extra={"kv": {"partitions": sorted(tp.partition for tp in revoked)}})

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned", extra={"kv": {"partitions": sorted(tp.partition for tp in assigned)}})


class Applier:
    def __init__(self, consumer: KafkaConsumer, writer: DynamoWriter, rules: RuleSet, config: ApplyConfig,
                 dead_letters: DeadLetters, topic: str, codec: EventCodec | None = None,
                 lag_interval_s: float = 15.0) -> None:
        self._consumer = consumer
        self._writer = writer
        self._rules = rules
        self._config = config
        self._dead_letters = dead_letters
        self.topic = topic
        self._codec = codec or EventCodec()
        self._cache = StateCache(config.cache_keys)
        self._pool = ThreadPoolExecutor(max_workers=config.write_concurrency, thread_name_prefix="apply")
        #: Set while this applier owns at least one partition (what /readyz reports).
        self.assigned = threading.Event()
        self._lag_interval_s = lag_interval_s
        self._lag_due = 0.0
        #: Offsets this applier committed, per partition it owns: the "committed" side of the lag.
        self._committed: dict[TopicPartition, int] = {}
        #: Records of the batch in flight already dead-lettered: a retried batch must not send them twice.
        self._dead_lettered: set[tuple[int, int]] = set()
        #: Incomplete chunked states by (partition, key, version). Offsets are not committed past their first chunk.
        self._partials: dict[tuple[int, bytes, int], _Partial] = {}
        #: Offsets of applied batches whose commit failed (broker unreachable): carried into the next commit.
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set. The batch in flight is finished and committed before returning."""
        self._consumer.subscribe([self.topic], listener=_Rebalance(self))
        log.info("applying", extra={"kv": {"topic": self.topic}})
        try:
            # The group is joined in the first poll: have the topic's partitions in the client's metadata by then.
            # A leader that joins without them assigns nothing ("no partition metadata") and must rebalance again.
            deadline = time.monotonic() + 30
            while not self._consumer.partitions_for_topic(self.topic) and time.monotonic() < deadline:
                stop.wait(0.2)
            while not stop.is_set():
                try:
                    batch = self._consumer.poll(timeout_ms=self._config.poll_timeout_ms,
                                                max_records=self._config.max_batch)
                except KafkaError as exc:
                    log.warning("kafka unavailable; polling again", extra={"kv": {"error": str(exc)}})
                    stop.wait(1.0)
                    continue
                if self._consumer.assignment():
                    self.assigned.set()
                else:
                    self.assigned.clear()
                if batch:
                    self.process(batch, stop)
                elif self._uncommitted:
                    self._commit({})
                if time.monotonic() >= self._lag_due:
                    self._refresh_lag()
        finally:
            self._pool.shutdown(wait=True)
            self._dead_letters.close()
            # Everything applied was committed batch by batch; closing must not commit a position past it.
            self._consumer.close(autocommit=False)

    def process(self, batch: dict[TopicPartition, list[Any]], stop: threading.Event | None = None) -> bool:
        """Apply one polled batch and commit it. Returns False if it was not committed (stopped, or rebalanced).

        While the batch is in flight the consumer keeps its group membership (see :meth:`_keepalive`), so a big
        state or a long retry does not get this applier evicted and its work redone forever.
        """
        try:
            return self._process(batch, stop)
        finally:
            paused = self._consumer.paused()
            if paused:
                self._consumer.resume(*paused)

    def _keepalive(self) -> None:
        """Heartbeat from the consumer's own thread without taking records: all partitions paused, poll(0).

        Brokers before 0.10.1 only see heartbeats from poll(), and newer ones evict a consumer that does not poll
        within max.poll.interval.ms. A rebalance may run inside this poll; records it still returns (from newly
        assigned partitions) are rewound so they are processed after this batch.
        """
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)
        try:
            returned = self._consumer.poll(timeout_ms=0)
        except KafkaError as exc:  # the broker is away: the writes go on, membership is retried next second
            log.debug("keepalive poll failed", extra={"kv": {"error": str(exc)}})
            return
        for tp, records in returned.items():
            if records:
                self._consumer.seek(tp, records[0].offset)

    def _wait(self, stop: threading.Event | None, seconds: float) -> bool:
        """Back off for ``seconds`` while keeping the group membership. True if asked to stop."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if stop is not None and stop.wait(min(1.0, left)):
                return True
            if stop is None:
                time.sleep(min(1.0, left))
            self._keepalive()
        return stop is not None and stop.is_set()

    def _process(self, batch: dict[TopicPartition, list[Any]], stop: threading.Event | None) -> bool:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                self._apply_and_flush(batch)
                break
            except ReplicatorError as exc:
                if not failures.is_retryable(exc):
                    raise
                attempt += 1
                retry_after = exc.retry_after if isinstance(exc, SinkError) else None
                delay = retry_after or random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
                log.warning("retrying batch", extra={"kv": {"attempt": attempt, "delay_s": round(delay, 3),
                                                            "error": str(exc)}})
                if self._wait(stop, delay):
                    return False
        offsets = {tp: OffsetAndMetadata(self._commit_offset(tp, records[-1].offset + 1), "", -1)
                   for tp, records in batch.items()}
        committed = self._commit(offsets)
        if committed:
            # Only now: a batch redelivered after a refused commit must not dead-letter its records twice.
            self._dead_lettered.clear()
        metrics.APPLY_BATCH_SECONDS.observe(time.monotonic() - started)
        return committed

    def _apply_and_flush(self, batch: dict[TopicPartition, list[Any]]) -> None:
        self._apply(batch)
        try:
            self._dead_letters.flush()  # a poison record must be safe in the DLQ before we commit past it
        except BrokerError:
            # Kafka may not have taken them: this batch's dead letters are sent again (the DLQ is at least once).
            self._dead_lettered.clear()
            raise

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        """Commit ``offsets`` with any carried over from failed commits. False if the broker refused or was away.

        Either way the batch's writes are in DynamoDB and idempotent, so a failed commit loses nothing: at worst
        the records are applied again.
        """
        merged = {**self._uncommitted, **offsets}
        try:
            self._consumer.commit(merged)
        except CommitFailedError as exc:
            # The group rebalanced while the batch was applied: whoever gets these partitions re-applies them.
            self._uncommitted.clear()
            self._cache.drop_partitions(tp.partition for tp in merged)
            log.warning("commit refused after a rebalance; the batch will be re-applied by the partitions' new owner",
                        extra={"kv": {"error": str(exc)}})
            return False
        except KafkaError as exc:
            # Broker or coordinator unreachable: keep the offsets and commit them with the next batch (or when idle).
            self._uncommitted = merged
            log.warning("commit failed; carried over to the next commit", extra={"kv": {"error": str(exc)}})
            return False
        self._uncommitted.clear()
        self._committed.update((tp, meta.offset) for tp, meta in merged.items())
        return True

    def _refresh_lag(self) -> None:
        """Set replicator_consumer_lag for every owned partition: log end offset - committed offset.

        Measured by the applier itself, so it stops moving when no applier runs: alert on it together with
        "events captured but none applied" (the chart's PrometheusRule does), or watch `replicator status`.
        """
        self._lag_due = time.monotonic() + self._lag_interval_s
        assigned = sorted(self._consumer.assignment())
        if not assigned:
            return
        try:
            end = self._consumer.end_offsets(assigned)
            unknown = [tp for tp in assigned if tp not in self._committed]
            for tp in unknown:
                committed = self._consumer.committed(tp)
                if committed is not None:
                    self._committed[tp] = committed
            never = [tp for tp in unknown if tp not in self._committed]
            start = self._consumer.beginning_offsets(never) if never else {}
        except KafkaError as exc:
            log.debug("lag refresh failed", extra={"kv": {"error": str(exc)}})
            return
        for tp in assigned:
            done = self._committed.get(tp, start.get(tp, 0))
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, end[tp] - done))

    def _commit_offset(self, tp: TopicPartition, next_offset: int) -> int:
        """The batch's next offset, held back at the first chunk of any state still incomplete in the partition."""
        held = [p.first_offset for (partition, _k, _v), p in self._partials.items() if partition == tp.partition]
        return min([next_offset, *held])

    def _forget_partitions(self, partitions: set[int]) -> None:
        self._cache.drop_partitions(partitions)
        for tp in [tp for tp in self._committed if tp.partition in partitions]:
            del self._committed[tp]
        for partition in partitions:
            with contextlib.suppress(KeyError):  # whoever owns the partition now reports its lag
                metrics.CONSUMER_LAG.remove(self.topic, str(partition))
        for tp in [tp for tp in self._uncommitted if tp.partition in partitions]:
            del self._uncommitted[tp]
        for slot in [s for s in self._partials if s[0] in partitions]:
            del self._partials[slot]

    def _assemble(self, record: Any, event: ChangeEvent) -> tuple[ChangeEvent, tuple[Any, ...]] | None:
        """Collect a chunk; the whole state once its last chunk is in, else None. Raises _ChunkError (naming every
        chunk's record) when the chunks do not make one state."""
        assert event.chunk is not None
        slot = (record.partition, event.key, event.version)
        partial = self._partials.setdefault(slot, _Partial(event.chunk.count, record.offset, {},
                                                           event.captured_at_us))
        partial.parts[event.chunk.index] = (record, event)  # a redelivered chunk replaces itself
        if len(partial.parts) < partial.count:
            return None
        del self._partials[slot]
        try:
            ordered = [partial.parts[i] for i in range(partial.count)]
            values = [e.value for _r, e in ordered]
            merged: Any = (b"".join(values) if isinstance(values[0], bytes)  # type: ignore[arg-type]
                           else tuple(v for part in values for v in part))  # type: ignore[union-attr]
        except Exception as exc:
            raise _ChunkError(tuple(r for r, _e in partial.parts.values())) from exc
        return replace(event, value=merged, chunk=None), tuple(r for r, _e in ordered[:-1])

    def _drop_abandoned_partials(self, read_after_us: dict[int, int]) -> None:
        """Chunks whose state was read long before an event already consumed from the same partition: the rest of
        them was never published (a listener died mid-state; its restart is a gap that heals the key). Kept, they
        would hold the partition's commits, and every gap reconcile waiting on them, forever."""
        window_us = int(self._config.abandon_chunks_after_s * 1_000_000)
        for slot, partial in list(self._partials.items()):
            newest = read_after_us.get(slot[0])
            if newest is not None and newest - partial.captured_at_us > window_us:
                del self._partials[slot]
                metrics.EVENTS_APPLIED.labels(table="", result="abandoned_chunks").inc()
                log.warning("dropped the chunks of a state whose other chunks never came", extra={"kv": {
                    "partition": slot[0], "key": slot[1], "version": slot[2], "chunks": len(partial.parts),
                    "of": partial.count, "first_offset": partial.first_offset}})

    def _drop_superseded_partials(self, partition: int, key: bytes, version: int) -> None:
        """Chunks of an older state that will never complete (a listener died mid-publish) must not hold commits."""
        for slot in [s for s in self._partials if s[0] == partition and s[1] == key and s[2] < version]:
            del self._partials[slot]

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
            except Exception as exc:
                self._failed(w, exc, "planning")
                continue
            writes.extend((w, iw) for iw in w.plan.writes)
        results = self._write_all(writes)
        self._settle_failures(results, "write")
        # Items another writer had already moved past (a zombie applier during a rebalance): DynamoDB is not what
        # the plan says for them, so the key's state is reloaded next time instead of cached.
        partly_stale = {id(item[0]) for item, result in results if result is False}
        heads = [w for w in work if w.rule.is_collection and w.plan is not None and not w.plan.stale
                 and w.poison is None]
        self._settle_failures(self._parallel(self._put_head, heads), "write")
        now = time.time()
        for w in work:
            partition = w.record.partition
            self._drop_superseded_partials(partition, w.event.key, w.event.version)
            if w.poison is not None or w.plan is None:
                if w.rule.is_collection:
                    self._cache.forget(partition, w.rule.name, w.event.key)
                continue
            table = w.rule.table
            if w.plan.stale:
                metrics.EVENTS_APPLIED.labels(table=table, result="stale").inc()
                continue
            if w.rule.is_collection and id(w) not in partly_stale:
                self._cache.put(partition, w.rule.name, w.event.key, w.plan.state)
            elif w.rule.is_collection:
                self._cache.forget(partition, w.rule.name, w.event.key)
            result = "tombstoned" if w.event.op is Op.DELETE else "applied"
            metrics.EVENTS_APPLIED.labels(table=table, result=result).inc()
            metrics.END_TO_END_LATENCY.observe(max(0.0, now - w.event.captured_at_us / 1e6))

    def _failed(self, w: _KeyWork, exc: BaseException, stage: str) -> None:
        """A step of one key's work failed: retry the batch if the cause is infrastructure, else the key is poison.

        :mod:`replicator.apply.failures` decides which; this is where every per-key step reports its failure.
        """
        if failures.is_retryable(exc):
            raise exc
        if w.poison is None:
            w.poison = failures.reason(exc, stage)
            self._dead_letter_work(w, w.poison, failures.describe(exc))

    def _settle_failures(self, results: list[Any], stage: str) -> None:
        for item, result in results:
            if isinstance(result, Exception):
                self._failed(item[0] if isinstance(item, tuple) else item, result, stage)

    def _newest_per_key(self, batch: dict[TopicPartition, list[Any]]) -> list[_KeyWork]:
        newest: dict[tuple[str, bytes], _KeyWork] = {}
        read_after_us: dict[int, int] = {}  # per partition, the latest read time of an event in this batch
        for records in batch.values():
            for record in records:
                try:
                    found = self._key_work(record)
                except _ChunkError as exc:
                    cause = exc.__cause__ or exc
                    for chunk_record in exc.records:
                        self._dead_letter(chunk_record, failures.reason(cause, "assembly"), failures.describe(cause))
                    continue
                except Exception as exc:
                    if failures.is_retryable(exc):
                        raise
                    self._dead_letter(record, failures.reason(exc, "decoding"), failures.describe(exc))
                    continue
                if found is None:
                    continue
                read_after_us[record.partition] = max(read_after_us.get(record.partition, 0),
                                                      found.event.captured_at_us)
                slot = (found.rule.name, found.event.key)
                current = newest.get(slot)
                if current is not None:
                    # Two states of one key in one batch: only the newer one needs writing.
                    metrics.EVENTS_APPLIED.labels(table=found.rule.table, result="superseded").inc()
                if current is None or found.event.version >= current.event.version:
                    newest[slot] = found
        if self._partials and read_after_us:
            self._drop_abandoned_partials(read_after_us)
        return list(newest.values())

    def _key_work(self, record: Any) -> _KeyWork | None:
        """Decode one record, assemble its chunks, match its rule; None while chunks are missing or no rule maps it."""
        event = self._codec.decode(record.value)
        chunk_records: tuple[Any, ...] = ()
        if event.chunk is not None:
            assembled = self._assemble(record, event)
            if assembled is None:
                return None
            event, chunk_records = assembled
        matched = self._rules.match(event.key)
        if matched is None:
            # No rule maps this key (rules changed since capture): nothing to write, nothing lost.
            log.warning("no rule maps key", extra={"kv": {
                "key": event.key, "position": f"{record.topic}[{record.partition}]@{record.offset}"}})
            return None
        rule, variables = matched
        return _KeyWork(record, event, rule, variables, chunk_records=chunk_records)

    def _load_states(self, work: list[_KeyWork]) -> None:
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
        for w, state in self._parallel(lambda w: self._writer.load_state(w.rule, w.event.key, w.variables), missing):
            if isinstance(state, Exception):
                self._failed(w, state, "state_load")
            else:
                w.previous = state

    def _write_all(self, writes: list[tuple[_KeyWork, ItemWrite]]) -> list[Any]:
        """Every planned write; per write its outcome (True applied, False stale, or the exception)."""
        if self._config.write_mode != "transaction":
            return self._parallel(lambda pair: self._writer.write(pair[1]), writes)
        # Values in parts go one by one: their parts are written first (see DynamoWriter.write).
        singles = [pair for pair in writes if pair[1].parts]
        writes = [pair for pair in writes if not pair[1].parts]
        results: list[Any] = self._parallel(lambda pair: self._writer.write(pair[1]), singles)
        # Writes of all keys share transactions (each still conditional): a round's items are distinct, so its
        # transactions run in parallel without conflicting; an item two keys write goes again in the next round.
        items = [iw for _w, iw in writes]
        for transactions in requests.transactions(items):
            for indexes, outcome in self._parallel(
                    lambda ix: self._writer.write_transaction([items[i] for i in ix]), transactions):
                if isinstance(outcome, Exception):
                    results.extend((writes[i], outcome) for i in indexes)
                else:
                    results.extend((writes[i], o) for i, o in zip(indexes, outcome, strict=True))
        return results

    def _dead_letter_work(self, w: _KeyWork, reason: str, error: str) -> None:
        for record in (*w.chunk_records, w.record):
            self._dead_letter(record, reason, error)

    def _dead_letter(self, record: Any, reason: str, error: str) -> None:
        if (record.partition, record.offset) not in self._dead_lettered:
            self._dead_lettered.add((record.partition, record.offset))
            self._dead_letters.send(record, reason, error)

    def _put_head(self, w: _KeyWork) -> None:
        self._writer.put_head(w.rule, w.event.key, w.event.version, deleted=w.event.op is Op.DELETE)

    def _parallel(self, fn: Callable[[T], R], items: list[T]) -> list[Any]:
        """Run ``fn`` over ``items`` on the pool; results (or the exceptions raised) in input order, with inputs."""
        if not items:
            return []
        futures = [self._pool.submit(fn, item) for item in items]
        while wait(futures, timeout=KEEPALIVE_S).not_done:
            self._keepalive()
        out = []
        for item, future in zip(items, futures, strict=True):
            try:
                out.append((item, future.result()))
            except Exception as exc:
                out.append((item, exc))
        return out
