"""A topic's offsets and one consumer group's committed offsets on it, read (and moved) without joining the group.

The one way the replicator reads group offsets: the gap reconcile, verify, the cutover and shadow reads wait on
them (:class:`replicator.core.watermark.GroupProgress`), ``status`` reports them, ``replay`` and the dead-letter
redrive move them, and the applier's lag reads its group's commits through :func:`committed`. Partitions are
numbers; every Kafka failure is a retryable :class:`BrokerError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from replicator.adapters.kafka.settings import kafka_python
from replicator.core.config import KafkaConfig
from replicator.core.errors import BrokerError

T = TypeVar("T")


def committed(consumer: KafkaConsumer, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
    """The committed offset of the consumer's group per partition (None: never committed)."""
    return {tp: consumer.committed(tp) for tp in partitions}


class GroupOffsets:
    """One connection, kept open; kafka-python's consumer is not thread-safe, so calls are serialised."""

    def __init__(self, config: KafkaConfig, topic: str, group: str | None) -> None:
        self.topic, self.group = topic, group
        try:
            # Reading offsets must never create the topic it asks about (a DLQ no poison record has made yet).
            self._consumer = KafkaConsumer(**kafka_python(config), group_id=group, enable_auto_commit=False,
                                           allow_auto_create_topics=False)
        except KafkaError as exc:
            raise BrokerError(f"cannot reach Kafka to read group {group!r}'s offsets: {exc}", retryable=True) from None
        self._lock = threading.Lock()

    def __enter__(self) -> GroupOffsets:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def partitions(self) -> list[int]:
        """The topic's partitions; a retryable BrokerError while it does not exist."""
        return [tp.partition for tp in self._call("read the partitions of", self._partitions)]

    def end(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Per partition, the offset the next record will get."""
        return self._per_partition("read the end offsets of", partitions, self._consumer.end_offsets)

    def earliest(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Per partition, the offset of the oldest record retention kept."""
        return self._per_partition("read the earliest offsets of", partitions, self._consumer.beginning_offsets)

    def committed(self, partitions: Iterable[int] | None = None) -> dict[int, int | None]:
        """Per partition, the group's committed offset (None: never committed)."""
        return self._per_partition(f"read group {self.group!r}'s offsets on", partitions,
                                   lambda tps: committed(self._consumer, tps))

    def at_time(self, epoch_ms: int, partitions: Iterable[int] | None = None) -> dict[int, int | None]:
        """Per partition, the first offset whose record is at or after ``epoch_ms`` (None: no such record)."""
        found = self._per_partition("look up offsets by time in", partitions,
                                    lambda tps: self._consumer.offsets_for_times({tp: epoch_ms for tp in tps}))
        return {p: None if hit is None else hit.offset for p, hit in found.items()}

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit the group's offsets (the next record to read per partition). The group must have no members."""
        def run() -> None:
            tps = {p: TopicPartition(self.topic, p) for p in offsets}
            self._consumer.assign(list(tps.values()))
            self._consumer.commit({tps[p]: OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})

        self._call(f"commit group {self.group!r}'s offsets on", run)

    def values_at(self, wanted: Iterable[tuple[int, int]], timeout: float = 10.0) -> dict[tuple[int, int], bytes]:
        """The value of the record at each (partition, offset) found within ``timeout`` per record."""
        def run() -> dict[tuple[int, int], bytes]:
            found: dict[tuple[int, int], bytes] = {}
            by_partition: dict[int, list[int]] = {}
            for partition, offset in wanted:
                by_partition.setdefault(partition, []).append(offset)
            for partition, offsets in by_partition.items():  # one partition at a time: a seek per record
                tp = TopicPartition(self.topic, partition)
                self._consumer.assign([tp])
                for offset in sorted(offsets):
                    self._consumer.seek(tp, offset)
                    deadline = time.monotonic() + timeout
                    while (partition, offset) not in found and time.monotonic() < deadline:
                        for record in self._consumer.poll(timeout_ms=200).get(tp, []):
                            if record.offset == offset:
                                found[(partition, offset)] = record.value
                                break
            return found

        return self._call("read records of", run)

    def read_to_end(self, timeout: float = 60.0) -> tuple[list[Any], dict[int, int]]:
        """Every record from the group's committed offsets (or the beginning, without a group) to the current end.

        Returns the records and the end offsets, which the caller may :meth:`commit` once it has handled them.
        """
        def run() -> tuple[list[Any], dict[int, int]]:
            partitions = self._partitions(retryable=False)
            self._consumer.assign(partitions)
            start = committed(self._consumer, partitions) if self.group else {}
            for tp in partitions:
                offset = start.get(tp)
                if offset is None:
                    self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, offset)
            end = self._consumer.end_offsets(partitions)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while any(self._consumer.position(tp) < end[tp] for tp in partitions):
                for batch in self._consumer.poll(timeout_ms=500).values():
                    records.extend(r for r in batch if r.offset < end[TopicPartition(r.topic, r.partition)])
                if time.monotonic() > deadline:
                    raise BrokerError(f"could not read topic {self.topic!r} to its end within {timeout:.0f}s")
            return records, {tp.partition: offset for tp, offset in end.items()}

        return self._call("read", run)

    def close(self) -> None:
        with self._lock:
            self._consumer.close(autocommit=False)

    def _partitions(self, retryable: bool = True) -> list[TopicPartition]:
        found = self._consumer.partitions_for_topic(self.topic)
        if not found:
            raise BrokerError(f"topic {self.topic!r} does not exist" + (" (yet)" if retryable else ""),
                              retryable=retryable)
        return [TopicPartition(self.topic, p) for p in sorted(found)]

    def _per_partition(self, what: str, partitions: Iterable[int] | None,
                       read: Callable[[list[TopicPartition]], Mapping[TopicPartition, T]]) -> dict[int, T]:
        def run() -> dict[int, T]:
            tps = self._partitions() if partitions is None else [TopicPartition(self.topic, p) for p in partitions]
            return {tp.partition: value for tp, value in read(tps).items()}

        return self._call(what, run)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with self._lock:
            try:
                return fn()
            except KafkaError as exc:
                raise BrokerError(f"cannot {what} {self.topic!r}: {exc}", retryable=True) from None
