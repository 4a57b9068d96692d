"""What becomes of each key of a batch, step by step: dead letters, the state cache, the chunks held back for it,
and the applied-events metrics. The applier's commit sequence reports to it after every step; it decides nothing
about order or retries."""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterable

from replicator import metrics
from replicator.adapters.kafka.dead_letters import DeadLetters
from replicator.apply.assembler import BatchAssembler, DeadLetter, KeyWork
from replicator.apply.offsets import OffsetTracker
from replicator.apply.sink import Result, WriteResult
from replicator.core import failures
from replicator.core.cutover import Plan as CutoverPlan
from replicator.core.events import Op
from replicator.core.mapping import KeyState


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


class KeyOutcomes:
    def __init__(self, assembler: BatchAssembler, cache: StateCache, offsets: OffsetTracker,
                 dead_letters: DeadLetters, topic: str) -> None:
        self._assembler = assembler
        self.cache = cache
        self._offsets = offsets
        self._dead_letters = dead_letters
        self._topic = topic

    def cached(self, w: KeyWork) -> KeyState | None:
        return self.cache.get(w.record.partition, w.rule.name, w.event.key)

    def dead_letter(self, dead: DeadLetter) -> None:
        """Send a dead letter, once per record however often its batch is retried."""
        if self._offsets.first_dead_letter(dead.record.partition, dead.record.offset):
            self._dead_letters.send(dead.record, dead.reason, dead.error)

    def failed(self, w: KeyWork, exc: BaseException, stage: str) -> None:
        """A step of one key's work failed: retry the batch if the cause is infrastructure, else the key is poison.

        :mod:`replicator.core.failures` decides which; this is where every per-key step reports its failure.
        """
        if failures.is_retryable(exc):
            raise exc
        if w.poison is None:
            w.poison = failures.reason(exc, stage)
            for record in w.records:
                self.dead_letter(DeadLetter(record, w.poison, failures.describe(exc)))

    def written(self, w: KeyWork, result: WriteResult) -> None:
        """One of the key's item writes came back."""
        if result.status is Result.POISON:
            assert result.error is not None
            self.failed(w, result.error, "write")
        elif result.status is Result.STALE:
            w.refused = True
        else:
            w.landed = True

    def head_written(self, w: KeyWork, result: WriteResult) -> None:
        """The key's head came back (APPLIED also when a newer head was there: only poison matters)."""
        if result.status is Result.POISON:
            assert result.error is not None
            self.failed(w, result.error, "write")

    def fence(self, work: list[KeyWork], plan: CutoverPlan | None) -> list[KeyWork]:
        """The keys to apply: the events of owners switched to DynamoDB are skipped. The application writes their
        data there now, and Redis (a warm copy, or written by someone who never switched) must not touch it. Native
        versions refuse such writes anyway; the fence also keeps items the application has not written since."""
        if plan is None or plan.dynamodb == 0:
            return work
        kept = []
        for w in work:
            if w.poison is None and plan.stage(w.event.owner).switched:
                self._assembler.release(w.record.partition, w.event.key, w.event.version)
                self._forget(w)
                metrics.EVENTS_APPLIED.labels(table=w.rule.table, result="switched").inc()
            else:
                kept.append(w)
        return kept

    def done(self, work: list[KeyWork]) -> None:
        """The batch's writes are over: release chunks held for its keys, cache what DynamoDB now holds, count."""
        now = time.time()
        for w in work:
            partition = w.record.partition
            self._assembler.release(partition, w.event.key, w.event.version)
            if w.poison is not None or w.plan is None:
                self._forget(w)
                continue
            # Stale: older than the key's head, or every item write refused (DynamoDB holds newer versions of all
            # of it, e.g. what the application wrote there after cutover).
            if w.plan.stale or (w.refused and not w.landed):
                metrics.EVENTS_APPLIED.labels(table=w.rule.table, result="stale").inc()
                self._forget(w)
                continue
            # Items another writer had already moved past (a zombie applier during a rebalance): DynamoDB is not
            # what the plan says for them, so the key's state is reloaded next time instead of cached.
            if w.rule.is_collection and not w.refused:
                self.cache.put(partition, w.rule.name, w.event.key, w.plan.state)
            else:
                self._forget(w)
            metrics.EVENTS_APPLIED.labels(table=w.rule.table,
                                          result="tombstoned" if w.event.op is Op.DELETE else "applied").inc()
            metrics.END_TO_END_LATENCY.observe(max(0.0, now - w.event.captured_at_us / 1e6))

    def forget_partitions(self, partitions: set[int]) -> None:
        """Partitions revoked: another applier may write these owners from now on, so cached states could go
        stale, and chunks held back will be redelivered to it from the committed offset."""
        self.cache.drop_partitions(partitions)
        self._offsets.forget(partitions)
        self._assembler.forget(partitions)
        for partition in partitions:
            with contextlib.suppress(KeyError):  # whoever owns the partition now reports its lag
                metrics.CONSUMER_LAG.remove(self._topic, str(partition))

    def _forget(self, w: KeyWork) -> None:
        if w.rule.is_collection:
            self.cache.forget(w.record.partition, w.rule.name, w.event.key)
