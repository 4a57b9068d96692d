"""DynamoRedis (the Redis-shaped client over DynamoDB) against raw boto3 making the requests one would write by hand.

A messaging dataset under the demo's rules (sorted sets ``opponents:{owner}`` of 50 members, items shared with
``meta:{owner}:{opponent}`` strings) and mirrored strings and hashes is written through the client; then each
command runs ``ops`` times on random keys (fixed seed), one thread, and so does its raw baseline, in the same run on
the same endpoint:

- ``zrevrange(k, 0, 9, withscores=True)``: raw = one strongly consistent Query of the owner's partition;
- ``zscore(k, m)``: raw = one GetItem of the member's item;
- ``get`` / ``hgetall`` of a mirrored key: raw = one GetItem;
- ``zadd(k, {m: s})`` under the rule: raw = Query of the partition, GetItem of the head, and one
  TransactWriteItems of the item and the head, compare-and-set (what a correct hand-written native write needs);
- ``set`` / ``incr`` of a mirrored key: raw = GetItem + conditional UpdateItem.

Per command: commands/s and the ratio to raw, DynamoDB requests per command (counted by the botocore hook the
replicator's client carries), and the client's CPU-µs per command (this process's CPU; DynamoDB Local is another).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY

from replicator.adapters.dynamodb.calls import make_client
from replicator.adapters.dynamodb.tables import create_tables
from replicator.core.config import parse_config
from replicator.core.native import NATIVE_BASE
from replicator.dynamo_redis import DynamoRedis
from replicator.local.demo import MESSAGING_RULES
from replicator.local.stack import LocalStack

OWNERS = 200
MEMBERS = 50


def _requests() -> float:
    return sum(s.value for f in REGISTRY.collect() for s in f.samples if s.name == "replicator_dynamodb_requests_total")


def _measure(fn: Callable[[random.Random], Any], ops: int) -> dict[str, float]:
    rng = random.Random(7)
    requests, cpu, started = _requests(), time.process_time(), time.perf_counter()
    for _ in range(ops):
        fn(rng)
    elapsed = time.perf_counter() - started
    return {"per_s": ops / elapsed, "requests_per_command": round((_requests() - requests) / ops, 3),
            "cpu_us_per_command": round((time.process_time() - cpu) / ops * 1e6)}


def run(stack: LocalStack, ops: int = 1000) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:6]
    overrides = stack.config_overrides()
    config = parse_config({
        **MESSAGING_RULES, **overrides,
        "tables": {"messaging": {**MESSAGING_RULES["tables"]["messaging"], "name": f"bench_messaging_{uid}"}},
        "default": {"table": f"bench_mirror_{uid}"},
        "dynamodb": {**overrides["dynamodb"], "state_table": f"bench_state_{uid}"},
    })
    rules = config.rule_set
    client = make_client(config.dynamodb)
    create_tables(client, rules, config.dynamodb.state_table)
    r = DynamoRedis.from_config(config)
    seed = random.Random(3)
    for o in range(OWNERS):
        pipe = r.pipeline()
        pipe.zadd(f"opponents:u{o}", {f"p{m}": seed.randrange(10**12) for m in range(MEMBERS)})
        pipe.set(f"meta:u{o}:p1", "x" * 100)
        pipe.set(f"s:{o}", "x" * 100).set(f"n:{o}", 0).hset(f"h:{o}", mapping={f"f{i}": "v" * 20 for i in range(10)})
        pipe.execute()
    messaging, mirror, state = rules.rules[0].table, rules.mirror.table, config.dynamodb.state_table  # type: ignore

    def owner(rng: random.Random) -> str:
        return f"u{rng.randrange(OWNERS)}"

    def raw_get(table: str, key: dict[str, Any]) -> Any:
        return client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")

    def raw_query(o: str) -> list[Any]:
        return client.query(TableName=messaging, KeyConditionExpression="owner_id = :o",
                            ExpressionAttributeValues={":o": {"S": o}}, ConsistentRead=True)["Items"]

    def raw_zadd(rng: random.Random) -> None:
        o, m = owner(rng), f"p{rng.randrange(MEMBERS)}"
        items = raw_query(o)
        head = raw_get(state, {"k": {"B": b"opponents\x00opponents:" + o.encode()}})
        found = next((i for i in items if i["opponent_id"]["S"] == m), None)
        version = NATIVE_BASE + time.time_ns() // 1000
        condition = ("#v = :read", {":read": found["_v_opponents"]}) if found and "_v_opponents" in found \
            else ("attribute_not_exists(#v)", {})
        client.transact_write_items(TransactItems=[
            {"Update": {"TableName": messaging, "Key": {"owner_id": {"S": o}, "opponent_id": {"S": m}},
                        "UpdateExpression": "SET #v = :v, #t = :t", "ConditionExpression": condition[0],
                        "ExpressionAttributeNames": {"#v": "_v_opponents", "#t": "timestamp"},
                        "ExpressionAttributeValues": {":v": {"N": str(version)}, ":t": {"N": "5"}, **condition[1]}}},
            {"Update": {"TableName": state, "Key": {"k": {"B": b"opponents\x00opponents:" + o.encode()}},
                        "UpdateExpression": "SET #v = :v",
                        "ConditionExpression": "attribute_not_exists(#v) OR #v <= :v",
                        "ExpressionAttributeNames": {"#v": "v"},
                        "ExpressionAttributeValues": {":v": {"N": str(version)}}}},
        ])
        del head

    def raw_set(rng: random.Random) -> None:
        key = {"key": {"B": f"s:{rng.randrange(OWNERS)}".encode()}}
        item = raw_get(mirror, key) or {}
        client.update_item(TableName=mirror, Key=key, UpdateExpression="SET #v = :v, #val = :val",
                           ConditionExpression="#v = :read",
                           ExpressionAttributeNames={"#v": "_v_mirror", "#val": "value"},
                           ExpressionAttributeValues={":v": {"N": str(NATIVE_BASE + time.time_ns() // 1000)},
                                                      ":val": {"B": b"y" * 100}, ":read": item["_v_mirror"]})

    pairs: dict[str, tuple[Callable[[random.Random], Any], Callable[[random.Random], Any]]] = {
        "zrevrange(k, 0, 9, withscores=True)": (
            lambda rng: r.zrevrange(f"opponents:{owner(rng)}", 0, 9, withscores=True),
            lambda rng: raw_query(owner(rng))),
        "zscore": (
            lambda rng: r.zscore(f"opponents:{owner(rng)}", f"p{rng.randrange(MEMBERS)}"),
            lambda rng: raw_get(messaging, {"owner_id": {"S": owner(rng)},
                                            "opponent_id": {"S": f"p{rng.randrange(MEMBERS)}"}})),
        "get (mirror)": (lambda rng: r.get(f"s:{rng.randrange(OWNERS)}"),
                         lambda rng: raw_get(mirror, {"key": {"B": f"s:{rng.randrange(OWNERS)}".encode()}})),
        "hgetall (mirror)": (lambda rng: r.hgetall(f"h:{rng.randrange(OWNERS)}"),
                             lambda rng: raw_get(mirror, {"key": {"B": f"h:{rng.randrange(OWNERS)}".encode()}})),
        "zadd (rule, one member)": (
            lambda rng: r.zadd(f"opponents:{owner(rng)}", {f"p{rng.randrange(MEMBERS)}": 5}), raw_zadd),
        "set (mirror)": (lambda rng: r.set(f"s:{rng.randrange(OWNERS)}", b"y" * 100), raw_set),
        "incr (mirror)": (lambda rng: r.incr(f"n:{rng.randrange(OWNERS)}"), raw_set),
    }
    results: dict[str, Any] = {}
    for name, (ours, raw) in pairs.items():
        _measure(ours, ops // 10)  # warm the paths
        mine, base = _measure(ours, ops), _measure(raw, ops)
        results[name] = {"client": mine, "raw": base, "ratio": round(mine["per_s"] / base["per_s"], 2)}
        print(f"  {name:38} {mine['per_s']:>8,.0f}/s  raw {base['per_s']:>8,.0f}/s  ratio {results[name]['ratio']:.2f}"
              f"  requests {mine['requests_per_command']} (raw {base['requests_per_command']})"
              f"  CPU-µs {mine['cpu_us_per_command']} (raw {base['cpu_us_per_command']})", flush=True)
    return results
