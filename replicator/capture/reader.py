"""Reading a key's whole state and its source version in one atomic step.

A keyspace notification carries no value, so the state is read after the fact. The Lua script reads type, value,
PTTL and the server's TIME together: no write can land between them, so the version really is the version of that
state. Every reader (live listener, snapshot loader, repair) goes through here, which is what makes their events
comparable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import redis

from replicator import metrics
from replicator.config import CaptureConfig
from replicator.events import ChangeEvent, Chunk, KeyType, Op, Origin, Value
from replicator.mapping import RuleSet
from replicator.publish.producer import EventPublisher

READ_STATE = """
local t = redis.call('TYPE', KEYS[1])['ok']
local now = redis.call('TIME')
local pttl = redis.call('PTTL', KEYS[1])
local n = 0
if t == 'hash' then n = redis.call('HLEN', KEYS[1])
elseif t == 'list' then n = redis.call('LLEN', KEYS[1])
elseif t == 'set' then n = redis.call('SCARD', KEYS[1])
elseif t == 'zset' then n = redis.call('ZCARD', KEYS[1])
end
if n > tonumber(ARGV[1]) then return {t, now[1], now[2], pttl, false, n} end
local v = false
if t == 'string' then v = redis.call('GET', KEYS[1])
elseif t == 'hash' then v = redis.call('HGETALL', KEYS[1])
elseif t == 'list' then v = redis.call('LRANGE', KEYS[1], 0, -1)
elseif t == 'set' then v = redis.call('SMEMBERS', KEYS[1])
elseif t == 'zset' then v = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
end
return {t, now[1], now[2], pttl, v, n}
"""
#: Members per page when a big collection is read with ZSCAN/HSCAN/SSCAN/LRANGE.
PAGE = 1000

_TYPES = {
    b"none": KeyType.NONE,
    b"string": KeyType.STRING,
    b"hash": KeyType.HASH,
    b"list": KeyType.LIST,
    b"set": KeyType.SET,
    b"zset": KeyType.ZSET,
    b"stream": KeyType.STREAM,
}


@dataclass(frozen=True)
class RawState:
    key: bytes
    type: KeyType
    version: int  # server TIME, µs
    pttl_ms: int
    value: Value


class StateReader:
    """Pipelined, atomic reads of many keys in one round trip.

    A collection above ``max_inline_members`` is not returned by the script (one huge reply would block Redis); it is
    read afterwards in pages. That read is not atomic, so its version is the TIME taken *before* it: any write that
    lands during the paging sends a notification, and the read that follows it has a newer version and wins.
    """

    def __init__(self, client: redis.Redis, max_inline_members: int = 10_000) -> None:
        self._client = client
        self._script = client.register_script(READ_STATE)
        self._max_inline = max_inline_members

    def read(self, keys: Sequence[bytes]) -> list[RawState]:
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            self._script(keys=[key], args=[self._max_inline], client=pipe)
        states = []
        for key, reply in zip(keys, pipe.execute(), strict=True):
            if reply[4] is None and len(reply) > 5 and reply[5] > self._max_inline:
                reply = [*reply[:4], self._read_paged(key, reply[0], reply[5])]
            states.append(_parse(key, reply))
        return states

    def _read_paged(self, key: bytes, raw_type: bytes, size: int) -> list[bytes] | None:
        """The flat reply shape of the inline read (HGETALL / ZRANGE WITHSCORES / SMEMBERS / LRANGE), page by page."""
        client = self._client
        flat: list[bytes] = []
        if raw_type == b"zset":
            for member, score in dict(client.zscan_iter(key, count=PAGE, score_cast_func=bytes)).items():
                flat += [member, score]
        elif raw_type == b"hash":
            for field, value in dict(client.hscan_iter(key, count=PAGE)).items():
                flat += [field, value]
        elif raw_type == b"set":
            flat = list(dict.fromkeys(client.sscan_iter(key, count=PAGE)))
        elif raw_type == b"list":
            for start in range(0, size, PAGE):
                flat += client.lrange(key, start, start + PAGE - 1)
        else:
            return None
        return flat


def _parse(key: bytes, reply: list) -> RawState:
    raw_type, seconds, micros, pttl, raw = reply[:5]
    key_type = _TYPES.get(raw_type, KeyType.UNKNOWN)
    value: Value
    if key_type is KeyType.STRING:
        value = raw
    elif key_type is KeyType.HASH:
        value = tuple(zip(raw[0::2], raw[1::2], strict=True))
    elif key_type in (KeyType.LIST, KeyType.SET):
        value = tuple(raw)
    elif key_type is KeyType.ZSET:
        value = tuple((m, float(s)) for m, s in zip(raw[0::2], raw[1::2], strict=True))
    else:
        value = None
    return RawState(key, key_type, int(seconds) * 1_000_000 + int(micros), int(pttl), value)


def to_events(state: RawState, rules: RuleSet, origin: Origin, node: str, db: int, captured_at_us: int,
              chunk_bytes: int) -> list[ChangeEvent]:
    """The state as one event, or as chunks of one version when its value is larger than ``chunk_bytes``."""
    event = to_event(state, rules, origin, node, db, captured_at_us)
    if event is None:
        return []
    pieces = split_value(event.value, chunk_bytes)
    if len(pieces) <= 1:
        return [event]
    return [replace(event, value=piece, chunk=Chunk(i, len(pieces))) for i, piece in enumerate(pieces)]


def split_value(value: Value, chunk_bytes: int) -> list[Value]:
    """Split a value into pieces of about ``chunk_bytes`` (bytes sliced; collections by whole members)."""
    if value is None:
        return [value]
    if isinstance(value, bytes):
        return [value[i : i + chunk_bytes] for i in range(0, len(value), chunk_bytes)] or [value]
    pieces: list[Value] = []
    current: list = []
    size = 0
    for element in value:
        weight = 8 + (len(element) if isinstance(element, bytes) else sum(
            len(part) if isinstance(part, bytes) else 8 for part in element))
        if current and size + weight > chunk_bytes:
            pieces.append(tuple(current))
            current, size = [], 0
        current.append(element)
        size += weight
    pieces.append(tuple(current))
    return pieces


def to_event(state: RawState, rules: RuleSet, origin: Origin, node: str, db: int, captured_at_us: int,
             ) -> ChangeEvent | None:
    """The event for a read state, or None when no rule captures the key or its type is not replicated."""
    matched = rules.match(state.key)
    if matched is None:
        return None
    rule, variables = matched
    if state.type in (KeyType.STREAM, KeyType.UNKNOWN):
        return None
    deleted = state.type is KeyType.NONE
    expire_at = None
    if not deleted and state.pttl_ms > 0:
        expire_at = state.version // 1000 + state.pttl_ms
    return ChangeEvent(
        key=state.key,
        type=state.type,
        op=Op.DELETE if deleted else Op.UPSERT,
        origin=origin,
        version=state.version,
        captured_at_us=captured_at_us,
        owner=rules.owner(rule, state.key, variables),
        value=None if deleted else state.value,
        expire_at_ms=expire_at,
        node=node,
        db=db,
        event_id=ChangeEvent.new_id(),
    )


class KeyCapture:
    """Read keys atomically and publish their states: the one path shared by the listener, snapshot and repair."""

    def __init__(self, client: redis.Redis, rules: RuleSet, publisher: EventPublisher, node: str, db: int,
                 config: CaptureConfig | None = None) -> None:
        config = config or CaptureConfig()
        from replicator.capture.cluster import state_reader  # cluster.py builds on this module

        self._reader = state_reader(client, config.max_inline_members)
        self._chunk_bytes = config.chunk_bytes
        self._rules = rules
        self._publisher = publisher
        self.node = node
        self.db = db

    def capture(self, keys: Sequence[bytes], origin: Origin) -> int:
        """Returns the number of events handed to the publisher (acknowledged later; see EventPublisher.flush)."""
        now_us = time.time_ns() // 1000
        published = 0
        for state in self._reader.read(keys):
            events = to_events(state, self._rules, origin, self.node, self.db, now_us, self._chunk_bytes)
            for event in events:
                self._publisher.publish(event)
            if events:
                metrics.EVENTS_CAPTURED.labels(node=self.node, origin=origin.value).inc()
                published += 1
        return published
