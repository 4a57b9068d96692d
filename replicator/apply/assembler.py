"""The batch assembler: polled records in, the newest whole state per Redis key out. Pure: no I/O.

Per record: decode the Avro event, put a big state's chunks back together (they may span batches), match the rule.
Of several states of one key in a batch only the newest needs writing (events are states, not operations). A
record whose data cannot be decoded, assembled or matched is a dead letter, named with its reason; the others go
on. The assembler also remembers the first offset of every state whose chunks are still incomplete: commits must
not pass it (see :mod:`replicator.apply.offsets`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from replicator import metrics
from replicator.core import failures
from replicator.core.avro import EventCodec
from replicator.core.events import ChangeEvent
from replicator.core.mapping import EMPTY_STATE, KeyState, Plan, Rule, RuleSet

log = logging.getLogger(__name__)


@dataclass
class KeyWork:
    """One Redis key's newest state in a batch, and what becomes of it on the way to DynamoDB."""

    record: Any
    event: ChangeEvent
    rule: Rule
    variables: dict[str, bytes]
    previous: KeyState = EMPTY_STATE
    plan: Plan | None = None
    poison: str | None = None
    #: What DynamoDB did with the plan's item writes: took at least one / refused at least one as stale.
    landed: bool = False
    refused: bool = False
    #: For a state assembled from chunks: the records of the other chunks (dead-lettered together).
    chunk_records: tuple[Any, ...] = ()

    @property
    def records(self) -> tuple[Any, ...]:
        return (*self.chunk_records, self.record)


@dataclass(frozen=True)
class DeadLetter:
    record: Any
    reason: str
    error: str


@dataclass
class Assembly:
    work: list[KeyWork] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass
class _Partial:
    """Chunks of one big state (one key, one version) received so far."""

    count: int
    first_offset: int
    parts: dict[int, tuple[Any, ChangeEvent]]
    #: When its state was read: chunks of one state are published within the producer's delivery timeout of it.
    captured_at_us: int = 0


class _ChunkError(Exception):
    """Chunks of one state that cannot be put together (indexes or value types that do not fit)."""

    def __init__(self, records: tuple[Any, ...]) -> None:
        super().__init__("chunks do not assemble into one state")
        self.records = records


