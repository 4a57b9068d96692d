"""``replicator verify``: prove DynamoDB holds what Redis holds, key by key, through the mapping rules.

Each key is read from Redis with the same atomic reader the listener uses (many keys per call, one version each),
turned into the items the rules would write, and compared with the items DynamoDB holds live for it
(:mod:`replicator.core.drift`), read in batches: single items and collection heads by BatchGetItem, the live items
of many collection keys by one PartiQL SELECT (:meth:`DynamoStore.load_states`). Keys DynamoDB holds but Redis no
longer has are found from DynamoDB's side, by a parallel Scan of the live heads and single-item tables, and an
EXISTS per key found.

Live writes keep going while this runs, so a difference is only a *candidate*: it is re-read after ``settle_s``
(both stores) up to ``rechecks`` times. Before each recheck, when the verifier can see the applier group's offsets, it
waits (up to ``catch_up_s``) until the group has committed every event the change topic held after the settle
interval -- the reconcile's watermark (capture/reconcile.py): a change Redis had when the key was first seen
differing is in DynamoDB by then, however far the appliers lag. It is drift when it still differs the same way
with the same DynamoDB version in two rechecks in a row (nothing is on its way); a key that keeps changing is
reported as unsettled, not as drift. Without the watermark (no Kafka access, or appliers that stopped
committing) stillness alone decides, which an applier lagging by more than ``settle_s`` can fool.

At scale (hundreds of millions of keys) a run takes hours, so it is cut into *chunks* of about ``checkpoint_s``:
a chunk's candidates are settled (and, with ``--repair``, re-published) in the background while the next chunk is
read, and then its scan positions and the report so far are saved in the state table
(:class:`replicator.core.verification.ShardRecord`). A killed run resumes from its last saved chunk
(``--resume``); ``--shard i/n`` runs split the keyspace by owner (and the Scan by segment), each with its own
record, and ``--report`` merges them.

``--repair`` re-publishes drifted keys as REPAIR events through Kafka, never writing DynamoDB directly: ordering
and versions stay intact, and the applier re-reads DynamoDB for those keys instead of trusting its cache.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from replicator import metrics
from replicator.adapters.dynamodb.capacity import ReadCapacity
from replicator.adapters.dynamodb.store import DynamoStore, source_tables
from replicator.adapters.redis.client import Client, nodes
from replicator.adapters.redis.cluster import state_reader
from replicator.adapters.redis.reader import to_event
from replicator.core.batching import batches
from replicator.core.drift import Difference, DriftKind, compare_items, same_differences
from replicator.core.errors import ConfigError, MappingError, ReplicatorError, SinkError
from replicator.core.events import Origin
from replicator.core.keyspace import captured_keys, sample_keys
from replicator.core.mapping import Rule, RuleSet, desired_items
from replicator.core.ratelimit import RateLimiter
from replicator.core.shards import in_shard
from replicator.core.verification import DONE, ShardRecord, VerifyCost, VerifyReport, verify_cost
from replicator.core.watermark import GroupProgress, Watermark
from replicator.tools.plan import MigrationPlan

__all__ = ["KeyCheck", "Verifier", "VerifyCheckpoints", "VerifyOptions", "VerifyReport", "report_json"]

log = logging.getLogger(__name__)

#: The applier group counts as stopped when its backlog has not shrunk for this long (see _Rechecks._catch_up).
_STALLED_S = 10.0
#: About what a collection key's head takes in the state table (its key, the rule name and a version).
_HEAD_BYTES = 64
#: Keys per SCAN call, as the snapshot uses.
_SCAN_COUNT = 1000


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
    #: This run's share of the keyspace: the owners of shard ``shard`` of ``shards`` (core/shards.py), and the same
    #: share of each table's Scan segments (``segments`` per shard).
    shard: int = 0
    shards: int = 1
    segments: int = 4
    #: How often a whole-keyspace run saves where it is (after settling what it read before).
    checkpoint_s: float = 30.0
    #: The run this is part of (see ShardRecord.run): a shard resumes and merges only within its run.
    run: str = ""


@dataclass(frozen=True)
class KeyCheck:
    key: bytes
    rule: str
    dynamo_version: int
    differences: tuple[Difference, ...]
    error: str | None = None
    ttl_attr: str = ""  # the attribute holding the expiry instant under this key's rule ("" when none)


class VerifyCheckpoints:
    """Each shard's :class:`ShardRecord` in the state table, under a key no Redis key's head can have."""

    PREFIX = b"\x00verify\x00"

    def __init__(self, client: Any, table: str, scope: str = "") -> None:
        self._store = DynamoStore(client, table)
        self._table = table
        self._scope = scope  # runs of another kind (verify --switched) keep records of their own

    def _key(self, shard: int, shards: int) -> dict[str, Any]:
        return {"k": {"B": self.PREFIX + f"{self._scope}\x00{shard}/{shards}".encode()}}

    def load(self, shard: int, shards: int) -> ShardRecord | None:
        item = self._store.get(self._table, self._key(shard, shards), "reading a verify checkpoint")
        return None if item is None else ShardRecord.from_json(item["record"]["S"])

    def save(self, record: ShardRecord) -> None:
        self._store.put(self._table, {**self._key(record.shard, record.shards), "record": {"S": record.to_json()}},
                        "saving a verify checkpoint")

    def all(self, shards: int) -> list[ShardRecord | None]:
        """The records of shards 0..shards-1 (None where a shard has none)."""
        return [self.load(shard, shards) for shard in range(shards)]


@dataclass(frozen=True)
class _Page:
    """Keys read from one unit (a Redis node's SCAN, a Scan segment), and where that unit resumes after them."""

    unit: str
    after: Any
    keys: list[bytes]
    from_dynamodb: bool  # keys DynamoDB holds: only those Redis lacks are checked here


@dataclass
class _Checked:
    """What a worker found in one batch: counts and errors, and the keys that differ (candidates to settle)."""

    part: VerifyReport
    candidates: list[KeyCheck]


@dataclass
class _Chunk:
    """Pages read since the last checkpoint: their checks and the positions past them."""

    futures: list[Future[_Checked]] = field(default_factory=list)
    positions: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class Verifier:
    def __init__(self, client: Client, dynamodb: Any, rules: RuleSet, state_table: str,
                 max_inline_members: int = 10_000, node: str = "verify", db: int = 0,
                 progress: GroupProgress | None = None, capacity: ReadCapacity | None = None) -> None:
        self._redis = client
        self._store = DynamoStore(dynamodb, state_table)
        self._rules = rules
        self._reader = state_reader(client, max_inline_members)
        self._node, self._db = node, db
        self._capacity = capacity
        self._keyspace = _Keyspace(client, self._store, rules, node)
        self._rechecks = _Rechecks(self.check, progress)

    # -- one batch -----------------------------------------------------------------------------------------------

    def check(self, keys: list[bytes]) -> list[KeyCheck]:
        """Read ``keys`` from both stores now and compare. Keys no rule captures are left out.

        DynamoDB is read for all of them at once (:meth:`DynamoStore.load_states`); when DynamoDB refuses the batch
        for one key's sake (a key longer than a DynamoDB key may be), each key is read alone, so that key gets its
        one-line error and the others their answer.
        """
        now_us = time.time_ns() // 1000
        wanted, expected = [], []
        checks = []
        for state in self._reader.read(keys):
            event = to_event(state, self._rules, Origin.REPAIR, self._node, self._db, now_us)
            matched = self._rules.match(state.key)
            if event is None or matched is None:
                continue
            rule, variables = matched
            try:
                expected.append(desired_items(rule, variables, event))
            except MappingError as exc:
                checks.append(KeyCheck(state.key, rule.name, -1, (), error=str(exc)))
                continue
            wanted.append((rule, state.key, variables))
        try:
            applied = self._store.load_states(wanted)
        except (MappingError, SinkError) as exc:
            if isinstance(exc, SinkError) and exc.retryable:
                raise
            return checks + [self._check_one(one, want) for one, want in zip(wanted, expected, strict=True)]
        for (rule, key, _variables), want, state in zip(wanted, expected, applied, strict=True):
            checks.append(_compare(rule, key, want, state))
        return checks

    def _check_one(self, wanted: tuple[Rule, bytes, Any], expected: Any) -> KeyCheck:
        """One key read alone: its own error when DynamoDB refuses it (retryable failures are raised)."""
        rule, key, _variables = wanted
        try:
            (state,) = self._store.load_states([wanted])
        except (MappingError, SinkError) as exc:
            if isinstance(exc, SinkError) and exc.retryable:
                raise
            return KeyCheck(key, rule.name, -1, (), error=str(exc))
        return _compare(rule, key, expected, state)

    # -- a whole run ---------------------------------------------------------------------------------------------

    def run(self, options: VerifyOptions, stop: threading.Event | None = None,
            progress: Callable[[int, str], None] | None = None, checkpoints: VerifyCheckpoints | None = None,
            resume: bool = False, repair: Callable[[list[bytes]], int] | None = None) -> VerifyReport:
        """Verify the keys ``options`` choose; returns the report (``complete`` False when ``stop`` ended it).

        (Above 60 lines on purpose: the read loop and its two closures share the run's report, positions and
        counters, and are the only places that change them; split, they would pass all of it around.)

        With ``checkpoints`` (whole-keyspace runs), each settled chunk is saved and ``resume`` continues the
        shard's last unfinished run (see :meth:`_start`). ``repair`` re-publishes each chunk's drifted keys
        before that chunk is saved, so a resumed run never skips a repair.
        """
        stop = stop or threading.Event()
        started = time.monotonic()
        scoped = options.owner is not None or options.sample is not None
        if options.segments < 1 or options.shards < 1 or not 0 <= options.shard < options.shards:
            raise ConfigError(f"verify: shard {options.shard}/{options.shards} with {options.segments} Scan "
                              "segments: the shard must be below the shards, and both counts at least 1")
        if scoped and (checkpoints is not None or options.shards > 1):
            raise ConfigError("verify --owner/--sample check a few keys: they take no --shard or --resume")
        record = self._start(options, checkpoints, resume) if not scoped else None
        report = record.report if record is not None else VerifyReport()
        report.complete = False
        positions = record.positions if record is not None else {}
        before = (report.seconds, report.rcu, self._capacity.units if self._capacity else 0.0, report.keys_checked)
        pages = self._keyspace.scoped_pages(options) if scoped else self._keyspace.pages(options, positions, stop)
        checked = [report.keys_checked]
        lock = threading.Lock()
        limiter = RateLimiter(options.max_keys_per_second)

        def work(page: _Page, keys: list[bytes]) -> _Checked:
            result = self._check_batch(page, keys, options, limiter)
            with lock:
                checked[0] += result.part.keys_checked
                if progress:
                    progress(checked[0], f"{report.drift_keys} drifted so far")
            return result

        def save(chunk_report: VerifyReport, chunk_positions: dict[str, Any], done: bool) -> None:
            report.merge(chunk_report, options.examples)
            positions.update(chunk_positions)
            report.seconds = before[0] + time.monotonic() - started
            if self._capacity is not None:
                report.rcu = before[1] + self._capacity.units - before[2]
            report.complete = done
            if checkpoints is not None and record is not None:
                record.positions, record.report, record.updated, record.done = positions, report, time.time(), done
                checkpoints.save(record)
                rate = (report.keys_checked - before[3]) / max(1e-9, time.monotonic() - started)
                log.info("verify checkpoint", extra={"kv": {
                    "shard": f"{options.shard}/{options.shards}", "keys_checked": report.keys_checked,
                    "keys_per_second": round(rate), "drift_keys": report.drift_keys, "rcu": round(report.rcu)}})

        settled = _Settler(self, options, stop, repair, save)
        try:
            # Closing the pages ends their readers also when a worker or the settler failed: they would otherwise
            # wait on a full queue for ever, and the process would hang at exit joining them.
            with contextlib.closing(pages), ThreadPoolExecutor(max_workers=options.workers,
                                                               thread_name_prefix="verify") as pool:
                chunk, in_flight = _Chunk(), []
                for page in pages:
                    for batch in batches(page.keys, options.batch):
                        future = pool.submit(work, page, batch)
                        chunk.futures.append(future)
                        in_flight.append(future)
                        if len(in_flight) >= options.workers * 4:  # bounded: a 100M-key run must not queue every key
                            in_flight.pop(0).result()
                    chunk.positions[page.unit] = page.after
                    if time.monotonic() - chunk.started >= options.checkpoint_s:
                        settled.put(chunk)
                        chunk = _Chunk()
                    if stop.is_set():
                        break
                settled.put(chunk)
                settled.put(None)
        finally:
            settled.close()
        save(VerifyReport(), {}, not stop.is_set() and settled.ok)  # the time and capacity of the whole run
        for kind in DriftKind:
            metrics.VERIFY_DRIFT_KEYS.labels(kind=kind.value).set(report.drift[kind])
        return report

    def _start(self, options: VerifyOptions, checkpoints: VerifyCheckpoints | None, resume: bool,
               ) -> ShardRecord | None:
        """The shard's record to continue (resume), or a new one saved now so `--report` sees the run started.

        Only an unfinished record of the same run, rules and Redis nodes is continued: a finished one means a
        new run (a Job run again after a repair must read again, not reprint), and positions under other globs
        or nodes (the rules changed, a failover renamed a primary) would skip or repeat keys.
        """
        now = time.time()
        layout = self._keyspace.layout()
        fresh = ShardRecord(options.shard, options.shards, options.segments, {}, VerifyReport(complete=False), now,
                            now, run=options.run, layout=layout)
        if checkpoints is None:
            return fresh
        record = checkpoints.load(options.shard, options.shards) if resume else None
        if record is not None:
            why = ("it finished" if record.done else f"it belongs to run {record.run!r}" if record.run != options.run
                   else "the rules or the Redis nodes changed" if record.layout != layout
                   else f"it used {record.segments} Scan segments" if record.segments != options.segments else "")
            log.info("verify " + (f"starting over: the saved run is not continued ({why})" if why else "resuming"),
                     extra={"kv": {"shard": f"{options.shard}/{options.shards}",
                                   "keys_checked": record.report.keys_checked}})
            if not why:
                return record
        checkpoints.save(fresh)
        return fresh

    def _check_batch(self, page: _Page, keys: list[bytes], options: VerifyOptions, limiter: RateLimiter) -> _Checked:
        part = VerifyReport()
        if page.from_dynamodb:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            keys = [key for key, exists in zip(keys, pipe.execute(), strict=True) if not exists]
        kept = keys
        if options.owners is not None:
            keep, owner_of = options.owners, self._rules.owner_of
            kept = [k for k in keys if keep(owner_of(k) or k)]
        part.skipped = len(keys) - len(kept)
        limiter.take(len(kept))
        candidates = []
        for c in self.check(kept) if kept else []:
            part.keys_checked += 1
            if c.error:
                part.add_error(f"{c.key!r}: {c.error}")
            elif c.differences:
                candidates.append(c)
        return _Checked(part, candidates)

    def settle(self, candidates: list[KeyCheck], options: VerifyOptions, stop: threading.Event | None,
               ) -> tuple[list[KeyCheck], list[KeyCheck]]:
        """Re-check differing keys: (drifted, still unsettled); see :class:`_Rechecks`."""
        return self._rechecks.settle(candidates, options, stop)

    # -- what a run will cost -----------------------------------------------------------------------------------

    def estimate(self, options: VerifyOptions, plan: MigrationPlan, max_rcu: float | None = None,
                 sample: int = 1_000) -> VerifyCost:
        """The cost of verifying the keyspace ``plan`` describes (tools/plan.py: items and sizes through the rules),
        at the rate measured here and now by checking the first ``sample`` keys SCAN finds with ``workers`` threads
        (capped by the key rate asked for)."""
        keys = list(itertools.islice(captured_keys(self._redis, self._rules), sample))
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="verify-probe") as pool:
            checked = sum(len(checks) for checks in pool.map(self.check, batches(keys, options.batch)))
        rate = checked / max(1e-6, time.monotonic() - started) if checked else 1.0
        if options.max_keys_per_second:
            rate = min(rate, options.max_keys_per_second)
        collection_tables = {r.table for r in self._rules.rules if r.is_collection}
        singles = [t for name, t in plan.tables.items() if name not in collection_tables]
        collections = [t for name, t in plan.tables.items() if name in collection_tables]
        single_items, single_bytes = sum(t.items for t in singles), sum(t.bytes for t in singles)
        return verify_cost(plan.redis_keys, sum(t.read_units for t in singles), plan.state_items,
                           sum(t.bytes for t in collections), single_items + plan.state_items,
                           single_bytes + plan.state_items * _HEAD_BYTES, rate, options.shards, max_rcu)


