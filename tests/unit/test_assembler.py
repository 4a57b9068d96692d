"""The batch assembler in memory: newest state per key, chunks across batches and partitions, poison in every
position (undecodable, chunks that do not fit), abandoned and superseded chunks."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import replace

import pytest

from replicator.apply.assembler import BatchAssembler
from replicator.core.avro import EventCodec
from replicator.core.events import Chunk
from tests.unit.rules import messaging, string_event, zset_event

Record = namedtuple("Record", "topic partition offset key value timestamp")
CODEC = EventCodec()


def _assembler() -> BatchAssembler:
    return BatchAssembler(messaging(), CODEC, abandon_chunks_after_s=300)


def _batch(*values: bytes, partition: int = 0, start: int = 0) -> dict[int, list[Record]]:
    return {partition: [Record("t", partition, start + i, b"k", v, 0) for i, v in enumerate(values)]}


def _chunks(owner: str, version: int, captured_at_us: int = 1_000_000) -> list[bytes]:
    event = replace(zset_event(owner, {"a": 1.0, "b": 2.0}, version), captured_at_us=captured_at_us)
    return [CODEC.encode(replace(event, value=half, chunk=Chunk(i, 2)))
            for i, half in enumerate([event.value[:1], event.value[1:]])]


def test_only_the_newest_state_of_a_key_in_a_batch_is_kept():
    values = [CODEC.encode(zset_event("o", {"a": float(v)}, v)) for v in (3, 9, 5)]
    assembly = _assembler().assemble(_batch(*values))
    assert [(w.event.version, w.record.offset) for w in assembly.work] == [(9, 1)]


@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_record_that_is_not_avro_is_a_dead_letter_wherever_it_sits(position):
    values = [CODEC.encode(zset_event(f"o{i}", {"a": 1.0}, 5)) for i in range(3)]
    values[position] = b"\x00not avro"
    assembly = _assembler().assemble(_batch(*values))
    assert [(d.record.offset, d.reason) for d in assembly.dead] == [(position, "undecodable")]
    assert len(assembly.work) == 2


def test_chunks_across_batches_make_one_state_and_hold_the_partition_until_then():
    assembler = _assembler()
    first, second = _chunks("big", 5)
    assert assembler.assemble(_batch(first, start=7)).work == []
    assert assembler.held_offset(0) == 7 and assembler.held_offset(1) is None
    (work,) = assembler.assemble(_batch(second, start=8)).work
    assert work.event.value == ((b"a", 1.0), (b"b", 2.0)) and work.event.chunk is None
    assert [r.offset for r in work.records] == [7, 8]
    assert assembler.held_offset(0) is None


def test_chunks_that_do_not_fit_together_are_dead_letters_every_one():
    _first, second = _chunks("big", 5)
    as_string = string_event(b"opponents:big", b"bytes, not members", 5)
    bad = CODEC.encode(replace(as_string, captured_at_us=1_000_000, chunk=Chunk(0, 2)))
    assembly = _assembler().assemble(_batch(bad, second))
    assert sorted((d.record.offset, d.reason) for d in assembly.dead) == [(0, "failed_assembly"),
                                                                         (1, "failed_assembly")]


def test_chunks_of_an_older_state_stop_holding_once_a_newer_state_is_applied_and_revoked_ones_are_forgotten():
    assembler = _assembler()
    first, _never = _chunks("big", 5)
    assembler.assemble(_batch(first))
    assembler.release(0, b"opponents:big", 6)
    assert assembler.held_offset(0) is None
    assembler.assemble(_batch(first, partition=1))
    assembler.forget({1})
    assert assembler.held_offset(1) is None


def test_chunks_whose_rest_never_came_are_dropped_once_a_much_later_read_is_consumed():
    assembler = _assembler()
    first, _never = _chunks("orphan", 5, captured_at_us=1_000_000)
    later = CODEC.encode(replace(zset_event("y", {"p": 1.0}, 7), captured_at_us=1_000_000 + 301_000_000))
    assembler.assemble(_batch(first))
    assembler.assemble(_batch(later, start=1))
    assert assembler.held_offset(0) is None
