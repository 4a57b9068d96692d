"""The Avro codec: every Redis type round-trips, bytes stay bytes, bad input is a clear SerializationError."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.errors import SerializationError
from replicator.events import ChangeEvent, Chunk, EventCodec, KeyType, Op, Origin

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
    """A golden record written with schema v1. If the schema changes, move the old .avsc to schemas/history/."""
    if not FIXTURE.exists():  # pragma: no cover - written once, then committed
        FIXTURE.write_bytes(EventCodec().encode(EVENTS[4]))
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
