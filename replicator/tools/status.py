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

from replicator.adapters.kafka.broker import describe_group, existing_topic_partitions
from replicator.adapters.kafka.dead_letters import dlq_topic
from replicator.adapters.kafka.offsets import GroupOffsets
from replicator.core.avro import EventCodec
from replicator.core.config import KafkaConfig
from replicator.core.errors import BrokerError, ReplicatorError
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
    try:
        described = describe_group(config, group)
        state, members = described.state, len(described.members)
    except BrokerError:
        state, members = "unknown", 0
    try:
        with GroupOffsets(config, topic, group) as offsets:
            partitions = offsets.partitions()
            earliest, end, committed = offsets.earliest(partitions), offsets.end(partitions), offsets.committed()
            wanted = {(p, end[p] - 1) for p in partitions if end[p] > earliest[p]}
            wanted |= {(p, c - 1) for p, c in committed.items() if c is not None and c > earliest[p]}
            times = {at: _captured_at(value, codec) for at, value in offsets.values_at(wanted).items()}
        dead = 0
        dlq = dlq_topic(topic)
        if existing_topic_partitions(config, dlq):  # looked up without auto-creating it
            with GroupOffsets(config, dlq, None) as dead_letters:
                dead = sum(dead_letters.end().values()) - sum(dead_letters.earliest().values())
    except BrokerError as exc:
        raise ReplicatorError(f"cannot read the status of group {group!r} on {topic!r}: {exc}",
                              retryable=True) from None
    return GroupStatus(group, topic, state, members, [
        PartitionStatus(p, committed[p], earliest[p], end[p], times.get((p, end[p] - 1)),
                        None if committed[p] is None else times.get((p, committed[p] - 1)))
        for p in partitions
    ], dead)


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
