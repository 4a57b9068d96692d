"""What a verify run found, kept so that a run can stop and resume, run in shards and be merged, and what a run will
cost before it starts. Pure: the verifier (tools/verify.py) reads the stores and keeps these records.

A run over a keyspace of hundreds of millions of keys takes hours, so its report is built in chunks: a chunk's keys
are counted once their differences settled (drift, or still moving), and only then is the scan position past them
saved with the report so far (:class:`ShardRecord`). Memory stays flat: drifted and unsettled keys are counted
exactly, but only the first ``KEPT_KEYS`` of each are kept (enough to repair them; a run that finds more drift than
that re-publishes them chunk by chunk with ``--repair``, as it goes).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

from replicator.core.drift import DriftKind

#: Drifted (and unsettled) keys a report keeps by name in memory; beyond that they are counted only.
KEPT_KEYS = 10_000
#: Errors a report keeps (the count is exact).
KEPT_ERRORS = 100
#: What a checkpoint keeps by name, in bytes of its JSON: a record is one state-table item, which DynamoDB caps at
#: 400 KB whatever the keys (a Redis key may be megabytes). Counts are always exact.
RECORD_KEYS_BYTES = 64 * 1024
RECORD_TEXT_BYTES = 32 * 1024
#: A line of the report (an example, an error) is cut to this many characters: it names a key, which may be huge.
LINE_CHARS = 300


@dataclass
class VerifyReport:
    keys_checked: int = 0
    #: Keys with at least one difference of the kind (a key may count under several kinds).
    drift: dict[DriftKind, int] = field(default_factory=lambda: dict.fromkeys(DriftKind, 0))
    examples: dict[DriftKind, list[str]] = field(default_factory=lambda: {k: [] for k in DriftKind})
    #: Every drifted key is counted here; the first KEPT_KEYS are also named in ``drifted_keys``.
    drift_keys: int = 0
    drifted_keys: list[bytes] = field(default_factory=list)
    unsettled: int = 0
    unsettled_keys: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    seconds: float = 0.0
    repaired: int = 0
    #: Keys left out by VerifyOptions.owners (and what they are, for the report).
    skipped: int = 0
    skipped_what: str = ""
    #: Read capacity units DynamoDB reported for the run's reads (0 when not counted).
    rcu: float = 0.0
    #: False while a run (or one of the shards of a merged report) has not reached the end of its keyspace.
    complete: bool = True
    shards: str = ""  # a merged report: "k/n shards complete"

    @property
    def has_drift(self) -> bool:
        return self.drift_keys > 0

    @property
    def proven(self) -> bool:
        """Every key compared equal: complete, no drift, and no key left unchecked by an error."""
        return self.complete and not self.has_drift and not self.error_count

    def add_drifted(self, key: bytes, rule: str, differences: list[Any] | tuple[Any, ...], examples: int) -> None:
        """Count a drifted key under each kind of difference it has (``differences``: core.drift.Difference)."""
        self.drift_keys += 1
        if len(self.drifted_keys) < KEPT_KEYS:
            self.drifted_keys.append(key)
        for kind in {d.kind for d in differences}:
            self.drift[kind] += 1
            if len(self.examples[kind]) < examples:
                first = next(d for d in differences if d.kind is kind)
                self.examples[kind].append(_line(f"{_short(key)} ({rule}): {first.describe()}"))

    def add_unsettled(self, key: bytes) -> None:
        self.unsettled += 1
        if len(self.unsettled_keys) < KEPT_KEYS:
            self.unsettled_keys.append(key)

    def add_error(self, error: str) -> None:
        self.error_count += 1
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(_line(error))

    def merge(self, other: VerifyReport, examples: int = 5) -> None:
        """Add ``other`` (another shard's report, or a later chunk's) to this one."""
        self.keys_checked += other.keys_checked
        self.drift_keys += other.drift_keys
        self.drifted_keys += other.drifted_keys[: max(0, KEPT_KEYS - len(self.drifted_keys))]
        self.unsettled += other.unsettled
        self.unsettled_keys += other.unsettled_keys[: max(0, KEPT_KEYS - len(self.unsettled_keys))]
        for kind in DriftKind:
            self.drift[kind] += other.drift[kind]
            self.examples[kind] += other.examples[kind][: max(0, examples - len(self.examples[kind]))]
        self.error_count += other.error_count
        self.errors += other.errors[: max(0, KEPT_ERRORS - len(self.errors))]
        self.seconds = max(self.seconds, other.seconds)  # shards run side by side
        self.repaired += other.repaired
        self.skipped += other.skipped
        self.rcu += other.rcu
        self.complete = self.complete and other.complete

    # -- as JSON: the CLI's --json, and the record a checkpoint keeps ---------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "keys_checked": self.keys_checked,
            "drift_keys": self.drift_keys,
            "drift": {k.value: n for k, n in self.drift.items()},
            "examples": {k.value: v for k, v in self.examples.items() if v},
            "unsettled_keys": self.unsettled,
            "errors": self.errors,
            "error_count": self.error_count,
            "repaired": self.repaired,
            "skipped_keys": self.skipped,
            "seconds": round(self.seconds, 3),
            "read_capacity_units": round(self.rcu, 1),
            "complete": self.complete,
            **({"shards": self.shards} if self.shards else {}),
        }

    def to_record(self) -> dict[str, Any]:
        """Every count, and as many keys, examples and errors as fit the record's budget, for a checkpoint."""
        return {**self.to_json(), "drifted_keys_kept": _within(map(_b64, self.drifted_keys), RECORD_KEYS_BYTES // 2),
                "unsettled_keys_kept": _within(map(_b64, self.unsettled_keys), RECORD_KEYS_BYTES // 2),
                "errors": _within(self.errors, RECORD_TEXT_BYTES // 2),
                "examples": {k.value: _within(v, RECORD_TEXT_BYTES // 8) for k, v in self.examples.items() if v},
                "seconds": self.seconds, "read_capacity_units": self.rcu, "skipped_what": self.skipped_what}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> VerifyReport:
        report = cls(keys_checked=record["keys_checked"], drift_keys=record["drift_keys"],
                     drifted_keys=[_unb64(k) for k in record["drifted_keys_kept"]], unsettled=record["unsettled_keys"],
                     unsettled_keys=[_unb64(k) for k in record["unsettled_keys_kept"]], errors=record["errors"],
                     error_count=record["error_count"], seconds=record["seconds"], repaired=record["repaired"],
                     skipped=record["skipped_keys"], skipped_what=record["skipped_what"],
                     rcu=record["read_capacity_units"], complete=record["complete"])
        for kind in DriftKind:
            report.drift[kind] = record["drift"][kind.value]
            report.examples[kind] = list(record["examples"].get(kind.value, []))
        return report

    def format(self) -> str:
        verdict = f"{self.drift_keys} drifted" if self.has_drift else "no drift"
        lines = [f"verified {self.keys_checked} key(s) in {self.seconds:.1f}s: {verdict}"
                 + ("" if self.complete else " so far (INCOMPLETE: run again with --resume)")
                 + (f" [{self.shards}]" if self.shards else "")]
        for kind in DriftKind:
            lines.append(f"  {kind.value:22} {self.drift[kind]}")
            lines.extend(f"      e.g. {example}" for example in self.examples[kind])
        if self.unsettled:
            lines.append(f"  {self.unsettled} key(s) still changing in DynamoDB (in flight, not drift)")
        lines.extend(f"  error: {e}" for e in self.errors[:10])
        if self.error_count > 10:
            lines.append(f"  ... {self.error_count} errors in all")
        if self.skipped:
            lines.append(f"  skipped {self.skipped} key(s) {self.skipped_what}")
        if self.rcu:
            lines.append(f"  {self.rcu:,.0f} DynamoDB read capacity units")
        if self.repaired:
            lines.append(f"re-published {self.repaired} drifted key(s) as REPAIR events; run verify again once "
                         "the appliers caught up")
        return "\n".join(lines)


@dataclass
class ShardRecord:
    """One shard's run as the state table keeps it: where each of its scans is, and the report up to there."""

    shard: int
    shards: int
    segments: int  # Scan segments per shard and source (a resumed run must use the same split)
    positions: dict[str, Any]  # unit -> where to resume (DONE: finished)
    report: VerifyReport
    started: float  # epoch seconds
    updated: float
    done: bool = False
    #: Which run this shard belongs to (``--run``; the Helm Job passes its uid): shards merge only within a run,
    #: and a shard resumes only its own run's record.
    run: str = ""
    #: What the positions mean: the rules' globs and the Redis nodes scanned. A resume under other rules or
    #: another topology would skip or repeat keys, so it starts over instead.
    layout: str = ""

    def to_json(self) -> str:
        return json.dumps({"shard": self.shard, "shards": self.shards, "segments": self.segments,
                           "positions": self.positions, "report": self.report.to_record(),
                           "started": self.started, "updated": self.updated, "done": self.done, "run": self.run,
                           "layout": self.layout})

    @classmethod
    def from_json(cls, text: str) -> ShardRecord:
        data = json.loads(text)
        return cls(data["shard"], data["shards"], data["segments"], data["positions"],
                   VerifyReport.from_record(data["report"]), data["started"], data["updated"], data["done"],
                   data.get("run", ""), data.get("layout", ""))


#: A unit (a Redis node's SCAN, a Scan segment) that has been read to its end.
DONE = "done"


def merge_shards(records: list[ShardRecord | None], examples: int = 5, run: str | None = None) -> VerifyReport:
    """One report for a sharded run: the shards' reports added up; incomplete while any shard is missing or has
    not finished. Only records of one run count: ``run``, or else the run of the most recently started shard (a
    shard left from an older run is as good as missing)."""
    present = [r for r in records if r is not None]
    if run is None and present:
        run = max(present, key=lambda r: r.started).run
    records = [r if r is not None and r.run == run else None for r in records]
    merged = VerifyReport(seconds=0.0)
    for record in records:
        if record is None:
            merged.complete = False
            continue
        report = record.report
        report.complete = record.done
        merged.merge(report, examples)
        merged.skipped_what = merged.skipped_what or report.skipped_what
    merged.shards = f"{sum(1 for r in records if r is not None and r.done)}/{len(records)} shards complete"
    return merged


# -- cost up front -----------------------------------------------------------------------------------------------

#: Bytes a read capacity unit reads: one strongly consistent read (or two eventually consistent ones) of 4 KB.
RCU_BYTES = 4096


@dataclass(frozen=True)
class VerifyCost:
    """What verifying a keyspace costs: Redis reads, DynamoDB read capacity units, and the time it takes."""

    keys: int
    redis_reads: int  # keys read atomically, plus an EXISTS per key DynamoDB holds
    rcu: float
    keys_per_second: float  # the rate the time is computed at
    seconds: float
    shards: int

    def to_json(self) -> dict[str, Any]:
        return {"keys": self.keys, "redis_reads": self.redis_reads, "read_capacity_units": round(self.rcu),
                "keys_per_second": round(self.keys_per_second, 1), "seconds": round(self.seconds),
                "shards": self.shards}

    def format(self) -> str:
        per = f" per shard, {self.shards} shards side by side" if self.shards > 1 else ""
        return (f"verify would read {self.keys:,} key(s) ({self.redis_reads:,} Redis reads) and consume about "
                f"{self.rcu:,.0f} DynamoDB read capacity units; at {self.keys_per_second:,.0f} keys/s{per} that "
                f"takes about {_duration(self.seconds)}")


def verify_cost(keys: int, single_units: int, collection_keys: int, collection_bytes: int, dynamodb_keys: int,
                scanned_bytes: int, keys_per_second: float, shards: int = 1, max_rcu: float | None = None,
                ) -> VerifyCost:
    """The cost of verifying ``keys`` Redis keys (from a plan of the mapping's items).

    The Redis pass reads each single item consistently (``single_units``: a unit per started 4 KB of each item),
    and each collection key's head (one unit) and partition (a Query: a unit per started 4 KB of its items, at
    least one). The pass for keys only DynamoDB holds Scans the tables eventually consistently (half a unit per
    4 KB) and asks Redis whether each key it finds exists. Time: ``keys`` at ``keys_per_second`` per shard, or
    longer when ``max_rcu`` (per shard) caps the capacity.
    """
    per_collection = collection_bytes / max(1, collection_keys) / RCU_BYTES
    collections = collection_keys * (1 + max(1, math.ceil(per_collection))) if collection_keys else 0
    rcu = single_units + collections + scanned_bytes / RCU_BYTES / 2
    seconds = keys / max(1e-9, keys_per_second) / max(1, shards)
    if max_rcu:
        seconds = max(seconds, rcu / max_rcu / max(1, shards))
    return VerifyCost(keys, keys + dynamodb_keys, rcu, keys_per_second, seconds, shards)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _within(texts: Any, budget: int) -> list[str]:
    """The first of ``texts`` whose lengths add up to at most ``budget``."""
    kept, used = [], 0
    for text in texts:
        used += len(text) + 4
        if used > budget:
            break
        kept.append(text)
    return kept


def _line(text: str) -> str:
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 3] + "..."


def _short(key: bytes) -> str:
    text = repr(key)
    return text if len(text) <= 120 else f"{text[:100]}...({len(key)} bytes)"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
