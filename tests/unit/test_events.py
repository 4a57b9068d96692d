"""The Avro codec: every Redis type round-trips, bytes stay bytes, bad input is a clear SerializationError."""

from __future__ import annotations

import io
import os
import random
import uuid
from pathlib import Path

import fastavro
import pytest

from replicator.core import avro_body
from replicator.core.avro import EventCodec, current_schema, to_record
from replicator.core.errors import SerializationError
from replicator.core.events import ChangeEvent, Chunk, KeyType, Op, Origin

FIXTURE = Path(__file__).parents[1] / "fixtures" / "change_event_v1.bin"

EVENTS = [
    ChangeEvent(b"s:\xff", KeyType.STRING, Op.UPSERT, Origin.LIVE, 1, 2, b"\xff", b"\x00\x80\xff", 99, "n:1", 0, "e1"),
    ChangeEvent(b"h", KeyType.HASH, Op.UPSERT, Origin.SNAPSHOT, 3, 4, b"h", ((b"f\xfe", b"v\x00"),), None, "n", 1,
                "e2"),
    ChangeEvent(b"l", KeyType.LIST, Op.UPSERT, Origin.REPAIR, 5, 6, b"l", (b"a", b"a", b""), None, "n", 2, "e3"),
    ChangeEvent(b"st", KeyType.SET, Op.UPSERT, Origin.LIVE, 7, 8, b"st", (b"x", b"y"), None, "n", 0, "e4"),
    ChangeEvent(b"z", KeyType.ZSET, Op.UPSERT, Origin.LIVE, 9, 10, b"z", ((b"m", -1.5), (b"n", float("inf"))),
                chunk=Chunk(0, 2)),
    ChangeEvent(b"gone", KeyType.NONE, Op.DELETE, Origin.LIVE, 11, 12, b"gone", None),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type.value)
def test_every_redis_type_round_trips(event):
    codec = EventCodec()
    assert codec.decode(codec.encode(event)) == event


def test_messages_use_avro_single_object_encoding():
    codec = EventCodec()
    data = codec.encode(EVENTS[0])
    assert data[:2] == b"\xc3\x01" and data[2:10] == codec.fingerprint


def test_events_written_by_this_release_stay_readable():
    """A golden record written with schema v1. If the schema changes, move the old .avsc to schemas/history/.

    A missing fixture fails: writing it here would make the test pass whatever the codec reads. Writing a new one is
    a deliberate step (``WRITE_GOLDEN_FIXTURES=1``), for a new schema version only, and the file is committed.
    """
    if os.environ.get("WRITE_GOLDEN_FIXTURES") == "1":
        FIXTURE.write_bytes(EventCodec().encode(EVENTS[4]))
    assert FIXTURE.exists(), (f"{FIXTURE} is missing: restore it from git; only for a new schema version write one "
                              "with WRITE_GOLDEN_FIXTURES=1 pytest tests/unit/test_events.py and commit it")
    assert EventCodec().decode(FIXTURE.read_bytes()) == EVENTS[4]


@pytest.mark.parametrize(("data", "message"), [
    (b"plain text", "not an Avro single-object-encoded ChangeEvent"),
    (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown writer schema fingerprint 0000000000000000"),
    (None, "empty record"),
])
def test_foreign_or_corrupt_records_are_serialization_errors(data, message):
    with pytest.raises(SerializationError, match=message):
        EventCodec().decode(data)


def test_a_truncated_body_is_a_serialization_error():
    data = EventCodec().encode(EVENTS[1])
    with pytest.raises(SerializationError, match="corrupt Avro body"):
        EventCodec().decode(data[:-3])


def _fastavro_body(event: ChangeEvent) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, current_schema().parsed, to_record(event))
    return out.getvalue()


def _random_events(n: int) -> list[ChangeEvent]:
    rng = random.Random(7)

    def blob() -> bytes:
        return rng.randbytes(rng.choice([0, 1, 5, 127, 128, 4095, 4096, 20_000]))

    def number() -> int:
        return rng.choice([0, 1, 63, 64, 4095, 4096, -1, -64, -65, 2**62, -(2**63), 2**63 - 1, rng.getrandbits(52)])

    values = {
        KeyType.STRING: blob,
        KeyType.HASH: lambda: tuple((blob(), blob()) for _ in range(rng.randrange(0, 5))),
        KeyType.LIST: lambda: tuple(blob() for _ in range(rng.randrange(0, 5000, 7))),
        KeyType.SET: lambda: tuple(blob() for _ in range(rng.randrange(0, 5))),
        KeyType.ZSET: lambda: tuple((blob(), rng.choice([0.0, -1.5, 1e300, float("-inf"), rng.random()]))
                                    for _ in range(rng.randrange(0, 5))),
    }
    events = []
    for _ in range(n):
        key_type = rng.choice([*values, KeyType.NONE])
        events.append(ChangeEvent(
            blob(), key_type, Op.DELETE if key_type is KeyType.NONE else Op.UPSERT, rng.choice(list(Origin)),
            number(), number(), blob(), None if key_type is KeyType.NONE else values[key_type](),
            rng.choice([None, number()]), rng.choice(["", "10.0.0.1:6379", "nœud-é"]), rng.randrange(0, 5000),
            ChangeEvent.new_id(), rng.choice([None, Chunk(rng.randrange(5000), 5000)])))
    return events


def test_the_direct_writer_is_for_the_current_schema():
    assert current_schema().fingerprint == avro_body.FINGERPRINT, (
        "schemas/change_event.avsc changed: update replicator/avro_body.py (and its FINGERPRINT) to write it")


@pytest.mark.parametrize("event", EVENTS + _random_events(300), ids=lambda e: e.type.value)
def test_the_direct_writer_writes_what_fastavro_writes(event):
    assert avro_body.body(event) == _fastavro_body(event)
    assert EventCodec().decode(EventCodec().encode(event)) == event


@pytest.mark.parametrize("event", [
    ChangeEvent(b"s", KeyType.STRING, Op.UPSERT, Origin.LIVE, 1, 1, b"s", "text, not bytes"),
    ChangeEvent(b"z", KeyType.ZSET, Op.UPSERT, Origin.LIVE, 1, 1, b"z", ((b"m", "1"),)),
    ChangeEvent(b"x", KeyType.STREAM, Op.UPSERT, Origin.LIVE, 1, 1, b"x", (b"entry",)),
], ids=["str-value", "str-score", "stream"])
def test_an_event_that_cannot_be_encoded_is_a_serialization_error_naming_its_key(event):
    with pytest.raises(SerializationError, match=f"key {event.key!r}: cannot encode event"):
        EventCodec().encode(event)


def test_event_ids_are_distinct_random_uuids():
    ids = [ChangeEvent.new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(str(parsed := uuid.UUID(i)) == i and parsed.version == 4 and parsed.variant == uuid.RFC_4122
               for i in ids)
