"""Moving a consumer group's committed offsets, so the applier re-applies from there (``replicator replay``).

Re-applying is safe: every write is conditional on the source version, so old events change nothing that a newer
one wrote. The group must have no active members, or they would overwrite the new offsets with their own commits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from replicator.adapters.kafka.broker import describe_group, topic_partitions
from replicator.adapters.kafka.offsets import GroupOffsets
from replicator.core.config import KafkaConfig
from replicator.core.errors import BrokerError, ConfigError

TargetKind = Literal["offset", "earliest", "latest", "timestamp"]


@dataclass(frozen=True)
class Target:
    """Where to move the group: an absolute offset, either end of the log, or a time (epoch ms)."""

    kind: TargetKind
    value: int = 0

    def describe(self) -> str:
        if self.kind == "timestamp":
            return "timestamp " + datetime.fromtimestamp(self.value / 1000, timezone.utc).isoformat()
        return f"offset {self.value}" if self.kind == "offset" else self.kind


@dataclass(frozen=True)
class Move:
    """One partition's row of the before/after table."""

    partition: int
    before: int | None
    after: int
    earliest: int
    latest: int

    @property
    def lag_after(self) -> int:
        return self.latest - self.after


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``2h``, ``90m``, ``1h30m``, ``7d``, ``500ms`` → timedelta. Pure."""
    compact = text.replace(" ", "").lower()
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"--by-duration {text!r} is not a duration; write it like 2h, 90m, 1h30m or 7d")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def parse_timestamp(text: str) -> int:
    """ISO 8601 → epoch milliseconds. A time without offset is UTC (said in ``--help``). Pure."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--to-timestamp {text!r} is not ISO 8601; write it like 2026-11-23T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def plan_moves(offsets: dict[int, tuple[int | None, int, int]], target: Target,
               by_time: dict[int, int | None] | None = None) -> list[Move]:
    """Pure: (committed, earliest, latest) per partition and a target → the moves.

    An offset outside the log is clamped into it (what kafka-consumer-groups does): below ``earliest`` the records
    are gone, above ``latest`` they do not exist yet. A time after the last record moves to the end.
    """
    moves = []
    for partition, (committed, earliest, latest) in sorted(offsets.items()):
        if target.kind == "earliest":
            after = earliest
        elif target.kind == "latest":
            after = latest
        elif target.kind == "offset":
            after = target.value
        else:
            found = (by_time or {}).get(partition)
            after = latest if found is None else found
        moves.append(Move(partition, committed, min(max(after, earliest), latest), earliest, latest))
    return moves


def active_members(config: KafkaConfig, group: str) -> list[str]:
    """The group's live members (client id @ host); empty when no consumer is joined."""
    return describe_group(config, group).members


def reset_offsets(config: KafkaConfig, group: str, topic: str, target: Target,
                  partitions: list[int] | None = None, dry_run: bool = False) -> list[Move]:
    """Move ``group``'s committed offsets on ``topic`` (all partitions, or the given ones) to ``target``."""
    members = active_members(config, group)
    if members and not dry_run:
        raise BrokerError(
            f"consumer group {group!r} has {len(members)} active member(s) ({', '.join(members[:5])}); their commits "
            "would overwrite the new offsets: stop the appliers first (e.g. kubectl scale deployment <applier> "
            "--replicas=0), replay, then start them again")
    known = [tp.partition for tp in topic_partitions(config, topic)]
    if partitions is not None:
        unknown = sorted(set(partitions) - set(known))
        if unknown:
            raise ConfigError(f"--partitions {unknown} not in topic {topic!r} (partitions 0-{len(known) - 1})")
    chosen = known if partitions is None else [p for p in known if p in set(partitions)]
    with GroupOffsets(config, topic, group) as offsets:
        earliest, latest, committed = offsets.earliest(chosen), offsets.end(chosen), offsets.committed(chosen)
        by_time = offsets.at_time(target.value, chosen) if target.kind == "timestamp" else None
        moves = plan_moves({p: (committed[p], earliest[p], latest[p]) for p in chosen}, target, by_time)
        if not dry_run:
            offsets.commit({m.partition: m.after for m in moves})
    return moves


def format_moves(moves: list[Move], group: str, topic: str, target: Target, dry_run: bool) -> str:
    rows: list[tuple[Any, ...]] = [("partition", "before", "after", "earliest", "latest", "lag after")]
    rows += [(m.partition, "-" if m.before is None else m.before, m.after, m.earliest, m.latest, m.lag_after)
             for m in moves]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).rjust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    verb = "would move" if dry_run else "moved"
    total = sum(m.lag_after for m in moves)
    lines.append(f"{verb} group {group!r} on {topic!r} to {target.describe()}: {total} record(s) to re-apply"
                 + (" (dry run: nothing committed)" if dry_run else ""))
    return "\n".join(lines)
