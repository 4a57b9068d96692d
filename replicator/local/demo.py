"""``replicator demo``: the whole pipeline on an embedded local stack, with a report.

Starts redis-server, Kafka and DynamoDB Local; writes a messaging dataset (sorted sets ``opponents:{owner}`` scored by
timestamp, strings ``meta:{owner}:{opponent}``); runs the listener, the snapshot loader and the applier; keeps
writing, updating, deleting and expiring for a few seconds; waits until DynamoDB equals Redis; prints the report
and stops every process it started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from prometheus_client import REGISTRY

from replicator import health, logs, pipeline
from replicator.core.config import parse_config
from replicator.core.errors import LocalStackError
from replicator.core.mapping import canonical_number
from replicator.cutover import MigratingRedis
from replicator.local.stack import KAFKA_VERSION, LocalStack, dynamodb_client, free_port, wait_until

log = logging.getLogger(__name__)

MESSAGING_RULES: dict[str, Any] = {
    "tables": {
        "messaging": {"partition_key": "owner_id", "sort_key": "opponent_id", "lsi": {"by_timestamp": "timestamp"}},
    },
    "rules": [
        {"match": "opponents:{owner}", "type": "zset", "table": "messaging",
         "item": {"owner_id": "{owner}", "opponent_id": "{member}", "timestamp": "{score}"}},
        {"match": "meta:{owner}:{opponent}", "type": "string", "table": "messaging",
         "item": {"owner_id": "{owner}", "opponent_id": "{opponent}", "metadata": "{value}"}},
    ],
    "default": {"table": "redis_mirror"},
}

#: (owner, opponent) → {"timestamp": canonical number or absent, "metadata": str or absent}
View = dict[tuple[str, str], dict[str, str]]


def redis_view(client: redis.Redis) -> View:
    """The messaging items Redis implies: one per zset member and per meta key."""
    view: View = {}
    for key in client.scan_iter(match=b"opponents:*", count=1000):
        owner = key.split(b":", 1)[1].decode()
        for member, score in client.zrange(key, 0, -1, withscores=True):
            view.setdefault((owner, member.decode()), {})["timestamp"] = canonical_number(repr(score))
    for key in client.scan_iter(match=b"meta:*", count=1000):
        value = client.get(key)
        if value is None:
            continue
        _, owner, opponent = key.decode().split(":", 2)
        view.setdefault((owner, opponent), {})["metadata"] = value.decode()
    return view


def dynamodb_view(client: Any, table: str = "messaging") -> View:
    """The live messaging items in DynamoDB (tombstones, which hold neither attribute, are left out)."""
    view: View = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            entry = {}
            if "timestamp" in item:
                entry["timestamp"] = canonical_number(item["timestamp"]["N"])
            if "metadata" in item:
                entry["metadata"] = item["metadata"]["S"]
            if entry:
                view[(item["owner_id"]["S"], item["opponent_id"]["S"])] = entry
    return view


def lsi_newest_first(client: Any, owner: str, table: str = "messaging") -> list[tuple[str, str]]:
    """An owner's opponents, newest first, through the LSI: the query the application will run on DynamoDB."""
    items = client.get_paginator("query").paginate(
        TableName=table, IndexName="by_timestamp", KeyConditionExpression="owner_id = :o",
        ExpressionAttributeValues={":o": {"S": owner}}, ScanIndexForward=False,
    ).build_full_result()["Items"]
    return [(i["opponent_id"]["S"], canonical_number(i["timestamp"]["N"])) for i in items]


def zrevrange(client: redis.Redis, owner: str) -> list[tuple[str, str]]:
    return [(m.decode(), canonical_number(repr(s)))
            for m, s in client.zrevrange(f"opponents:{owner}", 0, -1, withscores=True)]


