"""Reading a key's whole state and its source version in one atomic step.

A keyspace notification carries no value, so the state is read after the fact. The Lua script reads type, value,
PTTL and the server's TIME together: no write can land between them, so the version really is the version of that
state. Every reader (live listener, snapshot loader, repair) goes through here, which is what makes their events
comparable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from replicator import metrics
from replicator.events import ChangeEvent, KeyType, Op, Origin, Value
from replicator.mapping import RuleSet
from replicator.publish.producer import EventPublisher

READ_STATE = """
local t = redis.call('TYPE', KEYS[1])['ok']
local now = redis.call('TIME')
local pttl = redis.call('PTTL', KEYS[1])
local v = false
if t == 'string' then v = redis.call('GET', KEYS[1])
elseif t == 'hash' then v = redis.call('HGETALL', KEYS[1])
elseif t == 'list' then v = redis.call('LRANGE', KEYS[1], 0, -1)
elseif t == 'set' then v = redis.call('SMEMBERS', KEYS[1])
elseif t == 'zset' then v = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
end
return {t, now[1], now[2], pttl, v}
"""

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
    """Pipelined, atomic reads of many keys in one round trip."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._script = client.register_script(READ_STATE)

    def read(self, keys: Sequence[bytes]) -> list[RawState]:
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            self._script(keys=[key], client=pipe)
        return [_parse(key, reply) for key, reply in zip(keys, pipe.execute(), strict=True)]


def _parse(key: bytes, reply: list) -> RawState:
    raw_type, seconds, micros, pttl, raw = reply
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

    def __init__(self, client: redis.Redis, rules: RuleSet, publisher: EventPublisher, node: str, db: int) -> None:
        self._reader = StateReader(client)
        self._rules = rules
        self._publisher = publisher
        self.node = node
        self.db = db

    def capture(self, keys: Sequence[bytes], origin: Origin) -> int:
        """Returns the number of events handed to the publisher (acknowledged later; see EventPublisher.flush)."""
        now_us = time.time_ns() // 1000
        published = 0
        for state in self._reader.read(keys):
            event = to_event(state, self._rules, origin, self.node, self.db, now_us)
            if event is None:
                continue
            self._publisher.publish(event)
            metrics.EVENTS_CAPTURED.labels(node=self.node, origin=origin.value).inc()
            published += 1
        return published
