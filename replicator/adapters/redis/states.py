"""Reading a key's whole state and its source version in one atomic step (on one server; cluster.py builds on it).

A keyspace notification carries no value, so the state is read after the fact. The Lua script reads type, value,
PTTL and the server's TIME together: no write can land between them, so the version really is the version of that
state. Every reader (live listener, snapshot loader, repair, verify) goes through here, which is what makes their
events comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from replicator.core.events import KeyType, Value

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
                    states[i] = parse_reply(keys[i], reply)
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


def parse_reply(key: bytes, reply: list) -> RawState:
    """The state in one script reply ``[type, seconds, micros, pttl, value, size]`` (also an EVAL of READ_STATES)."""
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
