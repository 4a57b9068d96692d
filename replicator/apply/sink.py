"""The DynamoDB sink of apply: planned writes in, one typed result per write out.

Every write stays conditional on its group's version, whatever the mode; what the mode changes is how many go in
one request and what DynamoDB bills for them:

- ``batch`` (default): up to 25 PartiQL statements per BatchExecuteStatement, each conditional on its own and
  billed as a single write (1 WCU per item up to 1 KB). See :mod:`replicator.core.requests` for what an UPDATE and
  an INSERT do there; the sink sends the one it expects to succeed and the other one in the next round when it did
  not (a failed conditional write is still billed: the guess is right when the planner knows the item exists, and
  otherwise follows what the table's last writes found, so a backfill INSERTs and live traffic UPDATEs).
- ``transaction``: up to 100 per TransactWriteItems (2 WCU per item), all or nothing, re-sent without the items
  that failed it.
- ``item``: one UpdateItem per write (1 WCU, one round trip each).

A write's result is APPLIED, STALE (DynamoDB holds a newer version: nothing to do) or POISON (DynamoDB rejected
the data: the key is dead-lettered). Anything else (throttled past the retries, unreachable, access denied, a
missing table) raises one error type, a retryable :class:`SinkError`, and the batch is retried whole: every write
is idempotent.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import botocore.exceptions

from replicator import metrics, retry
from replicator.adapters.dynamodb.store import BATCH_GET_KEYS, DynamoWriter, translate
from replicator.core import failures, requests
from replicator.core.errors import ReplicatorError, SinkError
from replicator.core.mapping import Head, ItemWrite, KeyState, Rule

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

#: Runs a function over items concurrently; per item, its result or the exception it raised (input order).
Parallel = Callable[[Callable[[Any], Any], list[Any]], list[tuple[Any, Any]]]


def serial(fn: Callable[[T], R], items: list[T]) -> list[tuple[T, R | Exception]]:
    """:data:`Parallel` without threads (tests, tools)."""
    out: list[tuple[T, R | Exception]] = []
    for item in items:
        try:
            out.append((item, fn(item)))
        except Exception as exc:
            out.append((item, exc))
    return out


class Result(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"
    POISON = "poison"


@dataclass(frozen=True)
class WriteResult:
    result: Result
    #: Why the write cannot be stored (POISON only): the dead letter's error.
    error: Exception | None = None


APPLIED = WriteResult(Result.APPLIED)
STALE = WriteResult(Result.STALE)


#: Guessed writes a table's guess is learned from before it is trusted for a whole batch (one call's worth).
_LEARN_FROM = 25
#: Statement errors that pass: the statement is sent again after a backoff.
_RESEND = {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded", "InternalServerError",
           "TransactionConflict"}
_THROTTLED = {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
#: Statement errors that are the item's own fault: the write is poison.
_POISON = {"ValidationError", "ItemCollectionSizeLimitExceeded"}
#: UPDATE found no item, then INSERT found one (another writer in between): after this many such turns the write
#: takes the single-item path, whose UpdateItem creates or updates atomically.
_MAX_TURNS = 2


@dataclass
class _Op:
    """One statement to run until it has an outcome."""

    item: tuple[str, Any]  # (table, key): one call may not name an item twice
    table: str
    build: Callable[[bool], dict[str, Any]]  # insert? → the statement
    #: An upsert: a failed UPDATE without an item means "missing, INSERT it". Otherwise a failed condition is the
    #: outcome (a tombstone's TTL that must not be set yet).
    upsert: bool
    insert: bool
    size: int = 0
    #: For a mirror write: its version attribute and version, so that a failed UPDATE on an item whose old value is
    #: in parts (to be cleaned up) is told apart from a stale one.
    mirror_version: tuple[str, int] | None = None
    #: The statement kind was chosen from knowledge, not from the table's recent outcomes.
    known: bool = False
    turns: int = 0


class _KnownItems:
    """A bounded set of items known to exist, least recently seen dropped first. Only hashes are kept (a few dozen
    bytes an item): a collision costs one wrong guess, never a wrong write."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, item: tuple[str, Any]) -> bool:
        return hash(item) in self._items

    def add(self, item: tuple[str, Any]) -> None:
        if self._capacity <= 0:
            return
        with self._lock:
            self._items[hash(item)] = None
            self._items.move_to_end(hash(item))
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


class _Outcome(enum.Enum):
    DONE = "done"
    STALE = "stale"
    SINGLE = "single"  # take the single-item path


