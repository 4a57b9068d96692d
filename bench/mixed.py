"""The realistic mixed workload, and how fast appliers drain a burst of it.

A burst: ``seconds`` of Redis commands at ``rate`` per second (fixed seed) on the messaging rules plus the default
mirror — sorted sets of up to 60 members (ZADD, ZREM, ZINCRBY, the odd DEL), side keys that share their items,
mirrored strings with TTLs, hashes, sets and lists — captured by ``replicator listen`` into a topic of its own while
no applier runs. Then each applier variant drains that same backlog in a process of its own (its own group, its own
tables): this commit in each write mode, and the parent commit (``git worktree``) in its default mode as "today".

Per variant: drain seconds (from its first DynamoDB request to the group's lag reaching 0), events/s, DynamoDB
requests per event, items written per event, and the applier process's CPU-µs per item written (user + system from
/proc; the requests and items are counted in the process by bench/hooks/sitecustomize.py, the same way for any
commit).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from replicator.core.config import Config, parse_config
from replicator.local.stack import LocalStack, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "bench" / "hooks"
MESSAGING = {
    "tables": {"messaging": {"partition_key": "owner_id", "sort_key": "opponent_id",
                             "lsi": {"by_timestamp": "timestamp"}}},
    "rules": [
        {"match": "opponents:{owner}", "type": "zset", "table": "messaging",
         "item": {"owner_id": "{owner}", "opponent_id": "{member}", "timestamp": "{score}"}},
        {"match": "meta:{owner}:{opponent}", "type": "string", "table": "messaging",
         "item": {"owner_id": "{owner}", "opponent_id": "{opponent}", "metadata": "{value}"}},
    ],
}


def config_data(stack: LocalStack, topic: str, name: str, **sections: Any) -> dict[str, Any]:
    overrides = stack.config_overrides()
    data: dict[str, Any] = {
        **MESSAGING, **overrides,
        "tables": {"messaging": {**MESSAGING["tables"]["messaging"], "name": f"mx_{name}"}},
        "default": {"table": f"mx_mirror_{name}"},
        "kafka": {**overrides["kafka"], "topic": topic, "group_id": f"mx-{name}"},
        "dynamodb": {**overrides["dynamodb"], "state_table": f"mx_state_{name}"},
        "capture": {"resnapshot_on_gap": False, "coalesce_ms": 5},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def _command(rng: random.Random, pipe: Any, owners: int) -> None:
    owner = f"u{rng.randrange(owners)}"
    roll = rng.random()
    if roll < 0.40:
        pipe.zadd(f"opponents:{owner}", {f"p{rng.randrange(60)}": time.time() + rng.random()})
    elif roll < 0.48:
        pipe.zrem(f"opponents:{owner}", f"p{rng.randrange(60)}")
    elif roll < 0.53:
        pipe.zincrby(f"opponents:{owner}", 1, f"p{rng.randrange(60)}")
    elif roll < 0.55:
        pipe.delete(f"opponents:{owner}")
    elif roll < 0.70:
        pipe.set(f"meta:{owner}:p{rng.randrange(60)}", rng.choice(["pinned", "muted", "archived"]))
    elif roll < 0.82:
        pipe.set(f"session:{rng.randrange(owners * 5)}", rng.randbytes(rng.randint(20, 400)), ex=600)
    elif roll < 0.90:
        pipe.hset(f"profile:{owner}", f"f{rng.randrange(20)}", rng.randbytes(16))
    elif roll < 0.95:
        pipe.sadd(f"tags:{owner}", f"t{rng.randrange(30)}")
    else:
        key = f"feed:{owner}"
        pipe.lpush(key, rng.randbytes(24))
        pipe.ltrim(key, 0, 49)


def paced(client: redis.Redis, seconds: float, rate: float, command: Callable[[Any, int], None]) -> int:
    """``command(pipeline, i)`` ``rate`` times a second for ``seconds``, sent in 10 ms steps. Returns how many."""
    sent = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        pipe = client.pipeline(transaction=False)
        for i in range(sent, due):
            command(pipe, i)
        pipe.execute()
        sent = due
        time.sleep(0.01)
    return sent


def write_burst(client: redis.Redis, seconds: float, rate: float, seed: int = 11, owners: int = 2000) -> int:
    """The mixed workload at ``rate`` commands a second for ``seconds``. Returns the commands sent."""
    rng = random.Random(seed)
    return paced(client, seconds, rate, lambda pipe, _i: _command(rng, pipe, owners))


def _process(argv: list[str], config: dict[str, Any], tmp: Path, name: str, pythonpath: Path,
             env: dict[str, str] | None = None) -> subprocess.Popen:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen([sys.executable, "-m", "replicator", "--log-level", "ERROR", *argv, "-c", str(path)],
                            cwd=pythonpath, env=os.environ | {"PYTHONPATH": f"{HOOKS}:{pythonpath}", **(env or {})},
                            stdout=subprocess.DEVNULL)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_lag(config: Config) -> Callable[[], tuple[int, int]]:
    """(records in the topic, records the applier's group has not committed yet), read when called."""
    from kafka import KafkaConsumer, TopicPartition

    from replicator.adapters.kafka import broker

    kafka = config.kafka
    consumer = KafkaConsumer(**broker.client_kwargs(kafka), group_id=kafka.group_id, enable_auto_commit=False)
    partitions = [TopicPartition(kafka.topic, p) for p in consumer.partitions_for_topic(kafka.topic)]

    def lag() -> tuple[int, int]:
        end = consumer.end_offsets(partitions)
        return sum(end.values()), sum(end[tp] - (consumer.committed(tp) or 0) for tp in partitions)

    return lag


def capture_burst(stack: LocalStack, tmp: Path, seconds: float, rate: float) -> tuple[str, int, int]:
    """Capture a burst into a new topic with ``replicator listen``; the topic, its Redis commands and its events."""
    client = redis.Redis.from_url(stack.redis_url)
    client.flushall()
    topic = f"bench.mixed.{uuid.uuid4().hex[:6]}"
    port = free_port()
    data = config_data(stack, topic, "capture", metrics={"port": port})
    listener = _process(["listen"], data, tmp, "listen", ROOT)
    try:
        wait_until(lambda: ready(port), 60, "listener ready")
        commands = write_burst(client, seconds, rate)
    finally:
        listener.terminate()  # it publishes what it has read, then exits
        listener.wait(120)
    events, _lag = group_lag(parse_config(data))()
    print(f"  mixed burst: {commands:,} Redis commands in {seconds:.0f}s -> {events:,} change events", flush=True)
    return topic, commands, events


def ready(port: int) -> bool:
    """The /readyz of a replicator process answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def drain(stack: LocalStack, tmp: Path, topic: str, variant: str, source: Path, write_mode: str | None,
          timeout: float = 1800) -> dict[str, Any]:
    """Drain ``topic`` with ``replicator apply`` from ``source`` (a checkout) in ``write_mode``."""
    name = re.sub(r"[^A-Za-z0-9]", "_", f"{variant}_{write_mode or 'default'}_{uuid.uuid4().hex[:4]}")
    data = config_data(stack, topic, name, metrics={"port": free_port()})
    if write_mode:
        data["apply"] = {"write_mode": write_mode}
    counts = tmp / f"{name}.counts"
    lag = group_lag(parse_config(data))
    started = time.time()
    applier = _process(["apply"], data, tmp, name, source, {"BENCH_DYNAMODB_COUNTS": str(counts)})
    try:
        first = Path(f"{counts}.first")
        wait_until(first.exists, 120, f"{variant}: first DynamoDB request", interval=0.05)
        cpu_start, first_at = _cpu_s(applier.pid), float(first.read_text())
        wait_until(lambda: lag()[1] == 0, timeout, f"{variant}: backlog drained", interval=0.1)
        drained_at = time.time()
        cpu = _cpu_s(applier.pid) - cpu_start
    finally:
        applier.terminate()
        applier.wait(120)
    events = lag()[0]
    found = json.loads(counts.read_text())
    requests, items = sum(found["requests"].values()), sum(found["items"].values())
    seconds = drained_at - first_at
    return {"variant": variant, "write_mode": write_mode or "default", "events": events,
            "drain_s": round(seconds, 1), "startup_s": round(first_at - started, 1),
            "events_per_s": round(events / seconds), "items_per_s": round(items / seconds),
            "requests_per_event": round(requests / events, 3), "items_per_event": round(items / events, 3),
            "cpu_us_per_item": round(cpu / max(1, items) * 1e6), "requests": found["requests"]}


def parent_checkout(tmp: Path, rev: str) -> Path:
    """A worktree of ``rev`` (the parent commit by default): the applier as it was, for "today's" figures."""
    path = tmp / "parent"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True,
                   capture_output=True)
    return path


def remove_checkout(path: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)


def run(stack: LocalStack, seconds: float, rate: float, baseline_rev: str | None,
        modes: tuple[str, ...] = ("batch", "transaction", "item")) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        topic, commands, events = capture_burst(stack, tmp, seconds, rate)
        results = []
        if baseline_rev:
            parent = parent_checkout(tmp, baseline_rev)
            try:
                results.append(drain(stack, tmp, topic, f"parent {baseline_rev}", parent, None))
                print(f"  {results[-1]}", flush=True)
            finally:
                remove_checkout(parent)
        for mode in modes:
            results.append(drain(stack, tmp, topic, "this commit", ROOT, mode))
            print(f"  {results[-1]}", flush=True)
        for result in results:
            result.update(burst_commands=commands, burst_events=events)
            if baseline_rev:  # how many times faster than the baseline commit drained the same burst
                result["speedup_vs_baseline"] = round(results[0]["drain_s"] / result["drain_s"], 2)
        return results
