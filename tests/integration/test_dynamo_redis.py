"""DynamoRedis answers what Redis answers, on data the real pipeline replicated, under random commands.

Redis is seeded with keys of every shape the rules produce (sorted sets under the ``opponents`` rule, strings under
the ``meta`` rule sharing their items, and every Redis type in the default mirror, TTLs and hostile values
included), the listener and the applier replicate it, and are stopped. Then random redis-py calls run on both a
real ``redis.Redis`` and ``DynamoRedis`` (writes to both), and every answer is compared: values, orders, counts,
errors (WRONGTYPE included). Each example works in a namespace of keys of its own that started equal in both
stores, so a failing example replays (and shrinks) on fresh keys.

Rule keys get the commands and values their rule holds (a sorted-set rule's key is asked sorted-set commands with
UTF-8 members and scores DynamoDB numbers take); what a rule cannot hold is an error of the client, checked in
test_native_writes.py.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.dynamo_redis import DynamoRedis
from tests.redis_calls import VALUES, call_strategy, outcome, same
from tests.support import Running, assert_converged, clean_redis, ddb, messaging_config

NAMESPACES = 60

#: Placeholders in the generated calls, replaced by one namespace's keys when an example runs.
ZSET_RULE_KEYS = [b"\x01opp-a", b"\x01opp-b"]
STRING_RULE_KEYS = [b"\x01meta-a", b"\x01meta-b", b"\x01meta-c"]
MIRROR_KEYS = [b"\x01s", b"\x01h", b"\x01l", b"\x01set", b"\x01z", b"\x01new"]

RULE_MEMBERS = [b"a", b"b", b"aa", "é".encode(), "名前".encode()]
RULE_SCORES = st.sampled_from([0.0, 1.0, 1.5, -2.5, 2.0, 1 / 3, 1e15])
RULE_VALUES = st.sampled_from([b"", b"v", b"1", b"-7", b"10", "é", b"3.5"])
MIRROR_MEMBERS = [b"a", b"b", b"", b"\xff", "é".encode(), b"aa"]

CALLS = st.one_of(
    call_strategy(MIRROR_KEYS, MIRROR_MEMBERS, values=VALUES),
    call_strategy(ZSET_RULE_KEYS, RULE_MEMBERS, frozenset({"keys", "zset"}), scores=RULE_SCORES),
    call_strategy(STRING_RULE_KEYS, RULE_MEMBERS, frozenset({"keys", "string"}), values=RULE_VALUES),
)


def keys_of(ns: int) -> dict[bytes, bytes]:
    """The placeholder -> real key map of namespace ``ns``: meta keys share the items of opp-a's members."""
    return {
        b"\x01opp-a": f"opponents:n{ns}a".encode(), b"\x01opp-b": f"opponents:n{ns}b".encode(),
        b"\x01meta-a": f"meta:n{ns}a:a".encode(), b"\x01meta-b": f"meta:n{ns}a:b".encode(),
        b"\x01meta-c": f"meta:n{ns}a:é".encode(),
        **{k: f"n{ns}{k[1:].decode()}".encode() for k in MIRROR_KEYS},
    }


def seed(r: Any, ns: int) -> None:
    k = keys_of(ns)
    pipe = r.pipeline(transaction=False)
    pipe.zadd(k[b"\x01opp-a"], {"a": 1, "b": 2.5, "aa": 2.5, "名前": -1})
    pipe.zadd(k[b"\x01opp-b"], {"b": 7})
    pipe.set(k[b"\x01meta-a"], "hello")
    pipe.set(k[b"\x01meta-b"], "41")
    pipe.set(k[b"\x01s"], "12", px=10**8)
    pipe.hset(k[b"\x01h"], mapping={"a": "1", "é": b"\xff\x00", "": ""})
    pipe.rpush(k[b"\x01l"], "v", "", b"\x00\xff")
    pipe.sadd(k[b"\x01set"], "a", b"\xff", "")
    pipe.zadd(k[b"\x01z"], {"a": math.inf, "b": -2.5, "": 1e300, "\xff": 1 / 3})
    pipe.pexpire(k[b"\x01z"], 10**9)
    pipe.execute()


