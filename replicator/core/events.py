"""ChangeEvent, the unit that flows through the pipeline (its wire form is :mod:`replicator.core.avro`).

An event is the *whole state* of one Redis key at one source version, never an operation. Values are bytes throughout:
Redis is binary-safe and so is the pipeline.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class KeyType(enum.Enum):
    NONE = "NONE"
    STRING = "STRING"
    HASH = "HASH"
    LIST = "LIST"
    SET = "SET"
    ZSET = "ZSET"
    STREAM = "STREAM"
    UNKNOWN = "UNKNOWN"


class Op(enum.Enum):
    UPSERT = "UPSERT"
    DELETE = "DELETE"


class Origin(enum.Enum):
    LIVE = "LIVE"
    SNAPSHOT = "SNAPSHOT"
    REPAIR = "REPAIR"


#: string: bytes; hash: ((field, value), ...); list and set: (item, ...); zset: ((member, score), ...)
Value = bytes | tuple[tuple[bytes, bytes], ...] | tuple[bytes, ...] | tuple[tuple[bytes, float], ...] | None


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    count: int


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    key: bytes
    type: KeyType
    op: Op
    origin: Origin
    version: int
    captured_at_us: int
    owner: bytes
    value: Value
    expire_at_ms: int | None = None
    node: str = ""
    db: int = 0
    event_id: str = ""
    chunk: Chunk | None = None

    @staticmethod
    def new_id() -> str:
        """A random (version 4) UUID. Not ``uuid4()``: it reads os.urandom for every event, which costs tens of µs
        on some VMs; ids need uniqueness, not secrecy (``random`` is seeded from urandom and reseeded after fork)."""
        h = "%032x" % (random.getrandbits(128) & _UUID4_KEEP | _UUID4_SET)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"  # uuid.UUID would cost as much as the rest of it


#: The version (4) and variant (RFC 4122) bits of a random UUID.
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
