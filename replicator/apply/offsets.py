"""The offset tracker: owns the rule for what an applier may commit.

- Only past records whose data DynamoDB has (or whose dead letters Kafka has): the applier calls :meth:`next_offsets`
  after the writes and the dead-letter flush, never before.
- Never past the first chunk of a state still incomplete (its other chunks may come in a later batch).
- A commit the broker could not take (unreachable) is carried into the next one; a commit refused after a
  rebalance is dropped (the partitions' new owner re-applies from the last committed offset; writes are idempotent).
- A record is dead-lettered once per batch, even when the batch is retried; after a dead-letter flush that failed,
  the batch's dead letters are sent again (the dead-letter topic is at least once).

It calls Kafka only through the commit function it is given, so every case is testable in memory.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol

from replicator.adapters.kafka.consumer import CommitRefused
from replicator.core.errors import BrokerError

log = logging.getLogger(__name__)


class Commit(enum.Enum):
    DONE = "done"
    #: The broker was away: the offsets go with the next commit.
    CARRIED = "carried"
    #: The group rebalanced meanwhile: the partitions' new owner re-applies from the last committed offsets.
    REFUSED = "refused"


class TopicPartition(Hashable, Protocol):
    """A partition as the consumer names it (kafka-python's TopicPartition is one)."""

    @property
    def partition(self) -> int: ...


class OffsetTracker:
    def __init__(self) -> None:
        #: Offsets this applier committed, per partition it owns: the "committed" side of the lag.
        self.committed: dict[TopicPartition, int] = {}
        #: Offsets of applied batches whose commit failed (broker unreachable): carried into the next commit.
        self._carried: dict[TopicPartition, int] = {}
        #: Records of the batch in flight already dead-lettered: a retried batch must not send them twice.
        self._dead_lettered: set[tuple[int, int]] = set()

    @property
    def carried(self) -> bool:
        """Offsets wait for a commit (call :meth:`commit` with nothing new when idle)."""
        return bool(self._carried)

    def next_offsets(self, batch: Mapping[TopicPartition, list[Any]],
                     held: Callable[[int], int | None]) -> dict[TopicPartition, int]:
        """Per partition of an applied batch, the offset to commit: past its last record, but not past ``held``
        (the first offset of an incomplete chunked state in the partition)."""
        offsets = {}
        for tp, records in batch.items():
            next_offset = records[-1].offset + 1
            first_held = held(tp.partition)
            offsets[tp] = next_offset if first_held is None else min(next_offset, first_held)
        return offsets

    def commit(self, commit: Callable[[dict[TopicPartition, int]], None],
               offsets: Mapping[TopicPartition, int]) -> Commit:
        """Commit ``offsets`` with any carried over, through ``commit`` (:meth:`GroupConsumer.commit`)."""
        merged = {**self._carried, **offsets}
        try:
            commit(merged)
        except CommitRefused as exc:
            # The group rebalanced while the batch was applied: whoever gets these partitions re-applies them.
            self._carried.clear()
            log.warning("commit refused after a rebalance; the batch will be re-applied by the partitions' new owner",
                        extra={"kv": {"error": str(exc)}})
            return Commit.REFUSED
        except BrokerError as exc:
            # Broker or coordinator unreachable: keep the offsets and commit them with the next batch (or when idle).
            self._carried = merged
            log.warning("commit failed; carried over to the next commit", extra={"kv": {"error": str(exc)}})
            return Commit.CARRIED
        self._carried.clear()
        self.committed.update(merged)
        # Only now: a batch redelivered after a refused commit must not dead-letter its records twice.
        self._dead_lettered.clear()
        return Commit.DONE

    def first_dead_letter(self, partition: int, offset: int) -> bool:
        """True the first time a record is dead-lettered in the batch in flight (send it), False after."""
        if (partition, offset) in self._dead_lettered:
            return False
        self._dead_lettered.add((partition, offset))
        return True

    def dead_letters_unsure(self) -> None:
        """The dead-letter flush failed: Kafka may not have the batch's dead letters, send them again."""
        self._dead_lettered.clear()

    def forget(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for tp in [tp for tp in self.committed if tp.partition in gone]:
            del self.committed[tp]
        for tp in [tp for tp in self._carried if tp.partition in gone]:
            del self._carried[tp]
