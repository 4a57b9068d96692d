"""The applier: one member of the consumer group, turning polled batches into DynamoDB writes.

Per batch, one commit sequence (:meth:`Applier.process`), each step a collaborator:

1. poll (:class:`~replicator.adapters.kafka.consumer.GroupConsumer`);
2. assemble (:mod:`~replicator.apply.assembler`, pure): decode, put chunks together, keep the newest state per Redis
   key (states, not operations: older ones in the same batch are superseded); skip switched owners (the fence);
3. load states: the applied state of collection keys (cached, else read from DynamoDB);
4. plan (:func:`replicator.core.mapping.plan_writes`, pure): conditional item writes and the key's new head;
5. write items, then 6. write heads (:mod:`~replicator.apply.sink`: a typed result per write);
7. dead letters flushed: every poison record is safe in Kafka;
8. commit (:mod:`~replicator.apply.offsets`).

What becomes of each key after each step (dead letters, the state cache, metrics) is
:class:`~replicator.apply.outcomes.KeyOutcomes`' business.

Offsets are committed only after DynamoDB acknowledged every write and the dead-letter topic every poison record
before them. A retryable failure retries the same batch with backoff and commits nothing meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from replicator import metrics, retry
from replicator.adapters.dynamodb.store import DynamoWriter
from replicator.adapters.kafka.consumer import GroupConsumer
from replicator.adapters.kafka.dead_letters import DeadLetters
from replicator.apply.assembler import BatchAssembler, KeyWork
from replicator.apply.offsets import Commit, OffsetTracker
from replicator.apply.outcomes import KeyOutcomes, StateCache
from replicator.apply.sink import DynamoSink
from replicator.core.avro import EventCodec
from replicator.core.config import ApplyConfig
from replicator.core.cutover import Plan as CutoverPlan
from replicator.core.errors import BrokerError
from replicator.core.events import Origin
from replicator.core.mapping import RuleSet, plan_writes

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

#: How often the consumer heartbeats (pause + poll(0)) while a batch is being written.
KEEPALIVE_S = 1.0

__all__ = ["KEEPALIVE_S", "Applier", "StateCache"]


class Applier:
    """One member of the applier group: the commit sequence of the module docstring, batch after batch. Its
    collaborators are the consumer, the DynamoDB writer and the dead-letter producer handed in, and the pure or
    in-memory ones it makes from the config (assembler, offset tracker, state cache, sink, key outcomes)."""

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
        self._keys = KeyOutcomes(self._assembler, self._cache, self._offsets, dead_letters, self.topic)
        self._pool = _Pool(config.write_concurrency, consumer.keepalive)
        self._sink = DynamoSink(writer, config.write_mode, self._pool, known_items=config.cache_keys)
        #: Set while this applier owns at least one partition (what /readyz reports).
        self.assigned = threading.Event()
        self._lag_interval_s = lag_interval_s
        self._lag_due = 0.0

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set. The batch in flight is finished and committed before returning."""
        self._consumer.join(self._keys.forget_partitions, stop)
        log.info("applying", extra={"kv": {"topic": self.topic}})
        try:
            polls = retry.Backoff(retry.KAFKA_POLL, stop)
            while not stop.is_set():
                try:
                    batch = self._consumer.poll(self._config.poll_timeout_ms, self._config.max_batch)  # 1. poll
                except BrokerError as exc:
                    polls.wait(exc)
                    continue
                polls.reset()
                (self.assigned.set if self._consumer.assigned() else self.assigned.clear)()
                if batch:
                    self.process(batch, stop)
                elif self._offsets.carried:
                    self._offsets.commit(self._consumer.commit, {})
                if time.monotonic() >= self._lag_due:  # measured by the applier: see GroupConsumer.report_lag
                    self._lag_due = time.monotonic() + self._lag_interval_s
                    self._consumer.report_lag(self._offsets.committed)
        finally:
            self._pool.shutdown()
            self._dead_letters.close()
            self._consumer.close()

    def process(self, batch: dict[Any, list[Any]], stop: threading.Event | None = None) -> bool:
        """Apply one polled batch and commit it. Returns False if it was not committed (stopped, or rebalanced).

        While the batch is in flight the consumer keeps its group membership (see
        :meth:`GroupConsumer.keepalive`), so a big state or a long retry does not get this applier evicted and its
        work redone forever. Infrastructure failures retry the whole batch (every write is idempotent).
        """
        started = time.monotonic()
        try:
            retry.call(lambda: self._apply(batch), retry.APPLY_BATCH, stop=stop,
                       sleep=lambda seconds: self._pool.wait(stop, seconds))
        except retry.Stopped:
            return False
        finally:
            self._consumer.resume()
        commit = self._offsets.commit(self._consumer.commit,  # 8. commit
                                      self._offsets.next_offsets(batch, self._assembler.held_offset))
        if commit is Commit.REFUSED:
            self._cache.drop_partitions(tp.partition for tp in batch)
        metrics.APPLY_BATCH_SECONDS.observe(time.monotonic() - started)
        return commit is Commit.DONE

    def _apply(self, batch: dict[Any, list[Any]]) -> None:
        """Steps 2-7 of the commit sequence, for one try of the batch."""
        assembly = self._assembler.assemble(batch)  # 2. assemble
        for dead in assembly.dead:
            self._keys.dead_letter(dead)
        work = self._keys.fence(assembly.work, self._plan() if self._plan is not None else None)
        self._load_states(work)  # 3. load states
        for w in work:  # 4. plan
            self._plan_key(w)
        writes = [(w, write) for w in work if w.plan is not None and w.poison is None for write in w.plan.writes]
        for (w, _write), result in zip(writes, self._sink.write([iw for _w, iw in writes]), strict=True):
            self._keys.written(w, result)  # 5. write items
        heads = [(w, w.plan.head) for w in work if w.plan is not None and w.plan.head is not None and w.poison is None]
        for (w, _head), result in zip(heads, self._sink.put_heads([head for _w, head in heads]), strict=True):
            self._keys.head_written(w, result)  # 6. write heads
        self._keys.done(work)
        try:
            self._dead_letters.flush()  # 7. a poison record must be safe in the DLQ before we commit past it
        except BrokerError:
            self._offsets.dead_letters_unsure()
            raise

    def _load_states(self, work: list[KeyWork]) -> None:
        """The applied state of each collection key: cached, unless a repair (DynamoDB may differ from what this
        applier believes it wrote), else read."""
        missing = []
        for w in work:
            if not w.rule.is_collection:
                continue
            cached = None if w.event.origin is Origin.REPAIR else self._keys.cached(w)
            if cached is None:
                missing.append(w)
            else:
                w.previous = cached
        states = self._sink.load_states([(w.rule, w.event.key, w.variables) for w in missing])
        for w, state in zip(missing, states, strict=True):
            if isinstance(state, Exception):
                self._keys.failed(w, state, "state_load")
            else:
                w.previous = state

    def _plan_key(self, w: KeyWork) -> None:
        if w.poison is not None:
            return
        try:
            w.plan = plan_writes(w.rule, w.variables, w.event, w.previous)
        except Exception as exc:
            self._keys.failed(w, exc, "planning")

    def _forget_partitions(self, partitions: set[int]) -> None:
        self._keys.forget_partitions(partitions)


class _Pool:
    """Runs writes concurrently, and backs off between tries, while the consumer keeps its group membership: the
    applier's thread heartbeats (``keepalive``) every second meanwhile."""

    def __init__(self, workers: int, keepalive: Callable[[], None]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apply")
        self._keepalive = keepalive

    def __call__(self, fn: Callable[[T], R], items: list[T]) -> list[Any]:
        """Run ``fn`` over ``items``; results (or the exceptions raised) in input order, with inputs."""
        if not items:
            return []
        futures = [self._executor.submit(fn, item) for item in items]
        while wait(futures, timeout=KEEPALIVE_S).not_done:
            self._keepalive()
        out = []
        for item, future in zip(items, futures, strict=True):
            try:
                out.append((item, future.result()))
            except Exception as exc:
                out.append((item, exc))
        return out

    def wait(self, stop: threading.Event | None, seconds: float) -> bool:
        """Back off for ``seconds``. True if asked to stop."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if stop is not None and stop.wait(min(1.0, left)):
                return True
            if stop is None:
                time.sleep(min(1.0, left))
            self._keepalive()
        return stop is not None and stop.is_set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
