"""The batched PartiQL writes against DynamoDB Local leave exactly what one UpdateItem per write leaves.

One seeded stream of change events (sorted sets and side keys sharing items, mirrored strings, hashes, sets, lists
and zsets with +inf scores, binary and unicode keys, deletes, replays of older versions, a value in parts, a string
too big for an item) is applied twice through the applier, once per write mode, into tables of their own; then
every table (items, parts, heads) is read whole and compared, and so are the dead letters.
"""

from __future__ import annotations

import math
import random
from collections import namedtuple
from typing import Any

import pytest
from kafka import TopicPartition

from replicator.adapters.dynamodb.store import DynamoWriter
from replicator.adapters.dynamodb.tables import create_tables
from replicator.adapters.kafka.consumer import GroupConsumer
from replicator.apply.applier import Applier
from replicator.core.avro import EventCodec
from replicator.core.config import parse_config
from replicator.core.events import ChangeEvent, KeyType, Op, Origin
from tests.support import ddb, messaging_config_data, scan_all

Record = namedtuple("Record", "topic partition offset key value timestamp")
CODEC = EventCodec()


class _Consumer:
    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", 0)}

    def pause(self, *_tps: Any) -> None: ...

    def resume(self, *_tps: Any) -> None: ...

    def paused(self) -> set[TopicPartition]:
        return set()

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        return {}

    def commit(self, offsets: Any) -> None: ...


class _DeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def send(self, record: Any, reason: str, error: str) -> None:
        self.sent.append((record.offset, reason))

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _events(seed: int = 7, count: int = 600) -> list[ChangeEvent]:
    rng = random.Random(seed)
    owners = ["alice", "bob", "zoë", "o:with:colons", "sp ace"]
    version = 1_000
    events: list[ChangeEvent] = []
    for _ in range(count):
        version += rng.randint(1, 3)
        owner = rng.choice(owners)
        kind = rng.random()
        if kind < 0.45:
            key = f"opponents:{owner}".encode()
            members = tuple((f"p{rng.randint(0, 12)}".encode(), float(rng.randint(0, 5)))
                            for _ in range(rng.randint(0, 8)))
            members = tuple(dict(members).items())
            event = (ChangeEvent(key, KeyType.ZSET, Op.UPSERT, Origin.LIVE, version, version, owner.encode(),
                                 members) if members and rng.random() > 0.1
                     else ChangeEvent(key, KeyType.NONE, Op.DELETE, Origin.LIVE, version, version, owner.encode(),
                                      None))
        elif kind < 0.65:
            key = f"meta:{owner}:p{rng.randint(0, 12)}".encode()
            value = rng.choice([b"pinned", b"muted", b"", None])
            event = (ChangeEvent(key, KeyType.NONE, Op.DELETE, Origin.LIVE, version, version, owner.encode(), None)
                     if value is None else
                     ChangeEvent(key, KeyType.STRING, Op.UPSERT, Origin.LIVE, version, version, owner.encode(),
                                 value))
        else:
            key = rng.choice([b"bin:\xff\x00\xfe", b"s:1", b"h:1", b"set:1", b"l:1", b"z:inf", "ü:ni".encode()])
            key_type, value = rng.choice([
                (KeyType.STRING, rng.randbytes(rng.randint(0, 64))),
                (KeyType.HASH, ((b"f1", b"v1"), (b"f2", rng.randbytes(8)))),
                (KeyType.SET, (b"a", b"b", rng.randbytes(4))),
                (KeyType.LIST, (b"x", b"x", b"y")),
                (KeyType.ZSET, ((b"top", math.inf), (b"bottom", -math.inf), (b"mid", 1.5))),
                (KeyType.NONE, None),
            ])
            op = Op.DELETE if key_type is KeyType.NONE else Op.UPSERT
            event = ChangeEvent(key, key_type, op, Origin.LIVE, version, version, key, value)
        events.append(event)
        if rng.random() < 0.08 and len(events) > 5:
            events.append(rng.choice(events[:-1]))  # a replay of an older state: stale
    version += 1
    events.append(ChangeEvent(b"s:big", KeyType.STRING, Op.UPSERT, Origin.LIVE, version, version, b"s",
                              rng.randbytes(700_000)))  # mirrored in parts
    events.append(ChangeEvent(b"meta:alice:huge", KeyType.STRING, Op.UPSERT, Origin.LIVE, version, version,
                              b"alice", b"m" * 450_000))  # no rule can hold it: poison
    return events


def _apply(stack: Any, uid: str, mode: str, events: list[ChangeEvent]) -> tuple[dict[str, Any], list[Any]]:
    config = parse_config(messaging_config_data(stack, uid, apply={"write_mode": mode, "max_batch": 40}))
    rules = config.rule_set
    client = ddb(stack)
    create_tables(client, rules, config.dynamodb.state_table)
    writer = DynamoWriter(client, rules, config.tombstones, config.dynamodb.state_table)
    dead = _DeadLetters()
    applier = Applier(GroupConsumer(_Consumer(), "t"), writer, rules, config.apply, dead)  # type: ignore[arg-type]
    records = [Record("t", 0, i, b"k", CODEC.encode(e), 0) for i, e in enumerate(events)]
    for start in range(0, len(records), 40):
        assert applier.process({TopicPartition("t", 0): records[start:start + 40]})
    tables = {
        "messaging": f"messaging_{uid}", "mirror": f"mirror_{uid}", "parts": f"mirror_{uid}_parts",
        "state": config.dynamodb.state_table,
    }
    return {name: _normalised(scan_all(client, table), config.tombstones.ttl_attribute)
            for name, table in tables.items()}, dead.sent


def _normalised(items: list[dict[str, Any]], ttl: str) -> list[Any]:
    """Items comparable across runs: a TTL is a clock reading, so only whether it is set counts."""
    out = []
    for item in items:
        item = dict(item)
        if ttl in item:
            item[ttl] = "set"
        out.append(repr(sorted(item.items())))
    return sorted(out)


@pytest.mark.parametrize("mode", ["batch", "transaction"])
def test_batched_writes_leave_what_single_item_writes_leave(stack, uid, mode):
    events = _events()
    want, want_dead = _apply(stack, f"{uid}_item", "item", events)
    got, got_dead = _apply(stack, f"{uid}_{mode}", mode, events)
    assert sum(len(v) for v in want.values()) > 50
    assert want_dead == got_dead and [r for _o, r in want_dead] == ["rejected_by_dynamodb"]
    for table in want:
        assert got[table] == want[table], table
