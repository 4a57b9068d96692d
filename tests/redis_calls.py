"""Random redis-py calls for differential tests: the same call on a real Redis and on a Redis-shaped client must
give the same answer (or the same error), whatever the data.

Keys and members come from small pools so calls collide: the same key is read after being written, a string key
is asked for as a hash (WRONGTYPE), a member is removed and added back. Values include the hostile ones (empty,
binary, unicode, inf scores, numbers that are not integers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from replicator.adapters.redis.shaped import RedisShaped
from replicator.core import commands

#: A redis-py call: method name, positional arguments, keyword arguments.
Call = tuple[str, tuple[Any, ...], dict[str, Any]]

BINARY = b"\x00\xff\xfe"
VALUES = st.sampled_from([b"", b"v", b"1", b"-7", b"10", "é", BINARY, b"9223372036854775807", b"3.5", b" 1"])
NUMBERS = st.sampled_from([0, 1, -1, 5, 2**62, -(2**63)])
SCORES = st.sampled_from([0.0, 1.0, 1.5, -2.5, 1e300, math.inf, -math.inf, 2.0, 1 / 3])
BOUNDS = st.sampled_from(["-inf", "+inf", "inf", "1", "(1", "1.5", "(1.5", "-2.5", "(2", "0", "(-inf", "x"])
INDEXES = st.integers(-6, 6)


FAMILIES = frozenset({"keys", "ttl", "string", "hash", "set", "list", "zset"})


def call_strategy(keys: Sequence[bytes], members: Sequence[bytes], families: frozenset[str] = FAMILIES,
                  values: st.SearchStrategy[Any] = VALUES, scores: st.SearchStrategy[float] = SCORES,
                  ) -> st.SearchStrategy[Call]:
    """Calls of the Redis-shaped client's commands on ``keys``, with ``members`` as fields/members/elements.

    ``families`` limits them to some types (a key under a sorted-set rule only gets key and sorted-set calls;
    "ttl" adds the TTL commands and SET's expiries, which only the default mirror keeps); ``values`` and ``scores``
    to what a rule's attributes can hold.
    """
    key = st.sampled_from(list(keys))
    member = st.sampled_from(list(members))
    some_members = st.lists(member, min_size=1, max_size=4)
    # Expiries far from "now": a key expiring within milliseconds is alive on one clock and gone on the other.
    expiry = st.integers(5, 10_000) if "ttl" in families else st.none()
    c = _call
    chosen: list[st.SearchStrategy[Call]] = []
    if "keys" in families:
        chosen += [
            st.builds(lambda ks: ("delete", tuple(ks), {}), st.lists(key, min_size=1, max_size=3)),
            st.builds(lambda ks: ("exists", tuple(ks), {}), st.lists(key, min_size=1, max_size=3)),
            c("type", key), c("mget", st.lists(key, min_size=1, max_size=4)),
        ]
    if "ttl" in families:
        chosen += [
            c("ttl", key), c("pttl", key), c("persist", key),
            st.builds(lambda k, t, flag: ("expire", (k, t), {flag: True} if flag else {}), key,
                      st.sampled_from([-5, 0, 5, 100, 100_000]), st.sampled_from([None, "nx", "xx", "gt", "lt"])),
            st.builds(lambda k, t: ("pexpire", (k, t), {}), key, st.sampled_from([-5, 0, 5_000, 100_000_000])),
            # Absolute: long past, or the year 2100 (no wall clock inside a strategy).
            st.builds(lambda k, t, flag: ("expireat", (k, t), {flag: True} if flag else {}), key,
                      st.sampled_from([1, 4_102_444_800]), st.sampled_from([None, "nx", "xx", "gt", "lt"])),
            st.builds(lambda k, t: ("pexpireat", (k, t), {}), key, st.sampled_from([1, 4_102_444_800_000])),
        ]
    if "string" in families:
        chosen += [
            c("get", key),
            st.builds(lambda k, v, ex, px, nx, xx, keepttl, get: (
                "set", (k, v), {"ex": ex, "px": None if ex or px is None else px * 1000, "nx": nx,
                                "xx": xx and not nx, "keepttl": keepttl and not (ex or px), "get": get}),
                key, values, expiry, expiry, st.booleans(), st.booleans(), st.booleans(), st.booleans()),
            c("incr", key), st.builds(lambda k, n: ("incrby", (k, n), {}), key, NUMBERS), c("decr", key),
        ]
    if "hash" in families:
        chosen += [
            c("hget", key, member), st.builds(lambda k, fs: ("hmget", (k, fs), {}), key, some_members),
            c("hgetall", key), c("hkeys", key), c("hvals", key), c("hlen", key), c("hexists", key, member),
            st.builds(lambda k, f, v: ("hset", (k, f, v), {}), key, member, values),
            st.builds(lambda k, m: ("hset", (k,), {"mapping": m}), key,
                      st.dictionaries(member, values, min_size=1, max_size=3)),
            st.builds(lambda k, fs: ("hdel", (k, *fs), {}), key, some_members),
            st.builds(lambda k, f, n: ("hincrby", (k, f, n), {}), key, member, NUMBERS),
        ]
    if "set" in families:
        chosen += [
            c("smembers", key), c("sismember", key, member), c("scard", key),
            st.builds(lambda k, ms: ("smismember", (k, ms), {}), key, some_members),
            st.builds(lambda k, ms: ("sadd", (k, *ms), {}), key, some_members),
            st.builds(lambda k, ms: ("srem", (k, *ms), {}), key, some_members),
        ]
    if "list" in families:
        chosen += [
            c("lrange", key, INDEXES, INDEXES), c("llen", key), c("lindex", key, INDEXES),
            st.builds(lambda k, vs: ("lpush", (k, *vs), {}), key, st.lists(values, min_size=1, max_size=3)),
            st.builds(lambda k, vs: ("rpush", (k, *vs), {}), key, st.lists(values, min_size=1, max_size=3)),
            st.builds(lambda k, n: ("lpop", (k,), {} if n is None else {"count": n}), key,
                      st.none() | st.integers(0, 4)),
            st.builds(lambda k, n: ("rpop", (k,), {} if n is None else {"count": n}), key,
                      st.none() | st.integers(0, 4)),
            c("ltrim", key, INDEXES, INDEXES),
        ]
    if "zset" in families:
        limit = st.none() | st.tuples(st.integers(0, 3), st.integers(-1, 3))
        chosen += [
            st.builds(lambda k, a, b, desc, ws: ("zrange", (k, a, b), {"desc": desc, "withscores": ws}),
                      key, INDEXES, INDEXES, st.booleans(), st.booleans()),
            st.builds(lambda k, a, b, desc, ws, lim: (
                "zrange", (k, a, b), {"desc": desc, "withscores": ws, "byscore": True,
                                      **({"offset": lim[0], "num": lim[1]} if lim else {})}),
                key, BOUNDS, BOUNDS, st.booleans(), st.booleans(), limit),
            st.builds(lambda k, a, b, ws: ("zrevrange", (k, a, b), {"withscores": ws}), key, INDEXES, INDEXES,
                      st.booleans()),
            st.builds(lambda k, a, b, ws, lim: ("zrangebyscore", (k, a, b), {
                "withscores": ws, **({"start": lim[0], "num": lim[1]} if lim else {})}),
                key, BOUNDS, BOUNDS, st.booleans(), limit),
            st.builds(lambda k, a, b, ws, lim: ("zrevrangebyscore", (k, a, b), {
                "withscores": ws, **({"start": lim[0], "num": lim[1]} if lim else {})}),
                key, BOUNDS, BOUNDS, st.booleans(), limit),
            c("zscore", key, member), st.builds(lambda k, ms: ("zmscore", (k, ms), {}), key, some_members),
            c("zcard", key), c("zcount", key, BOUNDS, BOUNDS),
            # WITHSCORE is Redis 7.2+ (the suite's Redis is 7.0): ranks alone.
            c("zrank", key, member), c("zrevrank", key, member),
            st.builds(lambda k, mapping, flags: ("zadd", (k, mapping), flags), key,
                      st.dictionaries(member, scores, min_size=1, max_size=3),
                      st.fixed_dictionaries({}, optional={"nx": st.booleans(), "xx": st.booleans(),
                                                          "ch": st.booleans(), "gt": st.booleans(),
                                                          "lt": st.booleans()})),
            st.builds(lambda k, m, sc, flags: ("zadd", (k, {m: sc}), {"incr": True, **flags}), key, member, scores,
                      st.fixed_dictionaries({}, optional={"nx": st.booleans(), "xx": st.booleans()})),
            st.builds(lambda k, sc, m: ("zincrby", (k, sc, m), {}), key, scores, member),
            st.builds(lambda k, ms: ("zrem", (k, *ms), {}), key, some_members),
            c("zremrangebyscore", key, BOUNDS, BOUNDS),
        ]
    return st.one_of(*chosen)


def _call(name: str, *arg_strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[Call]:
    return st.tuples(*arg_strategies).map(lambda args: (name, tuple(args), {}))


def outcome(client: Any, call: Call) -> tuple[str, Any]:
    """What a client answers to a call: ("ok", normalised answer) or ("error", the exception's type and text)."""
    name, args, kwargs = call
    try:
        answer = getattr(client, name)(*args, **kwargs)
    except Exception as exc:  # the error itself is the answer being compared
        return "error", f"{type(exc).__name__}: {exc}"
    return "ok", normalise(name, answer)


#: Answers whose order Redis does not define (a hash's or a set's order depends on its encoding).
_UNORDERED = {"hkeys", "hvals", "smembers"}


def normalise(name: str, answer: Any) -> Any:
    if name in _UNORDERED:
        return sorted(answer)
    if name == "pttl" and isinstance(answer, int) and answer > 0:
        return ("about", round(answer / 1000))  # the two clocks read milliseconds apart
    if name == "ttl" and isinstance(answer, int) and answer > 0:
        return ("about", answer // 10)
    return answer


def same(real: tuple[str, Any], candidate: tuple[str, Any]) -> bool:
    if real == candidate:
        return True
    if real[0] == candidate[0] == "ok" and isinstance(real[1], tuple) and isinstance(candidate[1], tuple) \
            and real[1][:1] == candidate[1][:1] == ("about",):
        return abs(real[1][1] - candidate[1][1]) <= 1
    return False


def run_both(real: Any, candidate: Any, calls: Sequence[Call],
             after: Callable[[Call], None] = lambda _call: None) -> None:
    """Each call on both clients; the first difference fails with the calls that led to it."""
    for i, call in enumerate(calls):
        want, got = outcome(real, call), outcome(candidate, call)
        assert same(want, got), (f"call {i} {call!r}: Redis answered {want!r}, the client {got!r}; "
                                 f"calls before it: {list(calls[:i])!r}")
        after(call)


class InMemoryRedis(RedisShaped):
    """The pure command core (replicator.core.commands) on a dict: Redis semantics without any store."""

    def __init__(self) -> None:
        self.entries: dict[bytes, commands.Entry] = {}

    def run_many(self, batch: list[list[bytes]]) -> list[Any]:
        replies = []
        for args in batch:
            keys = commands.keys_of(args)
            reply, changed = commands.execute(args, {k: self.entries.get(k) for k in keys}, int(time.time() * 1000))
            for key, entry in changed.items():
                if entry is None:
                    self.entries.pop(key, None)
                else:
                    self.entries[key] = entry
            replies.append(reply)
        return replies
