"""The BatchExecuteStatement engine: conditional PartiQL statements, 25 a call, each run until it has an outcome.

Each item write is an UPDATE (the item exists) or an INSERT (it does not); both stay conditional on the group's
version (see :mod:`replicator.core.statements`). The engine sends the one it expects to succeed and the other one in
the next round when it did not: a failed conditional write is still billed, so the guess matters. It is right
when the planner knows whether the item exists; otherwise it follows what this engine saw of the item (a bounded
memory of items known to exist) or, for items it never saw, what the table's recent writes found — so a backfill
INSERTs and live traffic UPDATEs.

A statement's outcome is DONE, STALE (DynamoDB holds a newer version), SINGLE (take the single-item path: an
UpdateItem creates or updates atomically, and cleans up a mirror value kept in parts) or a non-retryable
:class:`SinkError` (poison). Throttled statements are sent again after a backoff; what is not about the data
raises a retryable SinkError.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from replicator import metrics, retry
from replicator.adapters.dynamodb.errors import CONDITION_FAILED, Invalid, Kind, bisect, kind, translate
from replicator.core import statements
from replicator.core.errors import SinkError
from replicator.core.mapping import Head, ItemWrite, RuleSet

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


class Outcome(enum.Enum):
    DONE = "done"
    STALE = "stale"
    SINGLE = "single"  # take the single-item path


class _Again(enum.Enum):
    """A statement without an outcome yet."""

    TURN = "turn"  # send the other statement kind (UPDATE ↔ INSERT) next round
    RESEND = "resend"  # send the same statement again after a backoff


#: Guessed writes a table's guess is learned from before it is trusted for a whole batch (one call's worth).
_LEARN_FROM = 25
#: UPDATE found no item, then INSERT found one (another writer in between): after this many such turns the write
#: takes the single-item path, whose UpdateItem creates or updates atomically.
_MAX_TURNS = 2
#: Statement errors sent again after a backoff (the rest: poison, or the whole batch is retried).
_RESENT = (Kind.THROTTLED, Kind.CONFLICT, Kind.RESEND)


@dataclass
class Statement:
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


class StatementBatches:
    """Runs statements through BatchExecuteStatement, learning per table whether items tend to exist."""

    def __init__(self, client: Any, parallel: Parallel = serial, known_items: int = 100_000) -> None:
        self._client = client
        self._parallel = parallel
        #: Items this engine saw existing (wrote, or found): UPDATE them first.
        self._known = _KnownItems(known_items)
        #: Per table, the recent share of *other* items that existed anyway (written before this applier started,
        #: or by another one): whether to UPDATE or INSERT them first.
        self._exists: dict[str, float] = {}
        self._observed: dict[str, int] = {}

    # --- statements -------------------------------------------------------------------------------------------------

    def item_write(self, write: ItemWrite, rules: RuleSet, expire_at: int) -> Statement:
        """An item write's statement, its kind guessed from what is known of the item and its table."""
        item = (write.table, write.key)
        if write.exists is not None:
            known, exists = True, write.exists
        else:
            known = item in self._known
            exists = known or self._exists.get(write.table, 0.5) >= 0.5
        return Statement(item, write.table,
                         lambda insert: (statements.insert_statement if insert else statements.update_statement)(
                             write, rules, expire_at),
                         upsert=True, insert=not exists, size=statements.write_size(write), known=known,
                         mirror_version=(write.rule.version_attr, write.version) if write.rule.is_mirror else None)

    @staticmethod
    def head(head: Head, state_table: str, ttl_attribute: str | None, expire_at: int) -> Statement:
        """A head's statement in the state table (newer-or-equal version wins)."""
        return Statement((state_table, (head.rule.name, head.key)), state_table,
                         lambda insert: statements.head_statement(state_table, head.rule.name, head.key, head.version,
                                                                head.deleted, ttl_attribute, expire_at, insert),
                         upsert=True, insert=not head.exists, size=len(head.key) + 64, known=True)

    @staticmethod
    def condition_only(write: ItemWrite, build: Callable[[], dict[str, Any]]) -> Statement:
        """A statement whose refused condition is its outcome (STALE), never a missing item."""
        return Statement((write.table, write.key), write.table, lambda _insert: build(), upsert=False, insert=False)

    # --- running -----------------------------------------------------------------------------------------------------

    def run(self, ops: list[Statement]) -> list[Outcome | SinkError]:
        """Run every statement until it has an outcome: DONE, STALE, SINGLE, or the SinkError that makes it
        poison. Raises a retryable SinkError for what is not about the data."""
        outcomes: dict[int, Outcome | SinkError] = {}
        pending = list(range(len(ops)))
        resends = retry.Backoff(retry.THROTTLED_STATEMENTS)  # then the batch is retried whole (retry.APPLY_BATCH)
        while pending:
            again: list[int] = []
            throttled = False
            rounds = statements.batches_of_distinct_items([ops[i].item for i in pending],
                                                        [ops[i].size for i in pending],
                                                        statements.STATEMENTS_PER_BATCH, 4 * 1024 * 1024)
            for calls in rounds:
                calls = [[pending[j] for j in call] for call in calls]
                for call, responses in self._parallel(
                        lambda call: self._execute([ops[i].build(ops[i].insert) for i in call]), calls):
                    if isinstance(responses, Exception):
                        raise translate(responses, "DynamoDB request")
                    for i, response in zip(call, responses, strict=True):
                        outcome = self._outcome(ops[i], response)
                        if isinstance(outcome, _Again):
                            again.append(i)
                            throttled = throttled or outcome is _Again.RESEND
                        else:
                            outcomes[i] = outcome
            pending = again
            if throttled and not resends.wait(f"DynamoDB throttled {len(pending)} statements"):
                raise SinkError(f"DynamoDB throttled {len(pending)} statements {resends.retries + 1} times",
                                retryable=True)
        return [outcomes[i] for i in range(len(ops))]

    def run_learning(self, ops: list[Statement]) -> list[Outcome | SinkError]:
        """:meth:`run`, but for a table whose unknown items this engine has not learned about yet (a fresh applier),
        one call of them goes first and the rest are guessed from what it found: a first batch of a thousand
        writes must not send them all the wrong way."""
        learning = {op.table for op in ops if not op.known and self._observed.get(op.table, 0) < _LEARN_FROM}
        first: list[int] = []
        for table in learning:
            first += [i for i, op in enumerate(ops) if op.table == table and not op.known][:_LEARN_FROM]
        if not first or len(first) == len(ops):
            return self.run(ops)
        outcomes = dict(zip(first, self.run([ops[i] for i in first]), strict=True))
        rest = [i for i in range(len(ops)) if i not in outcomes]
        for i in rest:
            if not ops[i].known:
                ops[i].insert = self._exists.get(ops[i].table, 0.5) < 0.5
        outcomes.update(zip(rest, self.run([ops[i] for i in rest]), strict=True))
        return [outcomes[i] for i in range(len(ops))]

    def _outcome(self, op: Statement, response: dict[str, Any]) -> Outcome | SinkError | _Again:
        """One statement's outcome, or what to do to get one."""
        error = response.get("Error")
        if error is None:
            self._observe(op, exists=not op.insert)
            return Outcome.DONE
        code, message = error.get("Code", ""), error.get("Message", "")
        if code == CONDITION_FAILED and not op.insert:
            if not op.upsert:
                return Outcome.STALE
            old = error.get("Item")
            self._observe(op, exists=old is not None)
            if old is None:
                return self._turn(op)
            if op.mirror_version is not None and "parts" in old and \
                    int(old.get(op.mirror_version[0], {}).get("N", "0")) <= op.mirror_version[1]:
                return Outcome.SINGLE  # the value it replaces is in parts: the item path cleans them up
            return Outcome.STALE
        if code == "DuplicateItem":
            self._observe(op, exists=True)
            return self._turn(op)
        code_kind = kind(code)
        if code_kind is Kind.POISON:
            return SinkError(f"table {op.table}: DynamoDB {code}: {message}", retryable=False)
        if code_kind in _RESENT:
            if code_kind is Kind.THROTTLED:
                metrics.DYNAMODB_THROTTLES.inc()
            return _Again.RESEND
        raise SinkError(f"table {op.table}: DynamoDB {code}: {message}", retryable=True)

    @staticmethod
    def _turn(op: Statement) -> Outcome | _Again:
        op.turns += 1
        if op.turns > _MAX_TURNS:
            return Outcome.SINGLE
        op.insert = not op.insert
        return _Again.TURN

    def _observe(self, op: Statement, exists: bool) -> None:
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
        responses: list[dict[str, Any]] = []

        def send(chunk: list[dict[str, Any]]) -> None:
            responses.extend(self._client.batch_execute_statement(Statements=chunk)["Responses"])

        def alone(_statement: dict[str, Any], refused: Invalid) -> None:
            responses.append({"Error": {"Code": "ValidationError", "Message": refused.message}})

        try:
            bisect(statements, send, alone)
        except Exception as exc:
            raise translate(exc, "BatchExecuteStatement") from None
        return responses
