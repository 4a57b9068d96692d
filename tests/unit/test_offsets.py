"""The offset tracker's commit rule in memory: past applied records only, held at incomplete chunks, carried over
when the broker is away, dropped after a rebalance, and dead letters sent once per batch."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from replicator.adapters.kafka.consumer import CommitRefused
from replicator.apply.offsets import Commit, OffsetTracker
from replicator.core.errors import BrokerError

Record = namedtuple("Record", "partition offset")
TopicPartition = namedtuple("TopicPartition", "topic partition")  # what the consumer adapter hands over
P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


class Broker:
    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}
        self.fail: list[Exception] = []

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.committed.update(offsets)


def _batch(partition: TopicPartition, first: int, count: int) -> dict[TopicPartition, list[Record]]:
    return {partition: [Record(partition.partition, first + i) for i in range(count)]}


def test_commits_past_the_last_record_unless_an_incomplete_state_holds_the_partition():
    tracker = OffsetTracker()
    batch = {**_batch(P0, 10, 5), **_batch(P1, 0, 3)}
    offsets = tracker.next_offsets(batch, held=lambda partition: 12 if partition == 0 else None)
    assert offsets == {P0: 12, P1: 3}


def test_an_unreachable_broker_carries_the_offsets_into_the_next_commit():
    tracker, broker = OffsetTracker(), Broker()
    broker.fail = [BrokerError("away", retryable=True)]
    assert tracker.commit(broker.commit, {P0: 5}) is Commit.CARRIED
    assert tracker.carried and broker.committed == {}
    assert tracker.commit(broker.commit, {P1: 7}) is Commit.DONE
    assert broker.committed == {P0: 5, P1: 7} and not tracker.carried
    assert tracker.committed == {P0: 5, P1: 7}


def test_a_commit_refused_after_a_rebalance_is_dropped_not_carried():
    tracker, broker = OffsetTracker(), Broker()
    broker.fail = [BrokerError("away", retryable=True), CommitRefused("rebalanced")]
    tracker.commit(broker.commit, {P0: 5})
    assert tracker.commit(broker.commit, {P1: 7}) is Commit.REFUSED
    assert not tracker.carried and tracker.committed == {}


def test_a_record_is_dead_lettered_once_per_batch_even_across_retries_and_again_after_an_unsure_flush():
    tracker, broker = OffsetTracker(), Broker()
    assert tracker.first_dead_letter(0, 3)
    assert not tracker.first_dead_letter(0, 3)  # the batch was retried
    tracker.dead_letters_unsure()  # the dead-letter flush failed: Kafka may not have it
    assert tracker.first_dead_letter(0, 3)
    broker.fail = [CommitRefused("rebalanced")]
    tracker.commit(broker.commit, {P0: 4})
    assert not tracker.first_dead_letter(0, 3)  # redelivered after a refused commit: not sent twice
    tracker.commit(broker.commit, {P0: 4})
    assert tracker.first_dead_letter(0, 3)  # a new batch


def test_revoked_partitions_are_forgotten():
    tracker, broker = OffsetTracker(), Broker()
    tracker.commit(broker.commit, {P0: 5, P1: 6})
    tracker.forget({1})
    assert tracker.committed == {P0: 5}
