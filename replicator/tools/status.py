"""``replicator status``: one screen on how far the applier group is.

It works when no applier runs (that is when it is needed most): lag per partition from the group's committed
offsets, the capture time of the newest event and of the last applied one, the group's members, the DLQ size; and,
from the state table, the gap reconciles that wait for the group to commit past their watermark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from replicator.adapters.kafka.broker import client_kwargs, existing_topic_partitions, topic_partitions
from replicator.adapters.kafka.dead_letters import dlq_topic
from replicator.core.avro import EventCodec
from replicator.core.config import KafkaConfig
from replicator.core.errors import ReplicatorError
from replicator.core.watermark import Watermark


@dataclass(frozen=True)
class PartitionStatus:
    partition: int
    committed: int | None
    earliest: int
    end: int
    #: Capture time (epoch µs) of the newest event in the partition and of the last one the group applied.
    newest_event_us: int | None
    applied_event_us: int | None

    @property
    def lag(self) -> int:
        return self.end - (self.earliest if self.committed is None else self.committed)


@dataclass(frozen=True)
class GroupStatus:
    group: str
    topic: str
    state: str
    members: int
    partitions: list[PartitionStatus]
    dead_letters: int

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


def group_status(config: KafkaConfig, group: str, topic: str,
                 codec: EventCodec | None = None) -> GroupStatus:
    codec = codec or EventCodec()
    state, members = _describe(config, group)
    consumer = KafkaConsumer(**client_kwargs(config), group_id=group, enable_auto_commit=False)
    try:
        tps = topic_partitions(config, topic)
        earliest = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        committed = {tp: consumer.committed(tp) for tp in tps}
        wanted = {(tp, end[tp] - 1) for tp in tps if end[tp] > earliest[tp]}
        wanted |= {(tp, c - 1) for tp, c in committed.items() if c is not None and c > earliest[tp]}
        times = _capture_times(consumer, wanted, codec)
        partitions = [
            PartitionStatus(tp.partition, committed[tp], earliest[tp], end[tp], times.get((tp, end[tp] - 1)),
                            None if committed[tp] is None else times.get((tp, committed[tp] - 1)))
            for tp in tps
        ]
        dead = 0
        dlq = dlq_topic(topic)
        if existing_topic_partitions(config, dlq):  # looked up without auto-creating it
            dlq_tps = topic_partitions(config, dlq)
            dlq_end, dlq_start = consumer.end_offsets(dlq_tps), consumer.beginning_offsets(dlq_tps)
            dead = sum(dlq_end[tp] - dlq_start[tp] for tp in dlq_tps)
        return GroupStatus(group, topic, state, members, partitions, dead)
    except KafkaError as exc:
        raise ReplicatorError(f"cannot read the status of group {group!r} on {topic!r}: {exc}",
                              retryable=True) from None
    finally:
        consumer.close(autocommit=False)


def _describe(config: KafkaConfig, group: str) -> tuple[str, int]:
    admin = KafkaAdminClient(**client_kwargs(config))
    try:
        described = admin.describe_groups([group]).get(group) or {}
    except KafkaError:
        return "unknown", 0
    finally:
        admin.close()
    return str(described.get("group_state") or "unknown"), len(described.get("members") or [])


def _capture_times(consumer: KafkaConsumer, wanted: set[tuple[TopicPartition, int]], codec: EventCodec,
                   timeout: float = 10.0) -> dict[tuple[TopicPartition, int], int | None]:
    """The capture time of the records at the given offsets (None for one that does not decode)."""
    found: dict[tuple[TopicPartition, int], int | None] = {}
    by_tp: dict[TopicPartition, list[int]] = {}
    for tp, offset in wanted:
        by_tp.setdefault(tp, []).append(offset)
    for tp, offsets in by_tp.items():  # one partition at a time: a seek per wanted record, newest last
        consumer.assign([tp])
        for offset in sorted(offsets):
            consumer.seek(tp, offset)
            deadline = time.monotonic() + timeout
            while (tp, offset) not in found and time.monotonic() < deadline:
                for record in consumer.poll(timeout_ms=200).get(tp, []):
                    if record.offset == offset:
                        found[(tp, offset)] = _captured_at(record.value, codec)
                        break
    return found


def _captured_at(value: Any, codec: EventCodec) -> int | None:
    try:
        return codec.decode(value).captured_at_us
    except ReplicatorError:
        return None


def format_reconciles(pending: list[tuple[str, str, Watermark]], status: GroupStatus,
                      now_us: int | None = None) -> str:
    """One line per gap reconcile waiting for the group to commit past its watermark (capture/reconcile.py)."""
    now_us = now_us if now_us is not None else int(time.time() * 1_000_000)
    if not pending:
        return "reconciles: none pending"
    committed = {p.partition: p.committed for p in status.partitions}
    lines = []
    for node, reason, watermark in pending:
        remaining = watermark.remaining(committed)
        since = _when(int(watermark.noted_at * 1_000_000), now_us)
        lines.append(f"reconcile pending on {node} (gap: {reason}, since {since}): "
                     + (f"waiting for group {status.group!r} to commit {remaining} more event(s)" if remaining
                        else "the group is past its watermark; the listener is reconciling"))
    return "\n".join(lines)


def format_status(status: GroupStatus, now_us: int | None = None) -> str:
    now_us = now_us if now_us is not None else int(time.time() * 1_000_000)
    rows: list[tuple[Any, ...]] = [("partition", "committed", "end", "lag", "newest event", "applied up to")]
    for p in status.partitions:
        rows.append((p.partition, "-" if p.committed is None else p.committed, p.end, p.lag,
                     _when(p.newest_event_us, now_us), _when(p.applied_event_us, now_us)))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [f"group {status.group!r} on topic {status.topic!r}: {status.state}, {status.members} member(s)"]
    lines += ["  ".join(str(v).rjust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    lines.append(f"total lag {status.lag} record(s); dead letters: {status.dead_letters} in {dlq_topic(status.topic)}")
    return "\n".join(lines)


def _when(us: int | None, now_us: int) -> str:
    if us is None:
        return "-"
    at = datetime.fromtimestamp(us / 1_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{at} ({_ago((now_us - us) / 1_000_000)} ago)"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
