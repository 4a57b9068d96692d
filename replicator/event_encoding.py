"""The Avro binary body of a ChangeEvent, written straight from the event.

fastavro's writer is generic: it walks a dict record against the parsed schema and resolves the ``value`` union by
trying its branches, which makes encoding the largest per-event cost of capture after the Kafka client itself. This
writer knows the one schema it writes (:data:`FINGERPRINT`) and produces the same bytes as fastavro, several times
faster. :class:`replicator.events.EventCodec` uses it only for that schema; a test compares both writers byte for byte
and pins the fingerprint, so changing ``change_event.avsc`` without updating this module fails loudly.
"""

from __future__ import annotations

import struct

from replicator.events import ChangeEvent, KeyType

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


def long(n: int) -> bytes:
    return _SMALL_LONGS[n] if 0 <= n < _SMALL else _varint(n)


def _blob(data: bytes) -> bytes:
    n = len(data)
    return (_SMALL_LONGS[n] if n < _SMALL else _varint(n)) + data


_DOUBLE = struct.Struct("<d").pack
_TYPE_INDEX = {t: long(i) for i, t in enumerate(
    [KeyType.NONE, KeyType.STRING, KeyType.HASH, KeyType.LIST, KeyType.SET, KeyType.ZSET, KeyType.STREAM,
     KeyType.UNKNOWN])}
_OP_INDEX = {"UPSERT": b"\x00", "DELETE": b"\x02"}
_ORIGIN_INDEX = {"LIVE": b"\x00", "SNAPSHOT": b"\x02", "REPAIR": b"\x04"}
_NULL, _BYTES, _HASH, _LIST, _SET, _ZSET = (long(i) for i in range(6))  # branches of the value union
_SOME = b"\x02"  # the second branch of a ["null", T] union


def body(event: ChangeEvent) -> bytes:
    """The Avro binary encoding of ``event`` under :data:`FINGERPRINT` (without the single-object header)."""
    key_type = event.type
    parts = [
        _blob(event.event_id.encode()),
        _blob(event.node.encode()), long(event.db), _blob(event.key), _TYPE_INDEX[key_type],
        _blob(event.owner), _OP_INDEX[event.op.value], _ORIGIN_INDEX[event.origin.value],
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
            items = [_blob(f) + _blob(v) for f, v in value]  # type: ignore[misc]
        elif key_type is KeyType.LIST:
            parts.append(_LIST)
            items = [_blob(item) for item in value]  # type: ignore[arg-type]
        elif key_type is KeyType.SET:
            parts.append(_SET)
            items = [_blob(member) for member in value]  # type: ignore[arg-type]
        elif key_type is KeyType.ZSET:
            parts.append(_ZSET)
            items = [_blob(m) + _DOUBLE(s) for m, s in value]  # type: ignore[misc]
        else:
            raise TypeError(f"no Avro value form for Redis type {key_type.value}")
        if items:  # one block of all the items, then the empty block that ends the array (as fastavro writes it)
            parts.append(long(len(items)))
            parts += items
        parts.append(b"\x00")
    chunk = event.chunk
    parts.append(b"\x00" if chunk is None else _SOME + long(chunk.index) + long(chunk.count))
    return b"".join(parts)
