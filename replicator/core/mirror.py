"""The default mirror's values above DynamoDB's item limit: stored in parts, read back whole.

The mirror holds any Redis value (the default for every key no rule maps), but a DynamoDB item holds at most
400 KB. A value above ``INLINE_BYTES`` is therefore written to the parts table ``<mirror>_parts`` (partition key
``key``, sort key ``part`` = version and index) as slices of a compact binary encoding of the typed
value, and the mirror item holds ``parts`` (how many) instead of ``value``. The sort key is a string of fixed-width
digits (``<version:020>.<index:010>``): it sorts the same way everywhere, where binary sort keys are compared as
signed bytes by some emulators.

Parts are immutable: a version's parts are written before the mirror item that points at them, so a reader that
reads the item and then its version's parts always sees one whole value. Parts of older versions are deleted once
a newer item is in place (never newer ones: a zombie applier may be writing those); parts of a write that turned
out stale are deleted by the writer. The encoding and the split are pure; ``read_value`` is the one reader.
"""

from __future__ import annotations

import struct
from typing import Any

from replicator.core.sizes import attribute_size
from replicator.core.values import B, L, M, N, S, TypedValue

#: Values whose DynamoDB size is above this go to parts (the item limit is 400 KB, key and other attributes included).
INLINE_BYTES = 350 * 1024
#: Bytes of encoded value per part item.
PART_BYTES = 350 * 1024

_LEN = struct.Struct(">I")


def parts_table(mirror_table: str) -> str:
    return f"{mirror_table}_parts"


def needs_parts(value: TypedValue) -> bool:
    return attribute_size("value", value) > INLINE_BYTES


def encode(value: TypedValue) -> bytes:
    """A compact, self-delimiting binary form of a typed value: tag, length or count, payload."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value: TypedValue, out: bytearray) -> None:
    out += value.kind.encode()[:1]
    if isinstance(value, L):
        out += _LEN.pack(len(value.value))
        for element in value.value:
            _encode(element, out)
    elif isinstance(value, M):
        out += _LEN.pack(len(value.value))
        for name, element in value.value:
            _encode(S(name), out)
            _encode(element, out)
    else:
        data = value.value if isinstance(value, B) else str(value.value).encode()
        out += _LEN.pack(len(data))
        out += data


def decode(data: bytes) -> TypedValue:
    value, end = _decode(memoryview(data), 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} trailing bytes after a mirror value")
    return value


def _decode(data: memoryview, pos: int) -> tuple[TypedValue, int]:
    kind = chr(data[pos])
    (n,) = _LEN.unpack_from(data, pos + 1)
    pos += 5
    if kind == "L":
        elements = []
        for _ in range(n):
            element, pos = _decode(data, pos)
            elements.append(element)
        return L(tuple(elements)), pos
    if kind == "M":
        fields: list[tuple[str, TypedValue]] = []
        for _ in range(n):
            name, pos = _decode(data, pos)
            element, pos = _decode(data, pos)
            fields.append((str(name.value), element))
        return M(tuple(sorted(fields))), pos
    raw = bytes(data[pos:pos + n])
    if kind == "B":
        return B(raw), pos + n
    if kind == "S":
        return S(raw.decode()), pos + n
    if kind == "N":
        return N(raw.decode()), pos + n
    raise ValueError(f"unknown tag {kind!r} in a mirror value")


def split(value: TypedValue, part_bytes: int = PART_BYTES) -> tuple[bytes, ...]:
    data = encode(value)
    return tuple(data[i:i + part_bytes] for i in range(0, len(data), part_bytes))


def part_name(version: int, index: int) -> str:
    return f"{version:020d}.{index:010d}"


def part_key(key: bytes, version: int, index: int) -> dict[str, Any]:
    return {"key": {"B": key}, "part": {"S": part_name(version, index)}}


def part_range(key: bytes, low: tuple[int, int], high: tuple[int, int]) -> dict[str, Any]:
    """Key condition (names and values included) for ``key``'s parts from (version, index) ``low`` to ``high``."""
    return {
        "KeyConditionExpression": "#k = :k AND #p BETWEEN :lo AND :hi",
        "ExpressionAttributeNames": {"#k": "key", "#p": "part"},
        "ExpressionAttributeValues": {":k": {"B": key}, ":lo": {"S": part_name(*low)},
                                      ":hi": {"S": part_name(*high)}},
    }


#: The highest part index.
LAST = 9_999_999_999