class DynamoSink:
    """Writes planned item writes and collection heads; loads applied states. Thread-safe."""

    def __init__(self, writer: DynamoWriter, mode: str = "batch", parallel: Parallel = serial,
                 known_items: int = 100_000) -> None:
        self.writer = writer
        self.mode = mode
        self._parallel = parallel
        #: Items this sink saw existing (wrote, or found): UPDATE them first.
        self._known = _KnownItems(known_items)
        #: Per table, the recent share of *other* items that existed anyway (written before this applier started,
        #: or by another one): whether to UPDATE or INSERT them first.
        self._exists: dict[str, float] = {}
        self._observed: dict[str, int] = {}

    # --- writes ---------------------------------------------------------------------------------------------------

    def write(self, writes: Sequence[ItemWrite]) -> list[WriteResult]:
        """Every write's result, in order. Raises a retryable SinkError when the service, not the data, failed."""
        writes = list(writes)
        if not writes:
            return []
        if self.mode == "item":
            return self._singles(writes)
        if self.mode == "transaction":
            return self._transactions(writes)
        return self._batch(writes)

    def put_heads(self, heads: Sequence[Head]) -> list[WriteResult]:
        """Write the heads (state table), each conditional on its version: per head APPLIED (also when a newer one
        was there) or POISON. Raises a retryable SinkError."""
        heads = list(heads)
        if not heads:
            return []
        if self.mode != "batch":
            return self._singles_heads(heads)
        expire_at = self.writer.expire_at()
        state, ttl = self.writer.state_table, self.writer.ttl_attribute
        ops = [_Op((state, (h.rule.name, h.key)), state,
                   lambda insert, h=h: requests.head_statement(state, h.rule.name, h.key, h.version, h.deleted, ttl,
                                                               expire_at, insert),
                   upsert=True, insert=not h.exists, size=len(h.key) + 64, known=True) for h in heads]
        results: list[WriteResult] = []
        for head, outcome in zip(heads, self._run(ops), strict=True):
            if outcome is _Outcome.SINGLE:
                results.append(self._singles_heads([head])[0])
            else:
                results.append(WriteResult(Result.POISON, outcome) if isinstance(outcome, SinkError) else APPLIED)
        return results

    def _singles_heads(self, heads: list[Head]) -> list[WriteResult]:
        """One UpdateItem per head: APPLIED (also when a newer head was there) or POISON; raises infrastructure."""
        return [APPLIED if outcome is None else _result(outcome)
                for _head, outcome in self._parallel(self._put_head, heads)]

    def _put_head(self, head: Head) -> None:
        self.writer.put_head(head.rule, head.key, head.version, deleted=head.deleted)

    def _singles(self, writes: list[ItemWrite]) -> list[WriteResult]:
        return [_result(outcome) for _w, outcome in self._parallel(self.writer.write, writes)]

    def _transactions(self, writes: list[ItemWrite]) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        # Values in parts go one by one: their parts are written first (see DynamoWriter.write).
        singles = [i for i, w in enumerate(writes) if w.parts]
        results.update(zip(singles, self._singles([writes[i] for i in singles]), strict=True))
        rest = [i for i, w in enumerate(writes) if not w.parts]
        items = [writes[i] for i in rest]
        # Writes of all keys share transactions (each still conditional): a round's items are distinct, so its
        # transactions run in parallel without conflicting; an item two keys write goes again in the next round.
        for transactions in requests.transactions(items):
            for indexes, outcome in self._parallel(
                    lambda ix: self.writer.write_transaction([items[i] for i in ix]), transactions):
                if isinstance(outcome, Exception):
                    for i in indexes:
                        results[rest[i]] = _result(outcome)
                else:
                    for i, one in zip(indexes, outcome, strict=True):
                        results[rest[i]] = _result(one)
        return [results[i] for i in range(len(writes))]

    def _batch(self, writes: list[ItemWrite]) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        rules, expire_at = self.writer.rules, self.writer.expire_at()
        singles = [i for i, w in enumerate(writes) if w.parts]
        batched = [i for i, w in enumerate(writes) if not w.parts]
        ops = [self._write_op(writes[i], rules, expire_at) for i in batched]
        for i, outcome in zip(batched, self._run_learning(ops), strict=True):
            write = writes[i]
            if outcome is _Outcome.SINGLE:
                singles.append(i)
            elif isinstance(outcome, SinkError):
                results[i] = WriteResult(Result.POISON, outcome)
            else:
                results[i] = APPLIED if outcome is _Outcome.DONE else STALE
                metrics.ITEM_WRITES.labels(table=write.table, result=results[i].result.value).inc()
        results.update(zip(singles, self._singles([writes[i] for i in singles]), strict=True))
        # A tombstone on an item other groups share gets its TTL only once every group on it is deleted (the
        # single-item path, DynamoWriter.write, has already done that for the writes it took).
        taken_singly = set(singles)
        expiring = [writes[i] for i in batched if i not in taken_singly and results[i] is APPLIED
                    and writes[i].is_tombstone and not requests.expires_with_tombstone(writes[i], rules)]
        if expiring:
            self._run([_Op((w.table, w.key), w.table,
                           lambda _insert, w=w: requests.expire_tombstone_statement(w, rules, expire_at),
                           upsert=False, insert=False) for w in expiring])
        return [results[i] for i in range(len(writes))]

    def _write_op(self, write: ItemWrite, rules: Any, expire_at: int) -> _Op:
        item = (write.table, write.key)
        if write.exists is not None:
            known, exists = True, write.exists
        else:
            known = item in self._known
            exists = known or self._exists.get(write.table, 0.5) >= 0.5
        return _Op(item, write.table,
                   lambda insert: (requests.insert_statement if insert else requests.update_statement)(
                       write, rules, expire_at),
                   upsert=True, insert=not exists, size=requests.write_size(write), known=known,
                   mirror_version=(write.rule.version_attr, write.version) if write.rule.is_mirror else None)

    # --- the BatchExecuteStatement engine --------------------------------------------------------------------------

    def _run(self, ops: list[_Op]) -> list[_Outcome | SinkError]:
        """Run every op's statement until it has an outcome: DONE, STALE, SINGLE, or the SinkError that makes it
        poison. Raises a retryable SinkError for what is not about the data."""
        outcomes: dict[int, _Outcome | SinkError] = {}
        pending = list(range(len(ops)))
        resends = retry.Backoff(retry.THROTTLED_STATEMENTS)  # then the batch is retried whole (retry.APPLY_BATCH)
        while pending:
            again: list[int] = []
            throttled = False
            rounds = requests.batches_of_distinct_items([ops[i].item for i in pending],
                                                        [ops[i].size for i in pending],
                                                        requests.STATEMENTS_PER_BATCH, 4 * 1024 * 1024)
            for calls in rounds:
                calls = [[pending[j] for j in call] for call in calls]
                for call, responses in self._parallel(
                        lambda call: self._execute([ops[i].build(ops[i].insert) for i in call]), calls):
                    if isinstance(responses, Exception):
                        raise _infrastructure(responses)
                    for i, response in zip(call, responses, strict=True):
                        outcome = self._outcome(ops[i], response)
                        if outcome is None:
                            again.append(i)
                        elif outcome == "resend":
                            again.append(i)
                            throttled = True
                        else:
                            outcomes[i] = outcome
            pending = again
            if throttled and not resends.wait(f"DynamoDB throttled {len(pending)} statements"):
                raise SinkError(f"DynamoDB throttled {len(pending)} statements {resends.retries + 1} times",
                                retryable=True)
        return [outcomes[i] for i in range(len(ops))]

    def _outcome(self, op: _Op, response: dict[str, Any]) -> _Outcome | SinkError | str | None:
        """One statement's outcome; None to send the other statement kind next round, "resend" after throttling."""
        error = response.get("Error")
        if error is None:
            self._observe(op, exists=not op.insert)
            return _Outcome.DONE
        code, message = error.get("Code", ""), error.get("Message", "")
        if code == "ConditionalCheckFailed" and not op.insert:
            if not op.upsert:
                return _Outcome.STALE
            old = error.get("Item")
            self._observe(op, exists=old is not None)
            if old is None:
                return self._turn(op)
            if op.mirror_version is not None and "parts" in old and \
                    int(old.get(op.mirror_version[0], {}).get("N", "0")) <= op.mirror_version[1]:
                return _Outcome.SINGLE  # the value it replaces is in parts: the item path cleans them up
            return _Outcome.STALE
        if code == "DuplicateItem":
            self._observe(op, exists=True)
            return self._turn(op)
        if code in _POISON:
            return SinkError(f"table {op.table}: DynamoDB {code}: {message}", retryable=False)
        if code in _RESEND:
            if code in _THROTTLED:
                metrics.DYNAMODB_THROTTLES.inc()
            return "resend"
        raise SinkError(f"table {op.table}: DynamoDB {code}: {message}", retryable=True)

    @staticmethod
    def _turn(op: _Op) -> _Outcome | None:
        op.turns += 1
        if op.turns > _MAX_TURNS:
            return _Outcome.SINGLE
        op.insert = not op.insert
        return None

    def _run_learning(self, ops: list[_Op]) -> list[_Outcome | SinkError]:
        """:meth:`_run`, but for a table whose unknown items this sink has not learned about yet (a fresh applier),
        one call of them goes first and the rest are guessed from what it found: a first batch of a thousand
        writes must not send them all the wrong way."""
        learning = {op.table for op in ops if not op.known and self._observed.get(op.table, 0) < _LEARN_FROM}
        first: list[int] = []
        for table in learning:
            first += [i for i, op in enumerate(ops) if op.table == table and not op.known][:_LEARN_FROM]
        if not first or len(first) == len(ops):
            return self._run(ops)
        outcomes = dict(zip(first, self._run([ops[i] for i in first]), strict=True))
        rest = [i for i in range(len(ops)) if i not in outcomes]
        for i in rest:
            if not ops[i].known:
                ops[i].insert = self._exists.get(ops[i].table, 0.5) < 0.5
        outcomes.update(zip(rest, self._run([ops[i] for i in rest]), strict=True))
        return [outcomes[i] for i in range(len(ops))]

    def _observe(self, op: _Op, exists: bool) -> None:
        """What a statement found: the item exists from now on either way (it was there, or it was written), and
        for an item chosen by guess, whether the table's guess was right."""
        if not op.upsert:
            return
        self._known.add(op.item)
        if op.known or op.turns:
            return
        share = self._exists.get(op.table, 0.5)
        self._exists[op.table] = share + 0.05 * ((1.0 if exists else 0.0) - share)
        self._observed[op.table] = self._observed.get(op.table, 0) + 1

    def _execute(self, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One BatchExecuteStatement; per statement its response. A call DynamoDB refuses whole for one bad
        statement (too large, say) is split until that statement is alone: its error is then its own."""
        try:
            return list(self.writer.client.batch_execute_statement(Statements=statements)["Responses"])
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") != "ValidationException":
                raise translate(exc, "BatchExecuteStatement") from None
            if len(statements) == 1:
                return [{"Error": {"Code": "ValidationError", "Message": error.get("Message", str(exc))}}]
            half = len(statements) // 2
            return self._execute(statements[:half]) + self._execute(statements[half:])
        except Exception as exc:
            raise translate(exc, "BatchExecuteStatement") from None

    # --- reads ----------------------------------------------------------------------------------------------------

    def load_states(self, keys: Sequence[tuple[Rule, bytes, Any]]) -> list[KeyState | Exception]:
        """The applied state of each distinct (rule, key, variables): per key its state, or the exception loading
        it. Head versions are read 100 per request; a group of them DynamoDB refuses is read key by key, so the
        refusal lands on the key that caused it."""
        keys = list(keys)
        groups = [keys[i:i + BATCH_GET_KEYS] for i in range(0, len(keys), BATCH_GET_KEYS)]
        versions: list[int | None] = []
        for group, found in self._parallel(lambda g: self.writer.head_versions([(r.name, k) for r, k, _v in g]),
                                           groups):
            if isinstance(found, Exception):
                if failures.is_retryable(found):
                    raise found
                found = [None] * len(group)  # read again one by one, with the items
            versions.extend(found)
        loads = list(zip(keys, versions, strict=True))
        return [state for _k, state in self._parallel(lambda kv: self.writer.load_state(*kv[0], version=kv[1]),
                                                      loads)]


def _result(outcome: Any) -> WriteResult:
    """A single-item or transactional outcome (True, False, or the exception) as a WriteResult; raises what
    :mod:`replicator.core.failures` calls infrastructure."""
    if outcome is True:
        return APPLIED
    if outcome is False:
        return STALE
    if isinstance(outcome, Exception) and not failures.is_retryable(outcome):
        return WriteResult(Result.POISON, outcome)
    raise _infrastructure(outcome)


def _infrastructure(exc: Exception) -> Exception:
    """An exception from a request, to raise: our own errors as they are, anything else translated."""
    if isinstance(exc, ReplicatorError):
        return exc
    return translate(exc, "DynamoDB request")


