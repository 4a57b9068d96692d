"""The DynamoDB sink of apply: planned writes in, one typed result per write out.

Every write stays conditional on its group's version, whatever the mode; what the mode changes is how many go in
one request and what DynamoDB bills for them:

- ``batch`` (default): up to 25 PartiQL statements per BatchExecuteStatement, each conditional on its own and
  billed as a single write (1 WCU per item up to 1 KB). The engine that runs them (UPDATE or INSERT,
  guessed, and the other next round) is :mod:`replicator.adapters.dynamodb.batch`.
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from replicator import metrics
from replicator.adapters.dynamodb.batch import Outcome, Parallel, serial
from replicator.adapters.dynamodb.calls import BATCH_GET_KEYS
from replicator.adapters.dynamodb.errors import translate
from replicator.adapters.dynamodb.store import DynamoWriter
from replicator.core import failures, statements
from replicator.core.errors import SinkError
from replicator.core.mapping import Head, ItemWrite, KeyState, Rule

__all__ = ["APPLIED", "STALE", "DynamoSink", "Head", "Parallel", "Result", "WriteResult", "serial"]

class Result(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"
    POISON = "poison"


@dataclass(frozen=True)
class WriteResult:
    status: Result
    #: Why the write cannot be stored (POISON only): the dead letter's error.
    error: Exception | None = None


APPLIED = WriteResult(Result.APPLIED)
STALE = WriteResult(Result.STALE)


class DynamoSink:
    """Writes planned item writes and collection heads; loads applied states. Thread-safe."""

    def __init__(self, writer: DynamoWriter, mode: str = "batch", parallel: Parallel = serial,
                 known_items: int = 100_000) -> None:
        self.writer = writer
        self.mode = mode
        self._parallel = parallel
        #: The BatchExecuteStatement engine (batch mode only).
        self._statements = writer.statement_batches(parallel, known_items) if mode == "batch" else None

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
        assert self._statements is not None
        expire_at = self.writer.expire_at()
        ops = [self._statements.head(h, self.writer.state_table, self.writer.ttl_attribute, expire_at) for h in heads]
        results: list[WriteResult] = []
        for head, outcome in zip(heads, self._statements.run(ops), strict=True):
            if outcome is Outcome.SINGLE:
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
        for transactions in statements.transactions(items):
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
        assert self._statements is not None
        rules, expire_at = self.writer.rules, self.writer.expire_at()
        singles = [i for i, w in enumerate(writes) if w.parts]
        batched = [i for i, w in enumerate(writes) if not w.parts]
        ops = [self._statements.item_write(writes[i], rules, expire_at) for i in batched]
        for i, outcome in zip(batched, self._statements.run_learning(ops), strict=True):
            write = writes[i]
            if outcome is Outcome.SINGLE:
                singles.append(i)
            elif isinstance(outcome, SinkError):
                results[i] = WriteResult(Result.POISON, outcome)
            else:
                results[i] = APPLIED if outcome is Outcome.DONE else STALE
                metrics.ITEM_WRITES.labels(table=write.table, result=results[i].status.value).inc()
        results.update(zip(singles, self._singles([writes[i] for i in singles]), strict=True))
        # A tombstone on an item other groups share gets its TTL only once every group on it is deleted (the
        # single-item path, DynamoWriter.write, has already done that for the writes it took).
        taken_singly = set(singles)
        expiring = [writes[i] for i in batched if i not in taken_singly and results[i] is APPLIED
                    and writes[i].is_tombstone and not statements.expires_with_tombstone(writes[i], rules)]
        if expiring:
            self._statements.run([self._statements.condition_only(
                w, lambda w=w: statements.expire_tombstone_statement(w, rules, expire_at)) for w in expiring])
        return [results[i] for i in range(len(writes))]

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
    raise translate(outcome, "DynamoDB request")  # our own errors as they are, anything else translated