class Workload:
    """Writes the messaging dataset and then random live changes, with unique, growing timestamps."""

    def __init__(self, client: Any, owners: int, seed: int = 7, switchable: bool = False) -> None:
        self.client = client
        #: Only what the rules can hold once owners are switched (a string rule keeps no TTL: no SET PX of meta).
        self.switchable = switchable
        self.owners = [f"user{i:04d}" for i in range(owners)]
        self.random = random.Random(seed)
        self._clock = 1_700_000_000_000

    def tick(self) -> int:
        self._clock += self.random.randint(1, 1000)
        return self._clock

    def seed(self, opponents: int = 8) -> None:
        pipe = self.client.pipeline(transaction=False)
        for owner in self.owners:
            for j in range(opponents):
                opponent = f"peer{j:03d}"
                pipe.zadd(f"opponents:{owner}", {opponent: self.tick()})
                pipe.set(f"meta:{owner}:{opponent}", json.dumps({"nick": f"{opponent}@{owner}", "unread": j}))
        pipe.set("config:feature-flags", b'{"dark_mode": true}')  # no rule: mirrored to redis_mirror
        pipe.execute()

    def step(self) -> None:
        owner = self.random.choice(self.owners)
        opponent = f"peer{self.random.randrange(12):03d}"
        zset, meta = f"opponents:{owner}", f"meta:{owner}:{opponent}"
        roll = self.random.random()
        if roll < 0.45:
            self.client.zadd(zset, {opponent: self.tick()})
        elif roll < 0.60:
            self.client.zrem(zset, opponent)
        elif roll < 0.80:
            self.client.set(meta, json.dumps({"nick": opponent, "unread": self.random.randrange(100)}))
        elif roll < 0.90:
            self.client.delete(meta)
        elif roll < 0.95 and self.switchable:
            self.client.zincrby(zset, 0.5, opponent)
        elif roll < 0.95:
            self.client.set(meta, json.dumps({"typing": True}), px=self.random.randint(200, 1500))
        elif roll < 0.97:
            # No rule maps sessions: mirrored with their expiry, which PERSIST removes.
            session = f"session:{owner}"
            if self.random.random() < 0.7:
                self.client.set(session, f"token-{self.tick()}", ex=self.random.randint(600, 3600))
            else:
                self.client.persist(session)
        else:
            self.client.delete(zset)


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def _has_samples(name: str) -> bool:
    return any(sample.name == name for family in REGISTRY.collect() for sample in family.samples)


def _sum_samples(name: str) -> float:
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def _run_in_thread(name: str, target: Callable[[threading.Event], Any], stop: threading.Event) -> threading.Thread:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target(stop)
        except BaseException as exc:
            errors.append(exc)
            log.exception("%s failed", name)
            stop.set()

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def run_demo(owners: int = 20, seconds: float = 5.0, out: Any = None, log_path: Path | None = None,
             cutover: bool = False) -> int:
    """Run the demo and print a report for a person; the pipeline's JSON logs go to ``log_path`` (named first).

    The logs are for machines and for digging after a failure; interleaved with the report (librdkafka's
    "Coordinator load in progress", a group rebalance) they only hid it. A failure is said in the report in one line.
    """
    out = out or sys.stdout
    log_path = log_path or Path(tempfile.gettempdir()) / f"replicator-demo-{time.strftime('%Y%m%dT%H%M%S')}.log"
    with open(log_path, "a", encoding="utf-8") as log_file:
        logs.setup("INFO", stream=log_file)
        return _demo(owners, seconds, out, log_path, cutover)


