"""The applier's membership of its consumer group: polls, the keepalive, rebalances, commits and lag.

Everything kafka-python-specific the applier needs is here, translated: a failed poll or commit is a
:class:`BrokerError`, a commit the group refused after a rebalance is :class:`CommitRefused`, partitions are the
client's ``TopicPartition`` (a named tuple ``(topic, partition)``), records its ``ConsumerRecord``. The applier
keeps only the order of its steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from replicator import metrics
from replicator.adapters.kafka.offsets import committed as group_committed
from replicator.core.errors import BrokerError

log = logging.getLogger(__name__)

#: How long joining waits for the topic's partitions to be in the client's metadata.
_METADATA_WAIT_S = 30.0


class CommitRefused(BrokerError):
    """The group rebalanced while the batch was applied: the partitions' new owner re-applies from the last commit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, on_revoked: Callable[[set[int]], None]) -> None:
        self._on_revoked = on_revoked

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._on_revoked({tp.partition for tp in revoked})
        log.info("partitions revoked", extra={"kv": {"partitions": sorted(tp.partition for tp in revoked)}})

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned", extra={"kv": {"partitions": sorted(tp.partition for tp in assigned)}})


class GroupConsumer:
    """One member of the applier group on one topic. Not thread-safe (kafka-python's consumer is not): every call
    comes from the applier's own thread."""

    def __init__(self, consumer: KafkaConsumer, topic: str) -> None:
        self._consumer = consumer
        self.topic = topic

    def join(self, on_revoked: Callable[[set[int]], None], stop: threading.Event) -> None:
        """Subscribe; ``on_revoked`` gets the partitions another member may own from now on (called inside a poll).

        The group is joined in the first poll: the topic's partitions are in the client's metadata by then, since
        a leader that joins without them assigns nothing ("no partition metadata") and must rebalance again.
        """
        self._consumer.subscribe([self.topic], listener=_Rebalance(on_revoked))
        deadline = time.monotonic() + _METADATA_WAIT_S
        while not self._consumer.partitions_for_topic(self.topic) and time.monotonic() < deadline:
            stop.wait(0.2)

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        """The next records per partition (empty when none came). Retryable BrokerError when Kafka is away."""
        try:
            return dict(self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records))
        except KafkaError as exc:
            raise BrokerError(f"polling {self.topic!r} failed: {exc}", retryable=True) from None

    def assigned(self) -> bool:
        """This member owns at least one partition."""
        return bool(self._consumer.assignment())

    def keepalive(self) -> None:
        """Heartbeat from the consumer's own thread without taking records: all partitions paused, poll(0).

        A broker evicts a member that does not poll within max.poll.interval.ms, however long the writes of its
        batch take (throttling backoff); pausing keeps the records for later. A rebalance may run inside this poll;
        records it still returns (from newly assigned partitions) are rewound so they are processed after the batch
        in flight. Call :meth:`resume` once the batch is done.
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

    def resume(self) -> None:
        """Undo :meth:`keepalive`'s pause."""
        paused = self._consumer.paused()
        if paused:
            self._consumer.resume(*paused)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the next offset to read per partition. :class:`CommitRefused` after a rebalance, a retryable
        BrokerError while the coordinator is away."""
        try:
            self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
        except CommitFailedError as exc:
            raise CommitRefused(f"commit refused after a rebalance: {exc}") from None
        except KafkaError as exc:
            raise BrokerError(f"commit failed: {exc}", retryable=True) from None

    def lag(self, committed: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Per owned partition, log end offset - committed offset: this member's own commits (``committed``), else
        the group's, else the log start. Empty when nothing is owned; retryable BrokerError when Kafka is away."""
        assigned = sorted(self._consumer.assignment())
        if not assigned:
            return {}
        try:
            end = self._consumer.end_offsets(assigned)
            known = {tp: committed[tp] for tp in assigned if tp in committed}
            group = group_committed(self._consumer, [tp for tp in assigned if tp not in known])
            known.update({tp: offset for tp, offset in group.items() if offset is not None})
            never = [tp for tp in assigned if tp not in known]
            start = self._consumer.beginning_offsets(never) if never else {}
        except KafkaError as exc:
            raise BrokerError(f"reading the lag of {self.topic!r} failed: {exc}", retryable=True) from None
        return {tp: max(0, end[tp] - known.get(tp, start.get(tp, 0))) for tp in assigned}

    def report_lag(self, committed: Mapping[TopicPartition, int]) -> None:
        """Set replicator_consumer_lag for every owned partition (see :meth:`lag`); a Kafka that does not answer
        leaves it as it was.

        Measured by the applier itself, so it stops moving when no applier runs: alert on it together with
        "events captured but none applied" (the chart's PrometheusRule does), or watch `replicator status`.
        """
        try:
            lags = self.lag(committed)
        except BrokerError as exc:
            log.debug("lag refresh failed", extra={"kv": {"error": str(exc)}})
            return
        for tp, lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)

    def close(self) -> None:
        """Leave the group. Everything applied was committed batch by batch: closing commits nothing past it."""
        self._consumer.close(autocommit=False)
