"""How fast ``replicator verify`` reads a keyspace, against a raw loop reading the same keys, and against today's.

The keyspace: ``keys`` Redis keys, a third each of sorted sets of 3 members under the messaging rule (a collection:
a head and 3 items), ``meta`` strings under the single-item rule, and plain strings in the mirror. DynamoDB is
loaded with exactly the items the rules would write (BatchWriteItem from 8 threads: far faster than replicating
them through Kafka, and what is measured here is reading, not writing).

Measured in the same run, each in a process of its own, 4 reading threads everywhere:
- ``verify``: ``replicator verify --json`` of this commit over the whole keyspace (both passes: Redis' keys, and the
  Scan for keys only DynamoDB holds), with its read capacity as DynamoDB reports it.
- ``raw loop``: SCAN, pipelined GET / ZRANGE WITHSCORES + PTTL by key, and BatchGetItem (single items and heads) +
  a Query per sorted set: the reads alone, no mapping, no comparison (the loop the issue named).
- ``raw loop (PartiQL IN)``: the same, with the sorted sets' items read as verify reads them (one PartiQL SELECT
  per 50 partitions): the reads verify does, and nothing else -- what verify cannot beat.
- ``today``: the parent commit's verify (``git worktree``), on a keyspace of ``today_keys`` of the same make in
  Redis DB 1 (at its speed the whole keyspace would take most of an hour), next to this commit's on that same one.

Reported: keys/s of each, verify / raw loop, verify / today, CPU-µs per key of the verify process, RCU per key.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
import yaml

from replicator import pipeline
from replicator.adapters.redis.reader import to_event
from replicator.adapters.redis.states import StateReader
from replicator.core import statements
from replicator.core.batching import batches
from replicator.core.config import parse_config
from replicator.core.events import Origin
from replicator.core.mapping import desired_items
from replicator.core.values import to_attribute_value
from replicator.local.stack import LocalStack, dynamodb_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import mixed  # noqa: E402  (bench/mixed.py: the messaging rules, the parent checkout)

THREADS = 4


def _config_data(stack: LocalStack, name: str, db: int) -> dict[str, Any]:
    data = mixed.config_data(stack, f"verify.{name}", name)
    base = stack.redis_url.rstrip("/")
    if base.count("/") > 2:  # redis://host:port/db
        base = base.rsplit("/", 1)[0]
    data["redis"] = {**data.get("redis", {}), "url": f"{base}/{db}"}
    return data


def _write_keyspace(r: redis.Redis, n: int) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            pipe.zadd(f"opponents:o{i}", {"p1": 1_700_000_001, "p2": 1_700_000_002, "p3": 1_700_000_003.5})
        elif kind == 1:
            pipe.set(f"meta:o{i}:p1", f"note {i}")
        else:
            pipe.set(f"plain:{i}", b"x" * 100)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def _load_dynamodb(data: dict[str, Any], r: redis.Redis) -> int:
    """Every item (and head) the rules would write for the Redis keyspace, by BatchWriteItem; returns items."""
    config = parse_config(data)
    ctx = pipeline.context(config)
    client = pipeline.dynamodb(ctx)  # creates the tables
    rules, state_table = ctx.rules, config.dynamodb.state_table
    reader = StateReader(r)
    now_us = time.time_ns() // 1000

    def writes(keys: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for state in reader.read(keys):
            event = to_event(state, rules, Origin.SNAPSHOT, "bench", 0, now_us)
            matched = rules.match(state.key)
            if event is None or matched is None:
                continue
            rule, variables = matched
            for item_key, attrs in desired_items(rule, variables, event).items():
                item = {a: to_attribute_value(v) for a, v in (*item_key, *attrs)}
                item[rule.version_attr] = {"N": str(event.version)}
                out.append((rule.table, item))
            if rule.is_collection:
                out.append((state_table, {**statements.head_key(rule.name, state.key), "v": {"N": str(event.version)}}))
        return out

    def put(batch: list[tuple[str, dict[str, Any]]]) -> None:
        pending: dict[str, Any] = {}
        for table, item in batch:
            pending.setdefault(table, []).append({"PutRequest": {"Item": item}})
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    written = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for keys in batches(r.scan_iter(count=1000), 500):
            for batch in batches(writes(keys), 25):
                futures.append(pool.submit(put, batch))
                written += len(batch)
            if len(futures) > 200:
                for future in futures:
                    future.result()
                futures = []
        for future in futures:
            future.result()
    return written


def _raw_loop(data: dict[str, Any], r: redis.Redis, partiql: bool = False) -> float:
    """keys/s of the reads alone (see the module docstring), 4 threads; with ``partiql``, the sorted sets' items by
    one ``SELECT ... WHERE owner_id IN [...]`` per batch (as verify reads them) instead of a Query each."""
    config = parse_config(data)
    client = dynamodb_client(config.dynamodb.endpoint_url)
    table, mirror, state = config.table_name("messaging"), config.default.table, config.dynamodb.state_table

    def read(keys: list[bytes]) -> int:
        pipe = r.pipeline(transaction=False)
        for key in keys:
            (pipe.zrange(key, 0, -1, withscores=True) if key.startswith(b"opponents:") else pipe.get(key))
            pipe.pttl(key)
        pipe.execute()
        gets: dict[str, list[dict[str, Any]]] = {}
        owners = [{"S": key.split(b":", 1)[1].decode()} for key in keys if key.startswith(b"opponents:")]
        if partiql and owners:
            for chunk in batches(owners, 50):
                params: dict[str, Any] = {
                    "Statement": f'SELECT * FROM "{table}" WHERE "owner_id" IN [{", ".join("?" for _ in chunk)}]',
                    "Parameters": chunk, "ConsistentRead": True}
                while True:
                    page = client.execute_statement(**params)
                    if not page.get("NextToken"):
                        break
                    params["NextToken"] = page["NextToken"]
        for key in keys:
            if key.startswith(b"opponents:"):
                gets.setdefault(state, []).append(statements.head_key("opponents", key))
                if not partiql:
                    client.query(TableName=table, KeyConditionExpression="owner_id = :o", ConsistentRead=True,
                                 ExpressionAttributeValues={":o": {"S": key.split(b":", 1)[1].decode()}})
            elif key.startswith(b"meta:"):
                _, owner, opponent = key.decode().split(":")
                gets.setdefault(table, []).append({"owner_id": {"S": owner}, "opponent_id": {"S": opponent}})
            else:
                gets.setdefault(mirror, []).append({"key": {"B": key}})
        pending = [(t, k) for t, ks in gets.items() for k in ks]
        for chunk in batches(pending, 100):
            wanted: dict[str, Any] = {}
            for t, k in chunk:
                wanted.setdefault(t, {"Keys": [], "ConsistentRead": True})["Keys"].append(k)
            while wanted:
                wanted = client.batch_get_item(RequestItems=wanted).get("UnprocessedKeys") or {}
        return len(keys)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        done = sum(pool.map(read, batches(r.scan_iter(count=1000), 100)))
    return done / (time.perf_counter() - started)


def _verify(data: dict[str, Any], checkout: Path, tmp: Path) -> dict[str, Any]:
    """``replicator verify --json`` of ``checkout`` in a process of its own: keys/s, CPU-µs per key, RCU per key."""
    path = tmp / f"verify-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "replicator", "verify", "--config", str(path), "--json",
                           "--workers", str(THREADS), "--no-progress"], capture_output=True, text=True, env=env,
                          cwd=checkout, timeout=7200)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"verify failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    keys = report["keys_checked"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"keys": keys, "seconds": round(elapsed, 1), "keys_per_s": round(keys / elapsed),
            # the largest child so far: the first verify's own peak (the whole keyspace's run goes first)
            "max_rss_mb_so_far": round(after.ru_maxrss / 1024),
            "cpu_us_per_key": round(cpu / max(1, keys) * 1e6), "drift_keys": report["drift_keys"],
            "rcu_per_key": (round(report["read_capacity_units"] / max(1, keys), 2)
                            if "read_capacity_units" in report else None)}


def run(stack: LocalStack, keys: int, today_keys: int, baseline_rev: str | None) -> dict[str, Any]:
    name = uuid.uuid4().hex[:6]
    results: dict[str, Any] = {"keys": keys, "today_keys": today_keys, "threads": THREADS}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        big, small = _config_data(stack, f"vb{name}", 0), _config_data(stack, f"vs{name}", 1)
        r0, r1 = (redis.Redis.from_url(d["redis"]["url"]) for d in (big, small))
        r0.flushdb()
        r1.flushdb()
        print(f"verify: writing {keys:,} + {today_keys:,} keys and their items", flush=True)
        _write_keyspace(r0, keys)
        _write_keyspace(r1, today_keys)
        started = time.perf_counter()
        results["items_loaded"] = _load_dynamodb(big, r0) + _load_dynamodb(small, r1)
        results["load_seconds"] = round(time.perf_counter() - started, 1)
        print("verify: raw loop", flush=True)
        results["raw_loop_keys_per_s"] = round(_raw_loop(big, r0))
        results["raw_loop_partiql_keys_per_s"] = round(_raw_loop(big, r0, partiql=True))
        print("verify: this commit", flush=True)
        results["verify"] = _verify(big, ROOT, tmp)
        results["verify_small"] = _verify(small, ROOT, tmp)
        if baseline_rev:
            print(f"verify: today ({baseline_rev})", flush=True)
            parent = mixed.parent_checkout(tmp, baseline_rev)
            try:
                results["today_small"] = _verify(small, parent, tmp)
            finally:
                mixed.remove_checkout(parent)
            results["baseline_rev"] = baseline_rev
        r0.flushdb()
        r1.flushdb()
    verify = results["verify"]
    results["verify / raw loop"] = round(verify["keys_per_s"] / results["raw_loop_keys_per_s"], 2)
    results["verify / raw loop (PartiQL IN)"] = round(verify["keys_per_s"] / results["raw_loop_partiql_keys_per_s"], 2)
    if "today_small" in results:
        results["verify / today"] = round(results["verify_small"]["keys_per_s"]
                                          / results["today_small"]["keys_per_s"], 2)
    return results


def _main() -> None:  # pragma: no cover - `python bench/verify.py` alone, for a quick look
    with LocalStack() as stack:
        print(json.dumps(run(stack, int(sys.argv[1]) if len(sys.argv) > 1 else 30_000, 6_000, "HEAD~1"), indent=2))


if __name__ == "__main__":
    _main()