def _demo(owners: int, seconds: float, out: Any, log_path: Path, cutover: bool = False) -> int:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    say(f"logs of this run (JSON lines): {log_path}")
    say(f"starting the local stack: redis-server, Apache Kafka {KAFKA_VERSION} (KRaft), DynamoDB Local ...")
    started = time.monotonic()
    with LocalStack() as stack:
        say(f"  redis {stack.redis_url} | kafka {stack.kafka_bootstrap} | dynamodb {stack.dynamodb_endpoint} "
            f"({time.monotonic() - started:.1f}s)")
        config = parse_config({**MESSAGING_RULES, **stack.config_overrides(),
                               "kafka": {**stack.config_overrides()["kafka"], "topic": "demo.changes"},
                               "metrics": {"lag_interval_s": 0.5}})
        ready = health.Health()
        endpoints = health.Endpoints(ready, free_port(), host="127.0.0.1")
        metrics_port = endpoints.port
        ctx = pipeline.context(config)
        info = ctx.check_broker()
        say(f"  kafka broker version {info.version_text} ({info.brokers} broker)")
        r = redis.Redis.from_url(stack.redis_url)
        ddb = dynamodb_client(stack.dynamodb_endpoint)
        workload = Workload(r, owners)
        workload.seed()
        say(f"wrote {r.dbsize()} keys to Redis before any listener ran")

        stop = threading.Event()
        applier = pipeline.applier(ctx)
        listener = pipeline.listener(ctx)
        stop_listener = threading.Event()
        threads = [_run_in_thread("applier", applier.run, stop),
                   _run_in_thread("listener", listener.run, stop_listener)]
        ready.when("subscribed", listener.subscribed.is_set, "listener not subscribed")
        ready.when("assigned", applier.assigned.is_set, "applier owns no partition")
        wait_until(listener.subscribed.is_set, 30, "listener subscription")
        report = pipeline.snapshot_loader(ctx).run()
        say(f"snapshot: {report.keys_scanned} keys published in {report.seconds:.2f}s; live changes for "
            f"{seconds:.0f}s ...")
        deadline = time.monotonic() + seconds
        changes = 0
        while time.monotonic() < deadline:
            workload.step()
            changes += 1
            time.sleep(0.002)
        say(f"made {changes} live changes (ZADD, ZREM, SET, DEL, SET PX, DEL of whole sorted sets)")

        def converged() -> bool:
            if any(t.errors for t in threads):  # type: ignore[attr-defined]
                raise RuntimeError(str(threads[0].errors or threads[1].errors))  # type: ignore[attr-defined]
            return redis_view(r) == dynamodb_view(ddb)

        try:
            wait_until(converged, 60, "DynamoDB equal to Redis", interval=0.5)
            equal = True
        except Exception as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            say(f"NOT CONVERGED: {first_line} (details in {log_path})")
            equal = False
        cut = _cutover(ctx, stack, r, workload.owners, say) if cutover and equal else None
        readiness = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5).read().decode()
        # Stop capturing first (it flushes what it still holds), let the applier drain, then stop it.
        stop_listener.set()
        threads[1].join(30)
        with contextlib.suppress(LocalStackError):  # the report shows the figures either way
            wait_until(lambda: _sum_samples("replicator_events_applied_total")
                       >= _sample("replicator_events_published_total")
                       and _has_samples("replicator_consumer_lag") and _sum_samples("replicator_consumer_lag") == 0,
                       10, "applier drained")
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        stop.set()
        threads[0].join(30)

        view = dynamodb_view(ddb)
        live_owner = max(workload.owners, key=lambda o: r.zcard(f"opponents:{o}"))
        from_dynamodb, from_redis = lsi_newest_first(ddb, live_owner), zrevrange(r, live_owner)
        endpoints.close()
        say("")
        say("== report ==")
        say(f"keys in Redis                  {r.dbsize()}")
        say(f"items in DynamoDB (messaging)  {len(view)} live "
            f"({ddb.scan(TableName='messaging', Select='COUNT')['Count']} with tombstones)")
        say(f"events captured                {_sum_samples('replicator_events_captured_total'):.0f}")
        say(f"events published               {_sample('replicator_events_published_total'):.0f}")
        results = {result: sum(_sample("replicator_events_applied_total", {"table": t, "result": result})
                               for t in ("messaging", "redis_mirror"))
                   for result in ("applied", "tombstoned", "superseded", "stale")}
        say(f"events consumed by the applier {sum(results.values()):.0f}: "
            + ", ".join(f"{count:.0f} {result}" for result, count in results.items()))
        say("                               (superseded: a newer state of the key was in the same batch; "
            "stale: DynamoDB already held a newer one)")
        say(f"DynamoDB equals Redis          {'yes' if equal else 'NO'}")
        say(f"owner {live_owner}, newest first, DynamoDB LSI vs Redis ZREVRANGE: "
            f"{'identical' if from_dynamodb == from_redis else 'DIFFERENT'}")
        for (opponent, ts), redis_entry in zip(from_dynamodb[:5], from_redis[:5], strict=False):
            say(f"  {opponent:10} {ts:>16}   | redis: {redis_entry[0]:10} {redis_entry[1]:>16}")
        say(f"readiness (http://127.0.0.1:{metrics_port}/readyz): {readiness.strip()}")
        say(f"metrics (http://127.0.0.1:{metrics_port}/metrics):")
        for line in scraped.splitlines():
            if line.startswith(("replicator_events_", "replicator_end_to_end_latency_seconds_count",
                                "replicator_apply_batch_seconds_count", "replicator_dlq", "replicator_consumer_lag",
                                "replicator_notifications_gaps", "replicator_dynamodb_requests_total")) \
                    and "_created" not in line:
                say(f"  {line}")
        say(f"stopping the local stack ({time.monotonic() - started:.0f}s in all)")
    ok = equal and from_dynamodb == from_redis and (not cutover or bool(cut))
    return 0 if ok else 1


