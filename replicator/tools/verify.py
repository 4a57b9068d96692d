"""``replicator verify``: prove DynamoDB holds what Redis holds, key by key, through the mapping rules.

Each key is read from Redis with the same atomic reader the listener uses, turned into the items the rules would
write, and compared with the items DynamoDB holds live for it (:mod:`replicator.core.drift`). Keys DynamoDB holds but
Redis no longer has are found from DynamoDB's side (the reconcile's reverse mapping).

Live writes keep going while this runs, so a difference is only a *candidate*: it is re-read after ``settle_s``
(both stores) up to ``rechecks`` times. Before each recheck, when the verifier can see the applier group's offsets, it
waits (up to ``catch_up_s``) until the group has committed every event the change topic held after the settle
interval -- the reconcile's watermark (capture/reconcile.py): a change Redis had when the key was first seen
differing is in DynamoDB by then, however far the appliers lag. It is drift when it still differs the same way
with the same DynamoDB version in two rechecks in a row (nothing is on its way); a key that keeps changing is
reported as unsettled, not as drift. Without the watermark (no Kafka access, or appliers that stopped
committing) stillness alone decides, which an applier lagging by more than ``settle_s`` can fool.

``--repair`` re-publishes drifted keys as REPAIR events through Kafka, never writing DynamoDB directly: ordering
and versions stay intact, and the applier re-reads DynamoDB for those keys instead of trusting its cache.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis

from replicator import metrics
from replicator.adapters.dynamodb.store import DynamoStore
from replicator.adapters.redis.cluster import state_reader
from replicator.adapters.redis.reader import to_event
from replicator.core.batching import batches
from replicator.core.drift import Difference, DriftKind, compare_items, same_differences
from replicator.core.errors import MappingError, ReplicatorError
from replicator.core.events import Origin
from replicator.core.keyspace import captured_keys, sample_keys
from replicator.core.mapping import Rule, RuleSet, desired_items
from replicator.core.ratelimit import RateLimiter
from replicator.core.watermark import GroupProgress, Watermark

log = logging.getLogger(__name__)

#: The applier group counts as stopped when its backlog has not shrunk for this long (see Verifier._catch_up).
_STALLED_S = 10.0


@dataclass(frozen=True)
class VerifyOptions:
    sample: int | None = None  # check N random keys instead of all
    owner: bytes | None = None  # check one owner's keys only
    settle_s: float = 2.0
    rechecks: int = 3
    catch_up_s: float = 60.0  # longest wait for the appliers to commit past a recheck's watermark
    workers: int = 4
    batch: int = 100
    max_keys_per_second: float | None = None
    examples: int = 5
    #: Only the keys whose owner this accepts (the cutover: owners switched to DynamoDB are left out, or only they
    #: are checked with --switched); the others are counted as skipped.
    owners: Callable[[bytes], bool] | None = None


@dataclass(frozen=True)
class KeyCheck:
    key: bytes
    rule: str
    dynamo_version: int
    differences: tuple[Difference, ...]
    error: str | None = None
    ttl_attr: str = ""  # the attribute holding the expiry instant under this key's rule ("" when none)


@dataclass
class VerifyReport:
    keys_checked: int = 0
    #: Keys with at least one difference of the kind (a key may count under several kinds).
    drift: dict[DriftKind, int] = field(default_factory=lambda: dict.fromkeys(DriftKind, 0))
    examples: dict[DriftKind, list[str]] = field(default_factory=lambda: {k: [] for k in DriftKind})
    drifted_keys: list[bytes] = field(default_factory=list)
    unsettled_keys: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    repaired: int = 0
    #: Keys left out by VerifyOptions.owners (and what they are, for the report).
    skipped: int = 0
    skipped_what: str = ""

    @property
    def has_drift(self) -> bool:
        return bool(self.drifted_keys)

    def add(self, check: KeyCheck, examples: int) -> None:
        self.drifted_keys.append(check.key)
        for kind in {d.kind for d in check.differences}:
            self.drift[kind] += 1
            if len(self.examples[kind]) < examples:
                first = next(d for d in check.differences if d.kind is kind)
                self.examples[kind].append(f"{check.key!r} ({check.rule}): {first.describe()}")

    def to_json(self) -> dict[str, Any]:
        return {
            "keys_checked": self.keys_checked,
            "drift_keys": len(self.drifted_keys),
            "drift": {k.value: n for k, n in self.drift.items()},
            "examples": {k.value: v for k, v in self.examples.items() if v},
            "unsettled_keys": len(self.unsettled_keys),
            "errors": self.errors,
            "repaired": self.repaired,
            "skipped_keys": self.skipped,
            "seconds": round(self.seconds, 3),
        }

    def format(self) -> str:
        lines = [f"verified {self.keys_checked} key(s) in {self.seconds:.1f}s: "
                 + (f"{len(self.drifted_keys)} drifted" if self.has_drift else "no drift")]
        for kind in DriftKind:
            lines.append(f"  {kind.value:22} {self.drift[kind]}")
            lines.extend(f"      e.g. {example}" for example in self.examples[kind])
        if self.unsettled_keys:
            lines.append(f"  {len(self.unsettled_keys)} key(s) still changing in DynamoDB (in flight, not drift)")
        lines.extend(f"  error: {e}" for e in self.errors[:10])
        if self.skipped:
            lines.append(f"  skipped {self.skipped} key(s) {self.skipped_what}")
        if self.repaired:
            lines.append(f"re-published {self.repaired} drifted key(s) as REPAIR events; run verify again once "
                         "the appliers caught up")
        return "\n".join(lines)


class Verifier:
    def __init__(self, client: redis.Redis, dynamodb: Any, rules: RuleSet, state_table: str,
                 max_inline_members: int = 10_000, node: str = "verify", db: int = 0,
                 progress: GroupProgress | None = None) -> None:
        self._redis = client
        self._progress = progress
        self._store = DynamoStore(dynamodb, state_table)
        self._rules = rules
        self._reader = state_reader(client, max_inline_members)
        self._node, self._db = node, db

    # -- one pass ------------------------------------------------------------------------------------------------

    def check(self, keys: list[bytes]) -> list[KeyCheck]:
        """Read ``keys`` from both stores now and compare. Keys no rule captures are left out."""
        now_us = time.time_ns() // 1000
        checks = []
        for state in self._reader.read(keys):
            event = to_event(state, self._rules, Origin.REPAIR, self._node, self._db, now_us)
            matched = self._rules.match(state.key)
            if event is None or matched is None:
                continue
            rule, variables = matched
            try:
                expected = desired_items(rule, variables, event)
                applied = self._store.load_state(rule, state.key, variables)
            except MappingError as exc:
                checks.append(KeyCheck(state.key, rule.name, -1, (), error=str(exc)))
                continue
            ttl_attr = "expire_at" if rule.is_mirror else ""
            differences = compare_items(expected, applied.items, ttl_attr)
            checks.append(KeyCheck(state.key, rule.name, applied.version, tuple(differences), ttl_attr=ttl_attr))
        return checks

    # -- a whole run ---------------------------------------------------------------------------------------------

    def run(self, options: VerifyOptions, stop: threading.Event | None = None,
            progress: Callable[[int, str], None] | None = None) -> VerifyReport:
        started = time.monotonic()
        report = VerifyReport()
        limiter = RateLimiter(options.max_keys_per_second)
        candidates: list[KeyCheck] = []
        lock = threading.Lock()

        def one_batch(batch: list[bytes]) -> None:
            kept = batch
            if options.owners is not None:
                keep = options.owners
                kept = [k for k in batch if keep(self._rules.owner_of(k) or k)]
            limiter.take(len(kept))
            checks = self.check(kept) if kept else []
            with lock:
                report.skipped += len(batch) - len(kept)
                report.keys_checked += len(checks)
                for c in checks:
                    if c.error:
                        report.errors.append(f"{c.key!r}: {c.error}")
                    elif c.differences:
                        candidates.append(c)
                if progress:
                    progress(report.keys_checked, f"{len(candidates)} differing so far")

        with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="verify") as pool:
            pending: list[Any] = []
            for batch in batches(self._keys(options), options.batch):
                if stop is not None and stop.is_set():
                    break
                pending.append(pool.submit(one_batch, batch))
                if len(pending) >= options.workers * 4:  # bounded: a 100M-key run must not queue every key
                    pending.pop(0).result()
            for future in pending:
                future.result()

        drifted, unsettled = self._settle(candidates, options, stop)
        for check in drifted:
            report.add(check, options.examples)
        report.unsettled_keys = [c.key for c in unsettled]
        report.seconds = time.monotonic() - started
        for kind in DriftKind:
            metrics.VERIFY_DRIFT_KEYS.labels(kind=kind.value).set(report.drift[kind])
        return report

    def _settle(self, candidates: list[KeyCheck], options: VerifyOptions, stop: threading.Event | None,
                ) -> tuple[list[KeyCheck], list[KeyCheck]]:
        """Re-check differing keys until they match, stay still (drift) or run out of rechecks (unsettled).

        Still means: the same differences (neither store changed the key) and the same DynamoDB version, after the
        appliers caught up, in ``min(2, rechecks)`` rechecks in a row. One still recheck is not enough: a change
        the listener had not yet published when the watermark was noted (a listener behind by more than
        ``settle_s``) looks still once.
        """
        drifted: list[KeyCheck] = []
        still: dict[bytes, int] = {}
        needed = min(2, options.rechecks)
        for _ in range(options.rechecks):
            if not candidates or (stop is not None and stop.wait(options.settle_s)):
                break
            if stop is None:
                time.sleep(options.settle_s)
            self._catch_up(options, stop)
            again = {c.key: c for c in self.check([c.key for c in candidates])}
            moving = []
            for before in candidates:
                now = again.get(before.key)
                if now is None or not now.differences:
                    continue  # it was in flight and has arrived (or is no longer captured)
                unchanged = (now.dynamo_version == before.dynamo_version
                             and same_differences(now.differences, before.differences, now.ttl_attr))
                still[now.key] = still.get(now.key, 0) + 1 if unchanged else 0
                (drifted if still[now.key] >= needed else moving).append(now)
            candidates = moving
        return drifted, candidates

    def _catch_up(self, options: VerifyOptions, stop: threading.Event | None) -> bool:
        """Wait until the applier group has committed every event in the change topic now. True if it did.

        Gives up after ``catch_up_s``, or once the group's backlog has not shrunk for ``_STALLED_S`` (appliers
        stopped: then the stores really do differ, and stillness decides as it always did). A lagging applier can
        take seconds per batch, so a short stall is not a stopped one.
        """
        if self._progress is None:
            return False
        try:
            watermark = Watermark(self._progress.end())
            deadline = time.monotonic() + options.catch_up_s
            last, since = -1, time.monotonic()
            while time.monotonic() < deadline:
                remaining = watermark.remaining(self._progress.committed())
                if remaining == 0:
                    return True
                if remaining != last:
                    last, since = remaining, time.monotonic()
                elif time.monotonic() - since > max(_STALLED_S, 2 * options.settle_s):
                    break
                if stop is not None and stop.wait(0.1):
                    break
                if stop is None:
                    time.sleep(0.1)
        except ReplicatorError as exc:  # Kafka away: fall back to stillness
            log.warning("verify cannot read the applier group's offsets", extra={"kv": {"error": str(exc)}})
        return False

    # -- which keys ----------------------------------------------------------------------------------------------

    def _keys(self, options: VerifyOptions) -> Iterator[bytes]:
        if options.owner is not None:
            yield from _unique(self._owner_keys(options.owner))
        elif options.sample is not None:
            yield from sample_keys(self._redis, self._rules, options.sample)
        else:
            yield from self._all_keys()

    def _all_keys(self) -> Iterator[bytes]:
        """Every captured key in Redis, then every key DynamoDB holds live data for that Redis does not have."""
        yield from captured_keys(self._redis, self._rules)
        for batch in batches(self._store.live_source_keys(self._rules), 500):
            pipe = self._redis.pipeline(transaction=False)
            for key in batch:
                pipe.exists(key)
            yield from (key for key, exists in zip(batch, pipe.execute(), strict=True) if not exists)

    def _owner_keys(self, owner: bytes) -> Iterator[bytes]:
        """One owner's keys: SCAN with the owner fixed in each rule's pattern, plus the owner's keys in DynamoDB."""
        for rule in self._rules.rules:
            name = rule.owner.single
            if name is None or name not in rule.pattern.placeholders:
                continue  # this rule's owner is not a pattern variable: its keys cannot be found by owner
            fixed = {name: owner}
            for key in self._redis.scan_iter(match=rule.pattern.glob(fixed), count=1000):
                matched = self._rules.match(key)
                if matched is not None and matched[0] is rule and matched[1].get(name) == owner:
                    yield key
            if set(rule.pattern.placeholders) == {name}:
                yield rule.pattern.render(fixed)  # a collection key that DynamoDB may still hold
            elif not rule.is_collection and set(rule.item[rule.partition_key].placeholders) <= {name}:
                yield from self._partition_source_keys(rule, fixed)

    def _partition_source_keys(self, rule: Rule, values: dict[str, bytes]) -> Iterator[bytes]:
        """Keys DynamoDB holds in the partition that ``rule`` still maps (an earlier rule may match a key first)."""
        for key in self._store.partition_source_keys(rule, values):
            matched = self._rules.match(key)
            if matched is not None and matched[0] is rule:
                yield key


def _unique(keys: Iterable[bytes]) -> Iterator[bytes]:
    seen: set[bytes] = set()
    for key in keys:
        if key not in seen:
            seen.add(key)
            yield key


def report_json(report: VerifyReport) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=True)

