"""The consumer adapter's translations in memory: what kafka-python raises becomes the errors the applier and the
offset tracker act on, and commits carry offsets the way the client wants them."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaConnectionError

from replicator.adapters.kafka.consumer import CommitRefused, GroupConsumer
from replicator.core.errors import BrokerError

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


class Client:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.commits: list[dict[TopicPartition, Any]] = []

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.fail is not None:
            raise self.fail
        self.commits.append(offsets)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        if self.fail is not None:
            raise self.fail
        return {}

    def assignment(self) -> set[TopicPartition]:
        return {P0, P1}

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {P0: 50, P1: 9}

    def committed(self, tp: TopicPartition) -> int | None:
        return {P0: 20}.get(tp)

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 4 for tp in tps}


def test_commits_go_as_offset_and_metadata_and_failures_are_translated():
    client = Client()
    GroupConsumer(client, "t").commit({P0: 5})  # type: ignore[arg-type]
    assert {tp: meta.offset for tp, meta in client.commits[0].items()} == {P0: 5}
    with pytest.raises(CommitRefused):
        GroupConsumer(Client(CommitFailedError("rebalanced")), "t").commit({P0: 5})  # type: ignore[arg-type]
    with pytest.raises(BrokerError) as away:
        GroupConsumer(Client(KafkaConnectionError("away")), "t").commit({P0: 5})  # type: ignore[arg-type]
    assert away.value.retryable and not isinstance(away.value, CommitRefused)


def test_a_failed_poll_is_a_retryable_broker_error():
    with pytest.raises(BrokerError) as away:
        GroupConsumer(Client(KafkaConnectionError("no broker")), "t").poll(100, 10)  # type: ignore[arg-type]
    assert away.value.retryable


def test_lag_counts_from_this_members_commits_then_the_groups_then_the_log_start():
    consumer = GroupConsumer(Client(), "t")  # type: ignore[arg-type]
    assert consumer.lag({}) == {P0: 30, P1: 5}
    assert consumer.lag({P0: 45, P1: 9}) == {P0: 5, P1: 0}
