"""The applier in memory: poison at every step is dead-lettered with its reason, infrastructure is retried, chunks
across batches and abandoned chunks, and what is committed. Fakes stand in for Kafka and DynamoDB."""

from __future__ import annotations

import threading
from collections import namedtuple
from dataclasses import replace
from typing import Any

import pytest
from kafka import TopicPartition

from replicator import retry
from replicator.adapters.kafka.consumer import GroupConsumer
from replicator.apply.applier import Applier
from replicator.core.avro import EventCodec
from replicator.core.config import ApplyConfig
from replicator.core.errors import MappingError, SinkError
from replicator.core.events import ChangeEvent, Chunk, KeyType, Op, Origin
from replicator.core.mapping import EMPTY_STATE, ItemWrite
from tests.unit.rules import messaging, string_event, zset_event

Record = namedtuple("Record", "topic partition offset key value timestamp")
TOPIC = "changes"
CODEC = EventCodec()


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self._paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}

    def pause(self, *tps: TopicPartition) -> None:
        self._paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        return {}

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})


class FakeWriter:
    """DynamoDB as a dict of written items; ``fail`` maps a Redis key to the errors its next writes raise."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, Any], ItemWrite] = {}
        self.fail_write: dict[bytes, list[BaseException]] = {}
        self.fail_load: dict[bytes, BaseException] = {}

    def write(self, write: ItemWrite) -> bool:
        for key, errors in self.fail_write.items():
            if errors and any(key in str(v.value).encode() or key == v.value for _a, v in write.key):
                raise errors.pop(0)
        self.items[(write.table, write.key)] = write
        return True

    def head_versions(self, keys: list[Any]) -> list[int]:
        return [-1] * len(keys)

    def load_state(self, rule: Any, key: bytes, variables: Any, version: int | None = None) -> Any:
        if key in self.fail_load:
            raise self.fail_load[key]
        return EMPTY_STATE

    def put_head(self, *args: Any, **kwargs: Any) -> None:
        pass


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str, str]] = []

    def send(self, record: Any, reason: str, error: str) -> None:
        self.sent.append((record.offset, reason, error))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _applier() -> tuple[Applier, FakeConsumer, FakeWriter, FakeDeadLetters]:
    consumer, writer, dead = FakeConsumer(), FakeWriter(), FakeDeadLetters()
    applier = Applier(GroupConsumer(consumer, TOPIC), writer, messaging(),  # type: ignore[arg-type]
                      ApplyConfig(write_concurrency=2, write_mode="item"), dead)
    return applier, consumer, writer, dead


def _records(values: list[bytes], partition: int = 0, start: int = 0) -> dict[TopicPartition, list[Record]]:
    return {TopicPartition(TOPIC, partition): [Record(TOPIC, partition, start + i, b"k", v, 0)
                                              for i, v in enumerate(values)]}


def _owners(writer: FakeWriter) -> set[str]:
    return {dict(w.key)["owner_id"].value for w in writer.items.values()}


GOOD = CODEC.encode(zset_event("good", {"p1": 1.0}, version=10))


@pytest.mark.parametrize(("poison", "reason"), [
    (b"not avro", "undecodable"),
    (CODEC.encode(replace(zset_event("bad", {"p1": 1.0}, 5), key=b"opponents:\xff\xfe")), "unmappable"),
    (CODEC.encode(string_event(b"opponents:wrongtype", b"a string", 5)), "unmappable"),
])
def test_poison_is_dead_lettered_with_its_reason_wherever_it_sits_in_the_batch(poison, reason):
    for position in range(3):
        applier, consumer, writer, dead = _applier()
        values = [GOOD, GOOD, GOOD]
        values[position] = poison
        assert applier.process(_records(values))
        assert [(offset, why) for offset, why, _e in dead.sent] == [(position, reason)]
        assert "good" in _owners(writer)
        assert consumer.commits[-1] == {TopicPartition(TOPIC, 0): 3}


def test_a_state_that_fails_to_load_or_write_is_poison_and_other_keys_are_applied():
    applier, consumer, writer, dead = _applier()
    writer.fail_load[b"opponents:loadfails"] = MappingError("key b'opponents:loadfails': cannot render")
    writer.fail_write[b"writefails"] = [SinkError("DynamoDB ValidationException: too big", retryable=False)]
    writer.fail_write[b"bug"] = [KeyError("a bug that only this data triggers")]
    batch = _records([CODEC.encode(zset_event("loadfails", {"p1": 1.0}, 5)),
                      CODEC.encode(zset_event("writefails", {"p1": 1.0}, 5)),
                      CODEC.encode(zset_event("bug", {"p1": 1.0}, 5)), GOOD])
    assert applier.process(batch)
    assert sorted((o, r) for o, r, _e in dead.sent) == [(0, "unmappable"), (1, "rejected_by_dynamodb"),
                                                        (2, "failed_write")]
    assert dict((o, e) for o, _r, e in dead.sent)[2].startswith("KeyError: ")
    assert _owners(writer) == {"good"}
    assert consumer.commits[-1] == {TopicPartition(TOPIC, 0): 4}


def test_infrastructure_failures_are_retried_then_the_batch_commits_once_without_duplicate_dead_letters(monkeypatch):
    monkeypatch.setattr("replicator.retry.APPLY_BATCH", replace(retry.APPLY_BATCH, base_s=0.001))
    applier, consumer, writer, dead = _applier()
    writer.fail_write[b"good"] = [SinkError("DynamoDB ThrottlingException", retryable=True)] * 3
    assert applier.process(_records([b"garbage", GOOD]), threading.Event())
    assert [(o, r) for o, r, _e in dead.sent] == [(0, "undecodable")]
    assert _owners(writer) == {"good"} and not writer.fail_write[b"good"]
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 2}]


def _chunks(owner: str, version: int, captured_at_us: int) -> list[bytes]:
    event = replace(zset_event(owner, {"a": 1.0, "b": 2.0}, version), captured_at_us=captured_at_us)
    halves = [event.value[:1], event.value[1:]]
    return [CODEC.encode(replace(event, value=half, chunk=Chunk(i, 2))) for i, half in enumerate(halves)]


def test_chunks_across_batches_hold_the_commit_until_the_state_is_whole():
    applier, consumer, writer, _dead = _applier()
    first, second = _chunks("big", 5, 1_000_000)
    assert applier.process(_records([first, GOOD]))
    assert consumer.commits[-1] == {TopicPartition(TOPIC, 0): 0}  # held at the first chunk
    assert _owners(writer) == {"good"}
    assert applier.process(_records([second], start=2))
    assert consumer.commits[-1] == {TopicPartition(TOPIC, 0): 3}
    assert len([w for w in writer.items.values() if dict(w.key)["owner_id"].value == "big"]) == 2


def test_chunks_whose_rest_never_came_stop_holding_the_commit_once_a_much_later_read_is_consumed():
    applier, consumer, _writer, _dead = _applier()
    first, _never = _chunks("orphan", 5, captured_at_us=1_000_000)
    soon = CODEC.encode(replace(zset_event("x", {"p": 1.0}, 6), captured_at_us=1_000_000 + 60_000_000))
    later = CODEC.encode(replace(zset_event("y", {"p": 1.0}, 7), captured_at_us=1_000_000 + 301_000_000))
    assert applier.process(_records([first, soon]))
    assert consumer.commits[-1] == {TopicPartition(TOPIC, 0): 0}  # within the window: the rest may still come
    assert applier.process(_records([later], start=2))
    assert consumer.commits[-1] == {TopicPartition(TOPIC, 0): 3}


def test_a_rebalance_mid_batch_drops_the_partitions_chunks_and_cached_states():
    applier, _consumer, _writer, _dead = _applier()
    first, _second = _chunks("moving", 5, 1_000_000)
    applier.process(_records([first], partition=1))
    assert applier._assembler.held_offset(1) == 0
    applier._forget_partitions({1})
    assert applier._assembler.held_offset(1) is None and len(applier._cache) == 0


def test_a_deleted_key_with_a_binary_owner_of_a_string_attribute_is_poison_not_a_crash():
    applier, _consumer, _writer, dead = _applier()
    deleted = ChangeEvent(b"meta:\xff:p1", KeyType.NONE, Op.DELETE, Origin.LIVE, 9, 9, b"\xff", None)
    assert applier.process(_records([CODEC.encode(deleted), GOOD]))
    assert [r for _o, r, _e in dead.sent] == ["unmappable"]


def test_a_rebalance_while_a_batch_is_written_drops_its_commit_and_cached_states_and_dead_letters_nothing_twice():
    from kafka.errors import CommitFailedError

    applier, consumer, writer, dead = _applier()
    refused = [CommitFailedError("the group rebalanced")]
    real_commit = consumer.commit

    def commit(offsets: dict[TopicPartition, Any]) -> None:
        if refused:
            raise refused.pop()
        real_commit(offsets)

    consumer.commit = commit  # type: ignore[method-assign]
    batch = _records([b"garbage", GOOD])
    assert not applier.process(batch)  # written, but not committed: the partition's new owner re-applies it
    assert len(applier._cache) == 0 and consumer.commits == []
    assert applier.process(batch)  # redelivered here after all
    assert [(o, r) for o, r, _e in dead.sent] == [(0, "undecodable")]
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 2}]
    assert _owners(writer) == {"good"}
