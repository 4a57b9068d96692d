"""``DynamoRedis``: a redis-py client whose data lives in DynamoDB, through the replicator's own mapping rules.

After cutover the application swaps ``redis.Redis(...)`` for ``DynamoRedis.from_config("replicator.yaml")`` and
changes nothing else: the methods, arguments, defaults and return types are redis-py's (the class inherits them,
see :mod:`replicator.adapters.redis.shaped`), and each command is evaluated by the same pure Redis semantics the
suite checks against a real Redis (:mod:`replicator.core.commands`) on the values DynamoDB holds for its keys.

How one command (or one pipeline) runs:

1. Its keys are matched to rules, as the listener matches them. A key no rule maps is an error naming it.
2. Each key is read, strongly consistent: single-item keys (the default mirror, string rules) by BatchGetItem, 100
   a call; a collection key (hash, set, sorted set rules) by one Query of its partition; the versions come along.
3. The commands run in order on those values, as Redis would run them; an expired key is absent whether or not
   DynamoDB's TTL sweeper has removed its item yet.
4. What changed is planned into item writes by the applier's own planner, with a *native version* (2^60 + µs,
   above every replicated version: no late event, replay, repair or re-snapshot can undo it), each write
   compare-and-set on the version read. They go as one TransactWriteItems when they fit (100 items): either all
   of it is written or none, and when another client wrote one of those items first, the keys are read again and
   the commands run again, so concurrent read-modify-writes (INCR, HINCRBY, ZINCRBY, LPUSH) lose nothing.

What is not atomic, and what a crash leaves: a command or pipeline changing more than 100 items (a DEL of a large
sorted set under a rule, a ZADD of hundreds of members, a mirror value above the item limit, which is written in
parts) is written in steps; a crash between steps leaves the first steps written and the key's other items as
they were. Running the command again converges (the commands that may be that large set states: DEL, ZADD,
ZREM, ZREMRANGEBYSCORE, HSET, SADD, SREM); its reply then counts only what the second run changed. Below that
size, a DEL of several keys and a whole pipeline are one transaction each.

A command a key's rule cannot hold (a hash command on a key a sorted-set rule maps, a TTL on a key only rules map)
is an error: Redis' WRONGTYPE text, or one line naming the rule; never a wrong answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from redis.commands.core import DataAccessCommands

from replicator import metrics, retry
from replicator.adapters.dynamodb.calls import make_client
from replicator.adapters.dynamodb.native import NativeStore
from replicator.adapters.kafka.offsets import GroupOffsets
from replicator.adapters.redis.shaped import RedisShaped
from replicator.core import commands
from replicator.core.commands import Entry, Error
from replicator.core.config import Config
from replicator.core.errors import MappingError, ReplicatorError, SinkError
from replicator.core.mapping import Head, ItemWrite, Rule, RuleKind, RuleSet, render_attr
from replicator.core.native import (
    NATIVE_BASE,
    CannotAnswer,
    Cas,
    Stored,
    check_answerable,
    entry_of,
    is_native,
    native_version,
    native_writes,
)
from replicator.core.values import ItemKey
from replicator.core.watermark import GroupProgress, Watermark
from replicator.loading import load_config

log = logging.getLogger(__name__)

#: Another client changed what a command read: read again and run it again (bounded: a hot key under contention
#: still answers, or the caller gets redis-py's TryAgainError to retry itself).
CONFLICT = retry.Policy("native_write_conflict", "another client changed the key first; running the command again",
                        base_s=0.002, cap_s=0.2, retries=50, level=10)


class ItemStore(Protocol):
    """What DynamoRedis needs of DynamoDB (adapters.dynamodb.native.NativeStore): read a key's items with their
    versions, in whole or in part, and commit compare-and-set writes."""

    def single_keys(self, rule: Rule, key: bytes, variables: Mapping[str, bytes]) -> dict[str, Any]: ...

    def stored_items(self, wanted: Sequence[tuple[Rule, bytes, dict[str, Any]]]
                     ) -> list[tuple[ItemKey, Stored] | None]: ...

    def stored_collection(self, rule: Rule, key: bytes, variables: Mapping[str, bytes]) -> dict[ItemKey, Stored]: ...

    def stored_top(self, rule: Rule, key: bytes, variables: Mapping[str, bytes], index: str, score_attr: str,
                   count: int, descending: bool) -> dict[ItemKey, Stored]: ...

    def head_versions(self, keys: Sequence[tuple[str, bytes]]) -> list[int]: ...

    def commit(self, writes: Sequence[tuple[ItemWrite, Cas]], heads: Sequence[Head],
               in_steps: bool = False) -> bool | None: ...


class DynamoUnavailable(redis.exceptions.ConnectionError, ReplicatorError):
    """DynamoDB did not answer (throttled past the retries, unreachable, access denied): a redis-py
    ``ConnectionError`` to the application, so its existing handling of an unavailable Redis applies."""


@dataclass
class _Key:
    """One key of a round: its rule, what DynamoDB holds for it and its value now."""

    rule: Rule
    variables: dict[str, bytes]
    stored: dict[ItemKey, Stored]
    head: int = -1
    loaded: Entry | None = None
    value: Entry | None = None
    #: A command of this round changed it (perhaps back to what was loaded: still written, see _commit).
    changed: bool = False
    #: Why its items cannot be read back as a Redis value (the rule keeps too little), if so.
    unanswerable: str | None = None

    @property
    def native(self) -> bool:
        """Whether the application's writes own the key already (its head, or its one item, has a native
        version): no replicated event can change it any more."""
        if self.rule.is_collection:
            return is_native(self.head)
        return any(s.version is not None and is_native(s.version) for s in self.stored.values())


class DynamoRedis(RedisShaped):
    """Redis commands answered from and written to DynamoDB through the rules (see the module docstring).

    Thread-safe: share one per process like a ``redis.Redis``.
    """

    def __init__(self, store: ItemStore, rules: RuleSet) -> None:
        self._rules = rules
        self._store = store
        self._lock = threading.Lock()
        self._newest = 0  # the newest version this client saw or wrote: its next one is above it

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | Config, client: Any = None) -> DynamoRedis:
        """From the replicator's config (a YAML path, with the same ``REPLICATOR_*`` overrides, or a loaded one),
        with a boto3 DynamoDB client of the application's own, or one made from the config's ``dynamodb``."""
        loaded = config if isinstance(config, Config) else load_config(config)
        rules = loaded.rule_set
        store = NativeStore(client or make_client(loaded.dynamodb), rules, loaded.tombstones,
                            loaded.dynamodb.state_table)
        return cls(store, rules)

    # -- RedisShaped ---------------------------------------------------------------------------------------------

    def run_many(self, batch: list[list[bytes]]) -> list[Any]:
        try:
            return self._run(batch)
        except SinkError as exc:
            if exc.retryable:
                raise DynamoUnavailable(str(exc)) from None
            # A missing table, access denied: the deployment's fault, worded as one line.
            raise redis.exceptions.ResponseError(f"DynamoDB refused: {exc}") from None

    def _run(self, batch: list[list[bytes]]) -> list[Any]:
        backoff = retry.Backoff(CONFLICT)
        while True:
            writing = any(commands.writes(a) for a in batch)
            keys = self._load({k for args in batch if commands.known(args[0].decode("latin-1"))
                               for k in commands.keys_of(args)}, heads=writing,
                              narrow=None if writing else narrow_reads(batch))
            replies = [self._evaluate(args, keys) for args in batch]
            outcome = self._commit(keys)
            if outcome is True:
                return replies
            if outcome is None:  # too many items for one transaction: each command on its own
                return [self._run([args])[0] for args in batch] if len(batch) > 1 else self._force(batch, keys)
            if not backoff.wait("conflict"):
                raise redis.exceptions.TryAgainError(
                    f"TRYAGAIN the keys of {batch[0][0].decode('latin-1')} kept changing under concurrent writers")

    def _force(self, batch: list[list[bytes]], keys: dict[bytes, _Key | Error]) -> list[Any]:
        """One command too large for a transaction: written in steps (see the module docstring). ``keys`` as loaded:
        the command is evaluated again from them (its first evaluation only found it too large)."""
        backoff = retry.Backoff(CONFLICT)
        while True:
            for key in keys.values():
                if isinstance(key, _Key):
                    key.value, key.changed = key.loaded, False
            replies = [self._evaluate(args, keys) for args in batch]
            if self._commit(keys, steps=True):
                return replies
            if not backoff.wait("conflict"):
                raise redis.exceptions.TryAgainError("TRYAGAIN keys kept changing under concurrent writers")
            keys = self._load(set(keys), heads=True)

    # -- reading -------------------------------------------------------------------------------------------------

    def _load(self, names: set[bytes], heads: bool,
              narrow: Mapping[bytes, _Narrow] | None = None) -> dict[bytes, _Key | Error]:
        """The keys' rules, stored items and values; with ``heads``, the collection keys' head versions too (a
        write's version must be above them; a read does not need them). A key in ``narrow`` (read-only rounds) is
        read in part: the named elements' items, or the top of a sorted set from its score index."""
        narrow = narrow or {}
        keys: dict[bytes, _Key | Error] = {}
        wanted: list[tuple[Rule, bytes, dict[str, Any]]] = []
        collections: list[bytes] = []
        for name in sorted(names):
            matched = self._rules.match(name)
            if matched is None:
                keys[name] = Error(f"ERR no rule of the replicator maps key {name[:100]!r} (and there is no default "
                                   "mirror): add a rule or a default table")
                continue
            rule, variables = matched
            key = keys[name] = _Key(rule, variables, {})
            if not rule.is_collection:
                wanted.append((rule, name, self._store.single_keys(rule, name, variables)))
            elif name in narrow and narrow[name].elements is not None:
                items = _element_keys(rule, name, variables, narrow[name].elements)
                if items is None:
                    collections.append(name)
                else:
                    wanted += [(rule, name, item) for item in items]
            elif name in narrow and narrow[name].top is not None:
                count, descending = narrow[name].top  # type: ignore[misc]
                index = _score_index(self._rules, rule)
                if index is None:
                    collections.append(name)
                else:
                    key.stored = self._store.stored_top(rule, name, variables, *index, count, descending)
            else:
                collections.append(name)
        for (_rule, name, _item), found in zip(wanted, self._store.stored_items(wanted), strict=True):
            if found is not None:
                keys[name].stored[found[0]] = found[1]  # type: ignore[union-attr]
        heads_of = [(k.rule.name, n) for n in collections if isinstance(k := keys[n], _Key)]
        versions = self._store.head_versions(heads_of) if heads else [-1] * len(collections)
        for name, head in zip(collections, versions, strict=True):
            key = keys[name]
            assert isinstance(key, _Key)
            key.stored, key.head = self._store.stored_collection(key.rule, name, key.variables), head
        for key in keys.values():
            if isinstance(key, _Key):
                try:
                    key.loaded = key.value = entry_of(key.rule, key.stored)
                except CannotAnswer as exc:
                    key.unanswerable = str(exc)
        return keys

    # -- running -------------------------------------------------------------------------------------------------

    def _evaluate(self, args: list[bytes], keys: dict[bytes, _Key | Error]) -> Any:
        named = commands.keys_of(args)
        for name in named:
            key = keys.get(name)
            if isinstance(key, Error):
                return key
            if key is not None and key.unanswerable:
                return Error(f"ERR {key.unanswerable}")
        now_ms = int(time.time() * 1000)
        command = args[0].decode("latin-1").upper() if args else ""
        if command in ("TTL", "PTTL", "PERSIST", "EXPIRE", "PEXPIRE") and named:
            key = keys[named[0]]
            if isinstance(key, _Key) and not key.rule.is_mirror:
                return Error(f"ERR rule {key.rule.name!r} keeps no TTL: {command} is answered only for keys of the "
                             "default mirror")
        reply, changed = commands.execute(args, {n: k.value for n, k in keys.items() if isinstance(k, _Key)},
                                          now_ms)
        if isinstance(reply, Error):
            return reply
        for name, entry in changed.items():
            key = keys[name]
            assert isinstance(key, _Key)
            try:
                check_answerable(key.rule, entry, command)
                # Planned now to refuse what the rule's attributes cannot hold (a non-UTF-8 member of an S key,
                # an infinite score in an N attribute), as the applier would dead-letter it; planned again at commit.
                native_writes(self._rules, key.rule, key.variables, name, entry, key.stored, NATIVE_BASE, key.value)
            except MappingError as exc:
                text = str(exc)
                return Error(text if text.startswith("WRONGTYPE") else f"ERR {text}")
        for name, entry in changed.items():
            key = keys[name]
            assert isinstance(key, _Key)
            key.value = entry
            key.changed = True
        return reply

    # -- writing -------------------------------------------------------------------------------------------------

    def _commit(self, keys: dict[bytes, _Key | Error], steps: bool = False) -> bool | None:
        """Write what changed. True: written (or nothing to write); False: a conflict, nothing written when it was
        one transaction; None: too large for one transaction and ``steps`` not allowed."""
        # A command that set a value equal to the stored one still writes while the stored versions are replicated:
        # the application's write must own the key, or a late replicated event could change it after all.
        dirty = {n: k for n, k in keys.items() if isinstance(k, _Key) and k.changed
                 and (k.value != k.loaded or not k.native)}
        if not dirty:
            return True
        version = self._next_version(dirty.values())
        writes: list[tuple[ItemWrite, Cas]] = []
        heads: list[Head] = []
        for name, key in dirty.items():
            writes += native_writes(self._rules, key.rule, key.variables, name, key.value, key.stored, version,
                                    key.loaded)
            if key.rule.is_collection:
                heads.append(Head(key.rule, name, version, key.value is None))
        return self._store.commit(writes, heads, in_steps=steps)

    def _next_version(self, keys: Iterable[_Key]) -> int:
        seen = 0
        for key in keys:
            seen = max(seen, key.head, *(s.version or 0 for s in key.stored.values()))
        with self._lock:
            self._newest = native_version(time.time_ns() // 1000, max(self._newest, seen))
            return self._newest


# --------------------------------------------------------------------------------------------------------------------
# Reading less: what a read-only round needs of a collection key


@dataclass
class _Narrow:
    """The part of a collection key a read-only round needs: named elements, or the first ``top[0]`` members by
    score (``top[1]``: highest first)."""

    elements: set[bytes] | None = None
    top: tuple[int, bool] | None = None


#: Commands that read named elements only: their element arguments start at args[2].
_ELEMENT_READS = {"ZSCORE", "ZMSCORE", "HGET", "HMGET", "HEXISTS", "SISMEMBER", "SMISMEMBER"}
#: The placeholder that names an element in a rule's items, by rule type.
_ELEMENT = {RuleKind.HASH: "field", RuleKind.SET: "member", RuleKind.ZSET: "member"}


def narrow_reads(batch: Sequence[list[bytes]]) -> dict[bytes, _Narrow]:
    """Per key, the part of it every command of a read-only batch needs; keys needed whole are left out."""
    found: dict[bytes, _Narrow] = {}
    whole: set[bytes] = set()
    for args in batch:
        command = args[0].decode("latin-1").upper()
        named = commands.keys_of(args)
        top = _top_of(command, args)
        if command in _ELEMENT_READS and len(args) > 2:
            part = found.setdefault(args[1], _Narrow())
            if part.top is not None:
                whole.add(args[1])
            part.elements = (part.elements or set()) | set(args[2:])
        elif top is not None:
            part = found.setdefault(args[1], _Narrow())
            if part.elements is not None or (part.top is not None and part.top[1] != top[1]):
                whole.add(args[1])
            part.top = (max(top[0], part.top[0] if part.top else 0), top[1])
        else:
            whole.update(named)
    return {k: v for k, v in found.items() if k not in whole}


def _top_of(command: str, args: Sequence[bytes]) -> tuple[int, bool] | None:
    """(members needed, highest first) of a rank range from the top: ZREVRANGE/ZRANGE k start stop with
    0 <= start <= stop and no option but WITHSCORES (and REV for ZRANGE)."""
    if command not in ("ZRANGE", "ZREVRANGE") or len(args) < 4:
        return None
    options = {a.upper() for a in args[4:]}
    allowed = {b"WITHSCORES"} | ({b"REV"} if command == "ZRANGE" else set())
    if not options <= allowed or len(options) != len(args) - 4:
        return None
    try:
        start, stop = int(args[2]), int(args[3])
    except ValueError:
        return None
    if not 0 <= start <= stop or stop > 10_000:
        return None
    return stop + 1, command == "ZREVRANGE" or b"REV" in options


def _element_keys(rule: Rule, key: bytes, variables: Mapping[str, bytes],
                  elements: set[bytes]) -> list[dict[str, Any]] | None:
    """The DynamoDB keys of the named elements' items; None when the item key needs more than the element (a
    sort key rendered from the score, say): then the key is read whole. An element the key attributes cannot
    hold (not UTF-8 for a string key) has no item: it is left out, and reads as absent."""
    name = _ELEMENT.get(rule.type)
    if name is None or any(p not in {*variables, "key", name} for a in rule.key_attrs
                           for p in rule.item[a].placeholders):
        return None
    keys = []
    for element in elements:
        values = {**variables, "key": key, name: element}
        try:
            keys.append({a: render_attr(rule, a, values, key).wire() for a in rule.key_attrs})
        except MappingError:
            continue
    return keys


def _score_index(rules: RuleSet, rule: Rule) -> tuple[str, str] | None:
    """(index, attribute) of an LSI ordering a sorted-set rule's items by score: on an attribute that is exactly
    ``{score}`` and typed N (a string attribute would order "10" before "9")."""
    score_attr = next((a for a, t in rule.item.items() if t.single == "score"), None)
    if score_attr is None or rule.type is not RuleKind.ZSET:
        return None
    for index, (attr, attr_type) in rules.tables[rule.table].lsi.items():
        if attr == score_attr and attr_type == "N":
            return index, attr
    return None


# --------------------------------------------------------------------------------------------------------------------
# Shadow reads: Redis answers, DynamoDB is compared


#: Answers whose order Redis does not define (a hash's or set's order follows its encoding): compared sorted.
_UNORDERED = {"HKEYS", "HVALS"}


@dataclass
class _Pending:
    """A difference waiting for the appliers to pass the Redis state it was read at."""

    args: tuple[Any, ...]
    options: dict[str, Any]
    redis_answer: Any
    watermark: Watermark | None
    noted: float = field(default_factory=time.monotonic)
    attempts: int = 1
    still: int = 0  # rechecks in a row that found Redis unchanged and DynamoDB still different
    #: Note a new watermark once ``time.monotonic()`` passes this (then wait for it), rather than now.
    renote_at: float | None = None


class ShadowRedis(RedisShaped):
    """Answers every command from Redis; answers reads from DynamoDB too and compares them (the step between
    replicating and switching). Writes go to Redis only. DynamoDB's failures never reach the application.

    A difference is not a mismatch yet: the appliers may be behind. It is noted with the change topic's end offsets
    (the watermark: every change Redis had when it was read is in the topic below them) and checked again once the
    applier group has committed past them: if the command then answers the same in both stores it was lag
    (``result="lag"``); if Redis still answers what it answered and DynamoDB still differs, twice in a row (the
    second time from a watermark noted at least ``settle_s`` after the difference was seen: the listener may not yet
    have published the change when the first was noted, and a producer stalled for a moment -- a broker electing a
    leader, a coordinator loading -- holds it back for longer than the milliseconds capture takes), DynamoDB is
    wrong (``result="mismatch"``, logged as a sample with the key and both answers cut short); if Redis moved on
    meanwhile, it is checked again from a new watermark (``result="unsettled"`` after ``rechecks``). Without the
    group's progress (no Kafka access), a difference is checked again after ``settle_s`` instead, which appliers
    lagging by longer can fool.

    Counts ``replicator_shadow_reads_total{command, result=match|mismatch|lag|unsettled|error}``.
    """

    def __init__(self, redis_client: Any, dynamo: RedisShaped, progress: GroupProgress | None = None,
                 settle_s: float = 1.0, rechecks: int = 3, catch_up_s: float = 300.0) -> None:
        self._redis = redis_client
        self._dynamo = dynamo
        self._progress = progress
        self._settle_s, self._rechecks, self._catch_up_s = settle_s, rechecks, catch_up_s
        self._pending: list[_Pending] = []
        self._outstanding = 0  # noted and not counted yet (some may be out of the list while being checked)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._checker: threading.Thread | None = None
        self._last_sample = 0.0
        #: This client's results so far, (command, result) -> count (the metric sums every client of the process).
        self.tallies: Counter[tuple[str, str]] = Counter()

    @classmethod
    def from_config(cls, redis_client: Any, config: str | os.PathLike[str] | Config,
                    dynamo: RedisShaped | None = None) -> ShadowRedis:
        """Redis as it is, DynamoDB (unless given) and the applier group's progress from the replicator's
        config."""
        loaded = config if isinstance(config, Config) else load_config(config)
        try:
            progress: GroupProgress | None = GroupOffsets(loaded.kafka, loaded.kafka.topic, loaded.kafka.group_id)
        except ReplicatorError as exc:
            log.warning("shadow reads without the appliers' progress: differences settle by time only",
                        extra={"kv": {"error": str(exc)}})
            progress = None
        return cls(redis_client, dynamo or DynamoRedis.from_config(loaded), progress)

    # -- the application's calls ---------------------------------------------------------------------------------

    def execute_command(self, *args: Any, **options: Any) -> Any:
        answer = self._redis.execute_command(*args, **options)
        self._shadow([(args, options, answer)])
        return answer

    def pipeline(self, transaction: bool = False, shard_hint: Any = None) -> _ShadowPipeline:
        return _ShadowPipeline(self, transaction)

    def _shadow(self, calls: list[tuple[tuple[Any, ...], dict[str, Any], Any]]) -> None:
        """Compare the reads among ``calls`` (args, options, Redis' answer) with DynamoDB's answers, in one round."""
        reads = [(a, o, ans) for a, o, ans in calls if _is_read(a)]
        if not reads:
            return
        answers = self._dynamo_answers([(a, o) for a, o, _ans in reads])
        for (args, options, answer), theirs in zip(reads, answers, strict=True):
            command = str(args[0]).upper()
            if isinstance(theirs, Exception):
                self._count(command, "error")
                log.warning("shadow read failed", extra={"kv": {"command": command, "error": str(theirs)[:200]}})
            elif _same_answer(command, answer, theirs):
                self._count(command, "match")
            else:
                self._note(args, options, answer)

    def _dynamo_answers(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        pipe = self._dynamo.pipeline()
        for args, options in calls:
            pipe.execute_command(*args, **options)
        try:
            return pipe.execute(raise_on_error=False)
        except Exception as exc:  # DynamoDB away: every one of them is an error, none reaches the application
            return [exc] * len(calls)

    # -- differences ---------------------------------------------------------------------------------------------

    def _note(self, args: tuple[Any, ...], options: dict[str, Any], answer: Any) -> None:
        watermark = self._watermark()
        with self._lock:
            self._pending.append(_Pending(args, options, answer, watermark))
            self._outstanding += 1
            if self._checker is None:
                self._checker = threading.Thread(target=self._check_loop, name="shadow-reads", daemon=True)
                self._checker.start()
        self._wake.set()

    def _watermark(self) -> Watermark | None:
        if self._progress is None:
            return None
        try:
            return Watermark(self._progress.end())
        except ReplicatorError as exc:
            log.warning("shadow reads cannot read the change topic's offsets", extra={"kv": {"error": str(exc)}})
            return None

    def pending(self) -> int:
        """Differences still waiting for the appliers (tests and shutdown wait for 0)."""
        with self._lock:
            return self._outstanding

    def _check_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._check_due()
            except Exception as exc:  # never let the checker die: the application keeps calling
                log.warning("shadow read check failed", extra={"kv": {"error": str(exc)[:200]}})

    def _check_due(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        committed = None
        if self._progress is not None:
            try:
                committed = self._progress.committed()
            except ReplicatorError:
                committed = None
        keep = []
        for item in pending:
            if not self._due(item, committed):
                keep.append(item)
                continue
            try:
                answer = self._redis.execute_command(*item.args, **item.options)
            except Exception as exc:  # Redis away for a moment: check it again next round
                log.warning("shadow read recheck failed", extra={"kv": {"error": str(exc)[:200]}})
                keep.append(item)
                continue
            (theirs,) = self._dynamo_answers([(item.args, item.options)])
            command = str(item.args[0]).upper()
            if isinstance(theirs, Exception):
                self._count(command, "error")
            elif _same_answer(command, answer, theirs):
                self._count(command, "lag")
            elif _same_answer(command, answer, item.redis_answer) and item.still:
                self._count(command, "mismatch")
                self._sample(item.args, answer, theirs)
            elif _same_answer(command, answer, item.redis_answer):
                # Still once: the listener may not have published the change when the watermark was noted (its
                # capture is milliseconds behind Redis, its producer may stall for a moment); a second watermark,
                # noted settle_s after the difference was seen, is past it.
                keep.append(_Pending(item.args, item.options, answer, None, noted=item.noted,
                                     attempts=item.attempts, still=1, renote_at=item.noted + self._settle_s))
            elif item.attempts >= self._rechecks:
                self._count(command, "unsettled")
            else:
                keep.append(_Pending(item.args, item.options, answer, self._watermark(), attempts=item.attempts + 1))
        with self._lock:
            self._outstanding -= len(pending) - len(keep)
            self._pending = keep + self._pending

    def _due(self, item: _Pending, committed: Mapping[int, int | None] | None) -> bool:
        """Whether the appliers have passed the item's watermark (or, without one, it has settled), or waiting
        longer is pointless (appliers stopped: the stores then really differ)."""
        if item.renote_at is not None:
            if time.monotonic() < item.renote_at:
                return False
            item.watermark, item.renote_at = self._watermark(), None
            item.noted = time.monotonic()
            return False
        waited = time.monotonic() - item.noted
        if item.watermark is None or committed is None:
            return waited >= self._settle_s
        return item.watermark.remaining(committed) == 0 or waited >= self._catch_up_s

    def _sample(self, args: tuple[Any, ...], ours: Any, theirs: Any) -> None:
        """At most one line a second: the key and both answers, cut short."""
        now = time.monotonic()
        if now - self._last_sample < 1.0:
            return
        self._last_sample = now
        key = args[1] if len(args) > 1 else b""
        shown = key[:100].decode("utf-8", "replace") if isinstance(key, bytes) else str(key)[:100]
        log.warning("shadow read mismatch", extra={"kv": {"command": str(args[0]).upper(), "key": shown,
                                                          "redis": repr(ours)[:200], "dynamodb": repr(theirs)[:200]}})

    def _count(self, command: str, result: str) -> None:
        metrics.SHADOW_READS.labels(command=command.lower(), result=result).inc()
        with self._lock:
            self.tallies[(command.lower(), result)] += 1

    def close(self) -> None:
        """Stop checking differences (those still pending are dropped uncounted)."""
        self._stop.set()
        self._wake.set()
        if self._checker is not None:
            self._checker.join(5)


class _ShadowPipeline(DataAccessCommands):  # type: ignore[misc]
    """A redis-py pipeline on Redis; its reads compared with DynamoDB's answers after it ran."""

    def __init__(self, shadow: ShadowRedis, transaction: bool) -> None:
        self._shadow = shadow
        self._pipe = shadow._redis.pipeline(transaction=transaction)
        self._calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **options: Any) -> _ShadowPipeline:
        self._pipe.execute_command(*args, **options)
        self._calls.append((args, options))
        return self

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        answers = self._pipe.execute(raise_on_error=raise_on_error)
        calls, self._calls = self._calls, []
        self._shadow._shadow([(a, o, ans) for (a, o), ans in zip(calls, answers, strict=True)
                              if not isinstance(ans, Exception)])
        return answers

    def __enter__(self) -> _ShadowPipeline:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._pipe.reset()
        self._calls = []


def _is_read(args: tuple[Any, ...]) -> bool:
    """A command DynamoRedis answers and that writes nothing (redis-py names commands in str, callers may not)."""
    if not args:
        return False
    name = args[0].decode("latin-1") if isinstance(args[0], bytes) else str(args[0])
    return commands.known(name) and not commands.writes([name.encode()])


def _same_answer(command: str, ours: Any, theirs: Any) -> bool:
    if command in _UNORDERED and isinstance(ours, list) and isinstance(theirs, list):
        return sorted(ours) == sorted(theirs)
    return bool(ours == theirs)
