"""Reading a key's whole state and its source version in one atomic step.

A keyspace notification carries no value, so the state is read after the fact. The Lua script reads type, value,
PTTL and the server's TIME together: no write can land between them, so the version really is the version of that
state. Every reader (live listener, snapshot loader, repair) goes through here, which is what makes their events
comparable.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import redis

from replicator import metrics
from replicator.adapters.kafka.producer import EventPublisher
from replicator.core.config import CaptureConfig
from replicator.core.events import ChangeEvent, Chunk, KeyType, Op, Origin, Value
from replicator.core.mapping import RuleSet
from replicator.core.shards import in_shard

log = logging.getLogger(__name__)

READ_STATES = """
local budget = tonumber(ARGV[1])
local spent = 0
local out = {}
for i, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key)['ok']
  local n = 0
  if t == 'hash' then n = redis.call('HLEN', key)
  elseif t == 'list' then n = redis.call('LLEN', key)
  elseif t == 'set' then n = redis.call('SCARD', key)
  elseif t == 'zset' then n = redis.call('ZCARD', key)
  end
  if n <= budget then
    if i > 1 and spent + n > budget then return out end
    spent = spent + n + 1
  end
  local now = redis.call('TIME')
  local pttl = redis.call('PTTL', key)
  local v = false
  if n > budget then v = false
  elseif t == 'string' then v = redis.call('GET', key)
  elseif t == 'hash' then v = redis.call('HGETALL', key)
  elseif t == 'list' then v = redis.call('LRANGE', key, 0, -1)
  elseif t == 'set' then v = redis.call('SMEMBERS', key)
  elseif t == 'zset' then v = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  end
  out[i] = {t, now[1], now[2], pttl, v, n}
end
return out
"""
#: Keys per script call on a single server (a cluster node takes one: the keys of one call must share a slot).
KEYS_PER_CALL = 100
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


#: Redis types no rule or mirror item can hold yet.
_UNSUPPORTED = (KeyType.STREAM, KeyType.UNKNOWN)


@dataclass(frozen=True, slots=True)
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

    def __init__(self, client: redis.Redis, max_inline_members: int = 10_000, keys_per_call: int = KEYS_PER_CALL,
                 ) -> None:
        self._client = client
        self._script = client.register_script(READ_STATES)
        self._max_inline = max_inline_members
        self._per_call = keys_per_call

    def read(self, keys: Sequence[bytes]) -> list[RawState]:
        """The states of ``keys``, in order.

        Many keys per script call: a call costs Redis and the client far more than reading one small key. A call
        stops early once it has read ``max_inline_members`` members (so no call blocks Redis longer than one big key
        would); the keys it did not reach go in the next round.
        """
        states: list[RawState | None] = [None] * len(keys)
        pending = list(range(len(keys)))
        while pending:
            calls = [pending[i:i + self._per_call] for i in range(0, len(pending), self._per_call)]
            pipe = self._client.pipeline(transaction=False)
            for call in calls:
                self._script(keys=[keys[i] for i in call], args=[self._max_inline], client=pipe)
            pending = []
            for call, replies in zip(calls, pipe.execute(), strict=True):
                for i, reply in zip(call, replies, strict=False):  # a call that stopped early is shorter
                    if reply[4] is None and reply[5] > self._max_inline:
                        reply = [*reply[:4], self._read_paged(keys[i], reply[0], reply[5])]
                    states[i] = _parse(keys[i], reply)
                pending += call[len(replies):]
        return states  # type: ignore[return-value]  # every position is filled

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
    if type(event.value) is bytes and len(event.value) <= chunk_bytes:
        return [event]
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
    if state.type in _UNSUPPORTED:
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
    """Read keys atomically and publish their states: the one path shared by the listener, snapshot and repair.

    With ``capture.shards`` > 1, keys whose owner is not in ``capture.shard`` are left to the other shards.
    """

    def __init__(self, client: redis.Redis, rules: RuleSet, publisher: EventPublisher, node: str, db: int,
                 config: CaptureConfig | None = None) -> None:
        config = config or CaptureConfig()
        from replicator.adapters.redis.cluster import state_reader  # cluster.py builds on this module

        self._reader = state_reader(client, config.max_inline_members)
        self._chunk_bytes = config.chunk_bytes
        self._shard, self._shards = config.shard, config.shards
        self._rules = rules
        self._publisher = publisher
        self.node = node
        self.db = db
        #: The labelled counters, looked up once: a lookup costs more than the increment.
        self._captured = {o: metrics.EVENTS_CAPTURED.labels(node=node, origin=o.value) for o in Origin}
        self._unsupported = metrics.CAPTURE_SKIPPED.labels(node=node, reason="unsupported_type")
        self._warned_at = -math.inf

    def _skipped(self, state: RawState) -> None:
        """A captured key of a type not replicated (a stream): counted, and said once a minute (a hot stream would
        flood the log). Keys no rule captures are none of our business (globs select more than the rules)."""
        if self._rules.match(state.key) is None:
            return
        self._unsupported.inc()
        if time.monotonic() - self._warned_at >= 60:
            self._warned_at = time.monotonic()
            log.warning("key not replicated: its Redis type is not supported", extra={"kv": {
                "node": self.node, "key": state.key, "type": state.type.value.lower()}})

    def capture(self, keys: Sequence[bytes], origin: Origin) -> int:
        """Returns the number of events handed to the publisher (acknowledged later; see EventPublisher.flush)."""
        return self.publish(self.read(keys), origin)

    def read(self, keys: Sequence[bytes]) -> Reading:
        """The states of ``keys`` (those of this shard), and when they were read."""
        if self._shards > 1:
            owner_of = self._rules.owner_of
            keys = [k for k in keys if (o := owner_of(k)) is not None and in_shard(o, self._shard, self._shards)]
        read_at_us = time.time_ns() // 1000
        return Reading(self._reader.read(keys), read_at_us)

    def publish(self, reading: Reading, origin: Origin) -> int:
        """Publish the states of a :meth:`read` (split in two so a caller can read ahead while it publishes)."""
        publish = self._publisher.publish
        published = 0
        try:
            for state in reading.states:
                events = to_events(state, self._rules, origin, self.node, self.db, reading.read_at_us,
                                   self._chunk_bytes)
                for event in events:
                    publish(event)
                if events:
                    published += 1
                elif state.type in _UNSUPPORTED:
                    self._skipped(state)
        finally:
            if published:
                self._captured[origin].inc(published)
        return published


@dataclass(frozen=True, slots=True)
class Reading:
    states: list[RawState]
    read_at_us: int