def _cutover(ctx: pipeline.Context, stack: LocalStack, r: redis.Redis, owners: list[str],
             say: Callable[[str], None]) -> bool:
    """The application moves to DynamoDB owner by owner under live traffic through MigratingRedis: shadow, then
    switches of 10, 50 and 100 %. True when DynamoDB and Redis' warm copy are equal at the end."""
    say("")
    say("== cutover: the application moves to DynamoDB owner by owner (MigratingRedis, replicator cutover) ==")
    ddb = dynamodb_client(stack.dynamodb_endpoint)
    app = MigratingRedis(redis.Redis.from_url(stack.redis_url), ctx.config, ddb, instance="demo-app")
    steps = pipeline.cutover(ctx, out=lambda line: say(f"  {line}"))
    traffic = Workload(app, 0, seed=11, switchable=True)
    traffic.owners = owners
    traffic._clock = 1_800_000_000_000
    stop, done, failures = threading.Event(), [0], []

    def run() -> None:
        while not stop.is_set():
            try:
                traffic.step()
                traffic.client.zrevrange(f"opponents:{traffic.random.choice(owners)}", 0, 9, withscores=True)
                done[0] += 1
            except redis.exceptions.TryAgainError:
                continue  # held longer than cutover.hold_timeout_s: the application retries
            except Exception as exc:
                failures.append(exc)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=run, name="demo-application", daemon=True)
    thread.start()
    try:
        steps.shadow(100)
        say("  shadow 100%: every read answered by Redis and compared with DynamoDB ...")
        time.sleep(2)
        for share in (10, 50, 100):
            say(f"  switch --share {share}:")
            steps.switch(share, timeout_s=120)
            time.sleep(1)
    finally:
        stop.set()
        thread.join(30)
        status = steps.status()
        app.close()
    for line in status.lines():
        say(f"  {line}")
    if failures:
        say(f"  the application's command failed: {failures[0]}")
    equal = False
    with contextlib.suppress(LocalStackError):
        wait_until(lambda: redis_view(r) == dynamodb_view(ddb), 30, "warm copy equal", interval=0.5)
        equal = True
    say(f"  the application made {done[0]} commands (a write and a read each) through MigratingRedis")
    say(f"  DynamoDB (the truth now) equals Redis (the warm copy): {'yes' if equal else 'NO'}")
    return equal and not failures