def _real(call: tuple[str, tuple[Any, ...], dict[str, Any]], keys: dict[bytes, bytes]) -> Any:
    def swap(value: Any) -> Any:
        if isinstance(value, bytes):
            return keys.get(value, value)
        if isinstance(value, list | tuple):
            return type(value)(swap(v) for v in value)
        return value

    name, args, kwargs = call
    return name, swap(args), kwargs


def test_random_commands_answer_as_redis_does_on_replicated_data(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    for ns in range(NAMESPACES):
        seed(r, ns)
    with Running(config) as run:
        run.start_applier().start_listener()  # the start re-snapshot replicates the seed
        assert_converged(r, client, config, timeout=120)
    dynamo = DynamoRedis.from_config(config)
    namespaces = itertools.count()
    compared = []

    @settings(max_examples=NAMESPACES - 10, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.lists(CALLS, min_size=8, max_size=30))
    def same_answers(calls):
        keys = keys_of(next(namespaces))  # past the seeded ones: empty in both, still comparable
        for i, call in enumerate(calls):
            real_call = _real(call, keys)
            want, got = outcome(r, real_call), outcome(dynamo, real_call)
            assert same(want, got), (f"call {i} {real_call!r}: Redis answered {want!r}, DynamoRedis {got!r}; "
                                     f"calls before it: {[_real(c, keys) for c in calls[:i]]!r}")
            compared.append(want[0])

    same_answers()
    # The comparison compared something: answers and errors, on every family of calls.
    assert compared.count("ok") > 300 and compared.count("error") > 5


def test_huge_keys_answer_as_redis_does_across_pages_and_parts(stack, uid):
    """A sorted set under the rule big enough for several 1 MB Query pages, and mirror values above the item limit
    (kept in parts): read whole, by rank, by score, by member, then written through the client and read back."""
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    members = {f"opponent-{i:06d}-" + "x" * 60: float(i % 997) for i in range(12_000)}
    r.zadd("opponents:big", members)
    r.set("blob", b"\x00\xff" * 300_000)
    r.hset("wide", mapping={f"field-{i}": "v" * 100 for i in range(5_000)})
    with Running(config) as run:
        run.start_applier().start_listener()
        assert_converged(r, client, config, timeout=180)
    dynamo = DynamoRedis.from_config(config)
    calls = [
        ("zcard", ("opponents:big",), {}), ("zrange", ("opponents:big", 0, -1), {"withscores": True}),
        ("zrevrange", ("opponents:big", 0, 9), {"withscores": True}), ("zrange", ("opponents:big", 5, 20), {}),
        ("zrangebyscore", ("opponents:big", "(990", "+inf"), {"withscores": True}),
        ("zcount", ("opponents:big", 100, "(200"), {}), ("zrank", ("opponents:big", "opponent-011999-" + "x" * 60), {}),
        ("zscore", ("opponents:big", "opponent-000500-" + "x" * 60), {}),
        ("get", ("blob",), {}), ("hgetall", ("wide",), {}), ("hlen", ("wide",), {}),
        ("zadd", ("opponents:big", {"new": 5000.5}), {}), ("zrevrange", ("opponents:big", 0, 2), {"withscores": True}),
        ("set", ("blob", b"\x01" * 500_000), {}), ("get", ("blob",), {}),
        ("hset", ("wide", "field-1", "changed"), {}), ("hget", ("wide", "field-1"), {}), ("hlen", ("wide",), {}),
        ("delete", ("opponents:big",), {}), ("zcard", ("opponents:big",), {}), ("exists", ("opponents:big",), {}),
    ]
    for call in calls:
        want, got = outcome(r, call), outcome(dynamo, call)
        assert same(want, got), f"{call[0]}{call[1][:1]}: Redis {str(want)[:300]}, DynamoRedis {str(got)[:300]}"