class _Rechecks:
    """Differing keys checked again, after the appliers caught up, until they match, stay still (drift) or run out
    of rechecks (unsettled)."""

    def __init__(self, check: Callable[[list[bytes]], list[KeyCheck]], progress: GroupProgress | None) -> None:
        self.check = check
        self._progress = progress

    def settle(self, candidates: list[KeyCheck], options: VerifyOptions, stop: threading.Event | None,
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
            again = {c.key: c for batch in batches([c.key for c in candidates], options.batch)
                     for c in self.check(batch)}
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


class _Keyspace:
    """Which keys a run checks, as pages: every primary's SCAN and the live keys of DynamoDB's Scan segments (a
    shard's share of both), or one owner's keys, or a sample; with the positions a checkpoint saves."""

    def __init__(self, client: Client, store: DynamoStore, rules: RuleSet, node: str) -> None:
        self._redis, self._store, self._rules, self._node = client, store, rules, node

    def nodes(self) -> list[tuple[str, Any]]:
        return nodes(self._redis, self._node)

    def layout(self) -> str:
        """What saved positions mean: the globs scanned, in order, and the Redis nodes they were scanned on."""
        globs = [base64.b64encode(g).decode() for g in self._rules.globs()]
        return json.dumps({"globs": globs, "nodes": sorted(name for name, _conn in self.nodes())})

    # -- which keys ----------------------------------------------------------------------------------------------

    def scoped_pages(self, options: VerifyOptions) -> Iterator[_Page]:
        keys = (_unique(self._owner_keys(options.owner)) if options.owner is not None
                else iter(sample_keys(self._redis, self._rules, options.sample or 0)))
        for batch in batches(keys, _SCAN_COUNT):
            yield _Page("keys", None, batch, from_dynamodb=False)

    def pages(self, options: VerifyOptions, positions: dict[str, Any], stop: threading.Event) -> Iterator[_Page]:
        """Every captured key of this shard in Redis (each primary's SCAN), and every key DynamoDB holds live in
        this shard's Scan segments, from the saved positions on; the units are read side by side."""
        units: list[tuple[str, Callable[[Any], Iterator[_Page]]]] = []
        for name, conn in self.nodes():
            units.append((f"redis:{name}", lambda at, unit=f"redis:{name}", conn=conn:
                          self._redis_pages(unit, conn, at, options)))
        total = options.shards * options.segments
        for source in source_tables(self._rules):
            for segment in range(options.shard, total, options.shards):
                unit = f"dynamodb:{source.name if source else '(heads)'}:{segment}/{total}"
                units.append((unit, lambda at, unit=unit, source=source, segment=segment:
                              self._dynamodb_pages(unit, source, segment, total, at)))
        todo = [(unit, pages) for unit, pages in units if positions.get(unit) != DONE]
        yield from _side_by_side([lambda unit=unit, pages=pages: pages(positions.get(unit)) for unit, pages in todo],
                                 max(1, min(len(todo), options.workers)), stop)

    def _redis_pages(self, unit: str, conn: Any, at: Any, options: VerifyOptions) -> Iterator[_Page]:
        globs = self._rules.globs()
        index, cursor = (at["glob"], at["cursor"]) if at else (0, 0)
        owner_of, rules = self._rules.owner_of, self._rules
        while index < len(globs):
            cursor, found = conn.scan(cursor=cursor, match=globs[index], count=_SCAN_COUNT)
            # A key two globs match (user:* and user:*:cart) is counted under its own rule's glob only.
            keys = [k for k in found if (m := rules.match(k)) is not None
                    and (len(globs) == 1 or m[0].pattern.glob() == globs[index])]
            if options.shards > 1:
                keys = [k for k in keys if in_shard(owner_of(k) or k, options.shard, options.shards)]
            if cursor == 0:
                index += 1
            after = DONE if index >= len(globs) else {"glob": index, "cursor": cursor}
            yield _Page(unit, after, keys, from_dynamodb=False)

    def _dynamodb_pages(self, unit: str, source: Rule | None, segment: int, total: int, at: Any) -> Iterator[_Page]:
        start = _decode_key(at["start"]) if at else None
        match = self._rules.match
        for keys, after in self._store.live_source_key_pages(self._rules, source, segment, total, start):
            # A key is checked from the source its rule keeps it in (heads for collections, its own table for a
            # single-item rule): items left under another rule's source would check it twice.
            keys = [k for k in keys if (m := match(k)) is not None
                    and (m[0] is source if source is not None else m[0].is_collection)]
            yield _Page(unit, {"start": _encode_key(after)} if after else DONE, keys, from_dynamodb=True)

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


class _Settler:
    """Settles chunks in the order they were read, on a thread of its own so reading goes on meanwhile; each
    settled chunk is repaired (if asked) and then saved. A chunk that ``stop`` interrupted is not saved: a resumed
    run reads it again. At most two chunks wait, so reading never runs far ahead of what is saved."""

    def __init__(self, verifier: Verifier, options: VerifyOptions, stop: threading.Event,
                 repair: Callable[[list[bytes]], int] | None,
                 save: Callable[[VerifyReport, dict[str, Any], bool], None]) -> None:
        self._verifier, self._options, self._stop = verifier, options, stop
        self._repair, self._save = repair, save
        self._chunks: queue.Queue[_Chunk | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self.ok = True
        self._thread = threading.Thread(target=self._run, name="verify-settle", daemon=True)
        self._thread.start()

    def put(self, chunk: _Chunk | None) -> None:
        while self._thread.is_alive():
            try:
                self._chunks.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue
        self._raise()

    def close(self) -> None:
        """Let the thread end (also when reading failed before the last chunk) and raise what failed on it."""
        self.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (chunk := self._chunks.get()) is not None:
                part = VerifyReport()
                candidates: list[KeyCheck] = []
                for future in chunk.futures:
                    checked = future.result()
                    part.merge(checked.part, self._options.examples)
                    candidates += checked.candidates
                drifted, unsettled = self._verifier.settle(candidates, self._options, self._stop)
                if self._stop.is_set():
                    self.ok = False
                    return  # interrupted: this chunk is read again on resume
                for check in drifted:
                    part.add_drifted(check.key, check.rule, check.differences, self._options.examples)
                for check in unsettled:
                    part.add_unsettled(check.key)
                if self._repair is not None and drifted:
                    part.repaired = self._repair([c.key for c in drifted])
                self._save(part, chunk.positions, False)
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._error, self.ok = exc, False
            self._stop.set()


def _compare(rule: Rule, key: bytes, expected: Any, state: Any) -> KeyCheck:
    ttl_attr = "expire_at" if rule.is_mirror else ""
    differences = compare_items(expected, state.items, ttl_attr)
    return KeyCheck(key, rule.name, state.version, tuple(differences), ttl_attr=ttl_attr)


def _side_by_side(units: list[Callable[[], Iterator[_Page]]], threads: int, stop: threading.Event,
                  ) -> Iterator[_Page]:
    """The pages of ``units``, read by ``threads`` threads at a time, as they come (each unit's in order)."""
    pages: queue.Queue[_Page | BaseException | None] = queue.Queue(maxsize=2 * threads)
    closed = threading.Event()  # the consumer went away (it failed, or stopped): readers end too

    def put(item: _Page | BaseException | None, give_up: Callable[[], bool]) -> bool:
        """Queue ``item`` unless ``give_up`` first; whether it was queued."""
        while not give_up():
            try:
                pages.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def read(unit: Callable[[], Iterator[_Page]]) -> None:
        try:
            for page in unit():
                if not put(page, lambda: stop.is_set() or closed.is_set()):
                    return
        except BaseException as exc:  # raised on the consuming thread
            put(exc, closed.is_set)
        finally:
            put(None, closed.is_set)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verify-read") as pool:
        try:
            for unit in units:
                pool.submit(read, unit)
            left = len(units)
            while left:
                try:
                    item = pages.get(timeout=0.5)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if item is None:
                    left -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            closed.set()


def _encode_key(key: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB key (wire form) as JSON: binary values in base64."""
    return {a: {t: base64.b64encode(bytes(v)).decode() if t == "B" else v for t, v in typed.items()}
            for a, typed in key.items()}


def _decode_key(key: dict[str, Any]) -> dict[str, Any]:
    return {a: {t: base64.b64decode(v) if t == "B" else v for t, v in typed.items()} for a, typed in key.items()}


def _unique(keys: Iterable[bytes]) -> Iterator[bytes]:
    seen: set[bytes] = set()
    for key in keys:
        if key not in seen:
            seen.add(key)
            yield key


def report_json(report: VerifyReport) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=True)