class BatchAssembler:
    def __init__(self, rules: RuleSet, codec: EventCodec, abandon_chunks_after_s: float) -> None:
        self._rules = rules
        self._codec = codec
        self._abandon_us = int(abandon_chunks_after_s * 1_000_000)
        #: Incomplete chunked states by (partition, key, version).
        self._partials: dict[tuple[int, bytes, int], _Partial] = {}

    def assemble(self, batch: Mapping[Any, list[Any]]) -> Assembly:
        """The newest state of every key in ``batch`` (records per partition), and the records that are poison.

        Raises only what :mod:`replicator.core.failures` calls infrastructure.
        """
        assembly = Assembly()
        newest: dict[tuple[str, bytes], KeyWork] = {}
        read_after_us: dict[int, int] = {}  # per partition, the latest read time of an event in this batch
        for records in batch.values():
            for record in records:
                try:
                    found = self._key_work(record)
                except _ChunkError as exc:
                    cause = exc.__cause__ or exc
                    assembly.dead += [DeadLetter(r, failures.reason(cause, "assembly"), failures.describe(cause))
                                      for r in exc.records]
                    continue
                except Exception as exc:
                    if failures.is_retryable(exc):
                        raise
                    assembly.dead.append(DeadLetter(record, failures.reason(exc, "decoding"), failures.describe(exc)))
                    continue
                if found is None:
                    continue
                read_after_us[record.partition] = max(read_after_us.get(record.partition, 0),
                                                      found.event.captured_at_us)
                slot = (found.rule.name, found.event.key)
                current = newest.get(slot)
                if current is not None:
                    # Two states of one key in one batch: only the newer one needs writing.
                    metrics.EVENTS_APPLIED.labels(table=found.rule.table, result="superseded").inc()
                if current is None or found.event.version >= current.event.version:
                    newest[slot] = found
        if self._partials and read_after_us:
            self._drop_abandoned(read_after_us)
        assembly.work = list(newest.values())
        return assembly

    def held_offset(self, partition: int) -> int | None:
        """The first offset of a state still incomplete in ``partition``: commits stop there."""
        return min((p.first_offset for (part, _k, _v), p in self._partials.items() if part == partition),
                   default=None)

    def release(self, partition: int, key: bytes, version: int) -> None:
        """A state of ``key`` was applied: chunks of older states will never complete (a listener died mid-publish)
        and must not hold commits."""
        for slot in [s for s in self._partials if s[0] == partition and s[1] == key and s[2] < version]:
            del self._partials[slot]

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: their chunks will be redelivered to the new owner from the committed offset."""
        gone = set(partitions)
        for slot in [s for s in self._partials if s[0] in gone]:
            del self._partials[slot]

    def _key_work(self, record: Any) -> KeyWork | None:
        """Decode one record, assemble its chunks, match its rule; None while chunks are missing or no rule maps it."""
        event = self._codec.decode(record.value)
        chunk_records: tuple[Any, ...] = ()
        if event.chunk is not None:
            assembled = self._assemble(record, event)
            if assembled is None:
                return None
            event, chunk_records = assembled
        matched = self._rules.match(event.key)
        if matched is None:
            # No rule maps this key (rules changed since capture): nothing to write, nothing lost.
            log.warning("no rule maps key", extra={"kv": {
                "key": event.key, "position": f"{record.topic}[{record.partition}]@{record.offset}"}})
            return None
        rule, variables = matched
        return KeyWork(record, event, rule, variables, chunk_records=chunk_records)

    def _assemble(self, record: Any, event: ChangeEvent) -> tuple[ChangeEvent, tuple[Any, ...]] | None:
        """Collect a chunk; the whole state once its last chunk is in, else None. Raises _ChunkError (naming every
        chunk's record) when the chunks do not make one state."""
        assert event.chunk is not None
        slot = (record.partition, event.key, event.version)
        partial = self._partials.setdefault(slot, _Partial(event.chunk.count, record.offset, {},
                                                           event.captured_at_us))
        partial.parts[event.chunk.index] = (record, event)  # a redelivered chunk replaces itself
        if len(partial.parts) < partial.count:
            return None
        del self._partials[slot]
        try:
            ordered = [partial.parts[i] for i in range(partial.count)]
            values = [e.value for _r, e in ordered]
            merged: Any = (b"".join(values) if isinstance(values[0], bytes)  # type: ignore[arg-type]
                           else tuple(v for part in values for v in part))  # type: ignore[union-attr]
        except Exception as exc:
            raise _ChunkError(tuple(r for r, _e in partial.parts.values())) from exc
        return replace(event, value=merged, chunk=None), tuple(r for r, _e in ordered[:-1])

    def _drop_abandoned(self, read_after_us: dict[int, int]) -> None:
        """Chunks whose state was read long before an event already consumed from the same partition: the rest of
        them was never published (a listener died mid-state; its restart is a gap that heals the key). Kept, they
        would hold the partition's commits, and every gap reconcile waiting on them, forever."""
        for slot, partial in list(self._partials.items()):
            newest = read_after_us.get(slot[0])
            if newest is not None and newest - partial.captured_at_us > self._abandon_us:
                del self._partials[slot]
                metrics.EVENTS_APPLIED.labels(table="", result="abandoned_chunks").inc()
                log.warning("dropped the chunks of a state whose other chunks never came", extra={"kv": {
                    "partition": slot[0], "key": slot[1], "version": slot[2], "chunks": len(partial.parts),
                    "of": partial.count, "first_offset": partial.first_offset}})
