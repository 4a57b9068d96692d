"""The Avro wire form of a ChangeEvent: schema loading and the codec.

Wire format: Avro single-object encoding (``C3 01`` + the writer schema's 8-byte CRC-64-AVRO fingerprint + the
binary body). The decoder resolves every known writer schema (the current one and ``schemas/history/*.avsc``) to the
current reader schema, so events written by older replicators stay readable.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from replicator.core import avro_body
from replicator.core.errors import SerializationError
from replicator.core.events import ChangeEvent, Chunk, KeyType, Op, Origin, Value

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONTENT_TYPE = b"application/vnd.replicator.change-event+avro"


# --------------------------------------------------------------------------------------------------------------------
# Schema loading


def schema_dir() -> Path:
    """``schemas/`` of a source checkout, else the copy packaged into the wheel."""
    checkout = Path(__file__).resolve().parents[2] / "schemas"
    if (checkout / "change_event.avsc").exists():
        return checkout
    return Path(str(resources.files("replicator") / "_schemas"))


@dataclass(frozen=True)
class Schema:
    parsed: dict[str, Any]
    fingerprint: bytes


def load_schema(path: Path) -> Schema:
    raw = json.loads(path.read_text())
    parsed = cast(dict[str, Any], parse_schema(raw))
    canonical = to_parsing_canonical_form(parsed)
    return Schema(parsed, bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")))


@cache
def current_schema() -> Schema:
    return load_schema(schema_dir() / "change_event.avsc")


@cache
def known_writer_schemas() -> dict[bytes, Schema]:
    schemas = {current_schema().fingerprint: current_schema()}
    history = schema_dir() / "history"
    if history.is_dir():
        for path in sorted(history.glob("*.avsc")):
            schema = load_schema(path)
            schemas[schema.fingerprint] = schema
    return schemas


# --------------------------------------------------------------------------------------------------------------------
# Codec

_VALUE_BRANCH = {
    KeyType.HASH: "replicator.v1.HashValue",
    KeyType.LIST: "replicator.v1.ListValue",
    KeyType.SET: "replicator.v1.SetValue",
    KeyType.ZSET: "replicator.v1.ZSetValue",
}


def to_record(event: ChangeEvent) -> dict[str, Any]:
    value: Any
    if event.value is None:
        value = None
    elif event.type is KeyType.STRING:
        value = event.value
    elif event.type is KeyType.HASH:
        fields = cast(tuple[tuple[bytes, bytes], ...], event.value)
        value = (_VALUE_BRANCH[KeyType.HASH], {"fields": [{"field": f, "value": v} for f, v in fields]})
    elif event.type is KeyType.LIST:
        value = (_VALUE_BRANCH[KeyType.LIST], {"items": list(event.value)})
    elif event.type is KeyType.SET:
        value = (_VALUE_BRANCH[KeyType.SET], {"members": list(event.value)})
    elif event.type is KeyType.ZSET:
        scored = cast(tuple[tuple[bytes, float], ...], event.value)
        value = (_VALUE_BRANCH[KeyType.ZSET], {"members": [{"member": m, "score": s} for m, s in scored]})
    else:
        raise SerializationError(f"key {event.key!r}: no Avro value form for Redis type {event.type.value}")
    return {
        "event_id": event.event_id,
        "source": {"node": event.node, "db": event.db, "key": event.key, "type": event.type.value},
        "owner": event.owner,
        "op": event.op.value,
        "origin": event.origin.value,
        "version": event.version,
        "captured_at_us": event.captured_at_us,
        "expire_at_ms": event.expire_at_ms,
        "value": value,
        "chunk": None if event.chunk is None else {"index": event.chunk.index, "count": event.chunk.count},
    }


def from_record(record: dict[str, Any]) -> ChangeEvent:
    source = record["source"]
    key_type = KeyType(source["type"])
    raw = record["value"]
    value: Value
    if raw is None or isinstance(raw, bytes):
        value = raw
    else:
        _name, body = raw
        if key_type is KeyType.HASH:
            value = tuple((f["field"], f["value"]) for f in body["fields"])
        elif key_type is KeyType.LIST:
            value = tuple(body["items"])
        elif key_type is KeyType.SET:
            value = tuple(body["members"])
        elif key_type is KeyType.ZSET:
            value = tuple((m["member"], m["score"]) for m in body["members"])
        else:
            raise SerializationError(f"key {source['key']!r}: value of type {key_type.value} is not decodable")
    chunk = record.get("chunk")
    return ChangeEvent(
        key=source["key"],
        type=key_type,
        op=Op(record["op"]),
        origin=Origin(record["origin"]),
        version=record["version"],
        captured_at_us=record["captured_at_us"],
        owner=record["owner"],
        value=value,
        expire_at_ms=record.get("expire_at_ms"),
        node=source["node"],
        db=source["db"],
        event_id=record["event_id"],
        chunk=None if chunk is None else Chunk(chunk["index"], chunk["count"]),
    )


class EventCodec:
    """Single-object-encoded Avro. Stateless apart from the schemas; safe to share between threads."""

    def __init__(self, schema: Schema | None = None) -> None:
        self.schema = schema or current_schema()
        self._header = SINGLE_OBJECT_MAGIC + self.schema.fingerprint
        self._writers = known_writer_schemas() if schema is None else {self.schema.fingerprint: self.schema}
        #: The direct writer when it knows this schema (always, for the current one), else fastavro's.
        self._body = avro_body.body if self.schema.fingerprint == avro_body.FINGERPRINT else self._generic

    @property
    def fingerprint(self) -> bytes:
        return self.schema.fingerprint

    def encode(self, event: ChangeEvent) -> bytes:
        try:
            return self._header + self._body(event)
        except (ValueError, TypeError, AttributeError, struct.error) as exc:
            raise SerializationError(f"key {event.key!r}: cannot encode event: {exc}") from None

    def _generic(self, event: ChangeEvent) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self.schema.parsed, to_record(event))
        return out.getvalue()

    def decode(self, data: bytes) -> ChangeEvent:
        if data is None:
            raise SerializationError("empty record (null value); expected an Avro single-object-encoded ChangeEvent")
        if data[:2] != SINGLE_OBJECT_MAGIC or len(data) < 10:
            raise SerializationError(
                f"not an Avro single-object-encoded ChangeEvent (starts with {data[:4]!r}); "
                "was it written by another producer to this topic?"
            )
        writer = self._writers.get(data[2:10])
        if writer is None:
            raise SerializationError(
                f"unknown writer schema fingerprint {data[2:10].hex()}; add that schema to schemas/history/ "
                "or upgrade the applier"
            )
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[10:]), writer.parsed, self.schema.parsed,
                return_record_name=True, return_record_name_override=True,
            )
            return from_record(cast(dict[str, Any], record))
        except SerializationError:
            raise
        except Exception as exc:  # fastavro raises a zoo of types on corrupt input
            raise SerializationError(f"corrupt Avro body: {type(exc).__name__}: {exc}") from None
