"""The Avro binary body of a ChangeEvent, written straight from the event.

fastavro's writer is generic: it walks a dict record against the parsed schema and resolves the ``value`` union by
trying its branches, which makes encoding the largest per-event cost of capture after the Kafka client itself. This
writer knows the one schema it writes (:data:`FINGERPRINT`) and produces the same bytes as fastavro, several times
faster. :class:`replicator.core.avro.EventCodec` uses it only for that schema; a test compares both writers byte
for byte and pins the fingerprint, so changing ``change_event.avsc`` without updating this module fails loudly.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from replicator.core.events import ChangeEvent, KeyType

#: CRC-64-AVRO fingerprint of the schema this module writes (``schemas/change_event.avsc``).
FINGERPRINT = bytes.fromhex("aa434aec1e889a22")

_SMALL = 4096  # non-negative ints below this have their encoding precomputed


def _varint(n: int) -> bytes:
    """Avro ``long``: zig-zag, then 7 bits per byte, low bits first."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL_LONGS = [_varint(n) for n in range(_SMALL)]


#: Versions and capture times repeat within a batch (a script call's keys share its TIME; a batch its capture time).
_recent_varint = lru_cache(maxsize=1024)(_varint)


def long(n: int) -> bytes:
    return _SMALL_LONGS[n] if 0 <= n < _SMALL else _recent_varint(n)


def _blob(data: bytes) -> bytes:
    n = len(data)
    return (_SMALL_LONGS[n] if n < _SMALL else _varint(n)) + data


@lru_cache(maxsize=256)
def _text(text: str) -> bytes:
    """An Avro string that repeats (node names)."""
    return _blob(text.encode())


_DOUBLE = struct.Struct("<d").pack
# Keyed by the members' _value_: an Enum member's hash and .value are Python-level calls, its _value_ a plain field.
_TYPE_INDEX = {t: long(i) for i, t in enumerate(
    ["NONE", "STRING", "HASH", "LIST", "SET", "ZSET", "STREAM", "UNKNOWN"])}
_OP_INDEX = {"UPSERT": b"\x00", "DELETE": b"\x02"}
_ORIGIN_INDEX = {"LIVE": b"\x00", "SNAPSHOT": b"\x02", "REPAIR": b"\x04"}
_NULL, _BYTES, _HASH, _LIST, _SET, _ZSET = (long(i) for i in range(6))  # branches of the value union
_SOME = b"\x02"  # the second branch of a ["null", T] union


def body(event: ChangeEvent) -> bytes:
    """The Avro binary encoding of ``event`` under :data:`FINGERPRINT` (without the single-object header)."""
    key_type = event.type
    parts = [
        _blob(event.event_id.encode()),
        _text(event.node), long(event.db), _blob(event.key), _TYPE_INDEX[key_type._value_],
        _blob(event.owner), _OP_INDEX[event.op._value_], _ORIGIN_INDEX[event.origin._value_],
        long(event.version), long(event.captured_at_us),
        b"\x00" if event.expire_at_ms is None else _SOME + long(event.expire_at_ms),
    ]
    value = event.value
    if value is None:
        parts.append(_NULL)
    elif key_type is KeyType.STRING:
        parts += (_BYTES, _blob(value))  # type: ignore[arg-type]
    else:
        if key_type is KeyType.HASH:
            parts.append(_HASH)
            items = [_blob(f) + _blob(v) for f, v in value]  # type: ignore[misc, arg-type]
        elif key_type is KeyType.LIST:
            parts.append(_LIST)
            items = [_blob(item) for item in value]  # type: ignore[arg-type]
        elif key_type is KeyType.SET:
            parts.append(_SET)
            items = [_blob(member) for member in value]  # type: ignore[arg-type]
        elif key_type is KeyType.ZSET:
            parts.append(_ZSET)
            items = [_blob(m) + _DOUBLE(s) for m, s in value]  # type: ignore[misc, arg-type]
        else:
            raise TypeError(f"no Avro value form for Redis type {key_type.value}")
        if items:  # one block of all the items, then the empty block that ends the array (as fastavro writes it)
            parts.append(long(len(items)))
            parts += items
        parts.append(b"\x00")
    chunk = event.chunk
    parts.append(b"\x00" if chunk is None else _SOME + long(chunk.index) + long(chunk.count))
    return b"".join(parts)
