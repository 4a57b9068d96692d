"""The cutover: how long a switch holds the application's writes, and what MigratingRedis costs per command.

- hold: the demo's messaging workload written through ``MigratingRedis`` at a fixed offered rate (several threads)
  by two client instances, the listener and the applier running in their own processes, while the owners are
  shadowed and then switched share by share (10 %, 20 % ... 100 %). Per switch: how long writes were held (from the
  holding plan to the switched one, as the switch measures it); per write: its latency, whichever store took it.
  p50/p99 of both, the rate achieved, and the appliers' backlog when each switch began (the hold waits for it).
- overhead: one thread, the same commands through ``MigratingRedis`` and through the bare client it routes to, on
  the same endpoint: owners on Redis (``MigratingRedis`` → Redis vs ``redis.Redis``) and owners switched
  (``MigratingRedis`` → DynamoDB vs ``DynamoRedis``); commands/s, their ratio, and client CPU-µs per command.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import mixed  # bench/mixed.py
import redis

from replicator import pipeline
from replicator.adapters.dynamodb.cutover import ControlStore
from replicator.adapters.dynamodb.tables import create_tables
from replicator.core.config import Config, parse_config
from replicator.cutover import MigratingRedis
from replicator.dynamo_redis import DynamoRedis
from replicator.local.demo import Workload
from replicator.local.stack import LocalStack, dynamodb_client

OWNERS = 2000


def _config_data(stack: LocalStack) -> dict[str, Any]:
    """The demo's messaging rules (mixed.config_data's) on tables and a topic of their own; the listener's start
    re-snapshot on, since the owners are seeded before it starts."""
    uid = uuid.uuid4().hex[:6]
    return mixed.config_data(stack, f"cut.{uid}", f"cut{uid}", capture={"coalesce_ms": 2, "resnapshot_on_gap": True})


def _config(stack: LocalStack) -> Config:
    return parse_config(_config_data(stack))


class Launch(Protocol):
    """How bench/run.py starts ``replicator <command>`` processes on a config (as deployed)."""

    def config_file(self, data: dict[str, Any]) -> AbstractContextManager[str]: ...

    def replicator(self, command: str, config_path: str) -> subprocess.Popen: ...


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def hold(stack: LocalStack, launch: Launch, rate: float, threads: int = 16, step: int = 10) -> dict[str, Any]:
    data = _config_data(stack)
    config = parse_config(data)
    ddb = dynamodb_client(stack.dynamodb_endpoint)
    create_tables(ddb, config.rule_set, config.dynamodb.state_table)
    r = redis.Redis.from_url(stack.redis_url)
    Workload(r, OWNERS).seed(opponents=4)
    ctx = pipeline.context(config)
    lines: list[tuple[float, str]] = []
    steps = pipeline.cutover(ctx, out=lambda line: lines.append((time.monotonic(), line)))
    with launch.config_file(data) as path:
        processes = [launch.replicator("listen", path), launch.replicator("apply", path)]
        try:
            _caught_up(steps, 300)  # the start's re-snapshot of the seeded owners applied
            return _hold(stack, config, steps, ddb, rate, threads, step, lines)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)


def _hold(stack: LocalStack, config: Config, steps: Any, ddb: Any, rate: float, threads: int,
          step: int, lines: list[tuple[float, str]]) -> dict[str, Any]:
    apps = [MigratingRedis(redis.Redis.from_url(stack.redis_url), config, ddb, instance=f"bench-{i}") for i in range(2)]
    owners = [f"user{i:04d}" for i in range(OWNERS)]
    latencies: list[float] = []
    writes, retried = [0], [0]
    stop = threading.Event()
    lock = threading.Lock()

    def writer(n: int) -> None:
        workload = Workload(apps[n % 2], 0, seed=100 + n, switchable=True)
        workload.owners = owners[n::threads]
        interval = threads / rate
        due = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            try:
                workload.step()
            except redis.exceptions.TryAgainError:
                retried[0] += 1
                continue
            ended = time.monotonic()
            with lock:
                latencies.append(ended - started)
                writes[0] += 1
            due += interval
            if due > ended:
                time.sleep(due - ended)
            else:
                due = ended  # behind: no burst to catch up

    pool = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(threads)]
    started = time.monotonic()
    for t in pool:
        t.start()
    holds, backlogs, phases = [], [], []
    try:
        steps.shadow(100)
        time.sleep(3)
        for share in range(step, 101, step):
            _caught_up(steps, 300)  # the hold with appliers keeping up; the start's re-snapshot is applied first
            backlogs.append(steps.status().lag or 0)
            lines.clear()
            steps.switch(share, timeout_s=300)
            holds.append(steps.last_hold_s)
            phases.append(_phases(lines))
            time.sleep(1)
    finally:
        stop.set()
        for t in pool:
            t.join(30)
        elapsed = time.monotonic() - started
        for app in apps:
            app.close()
    result = {
        "offered_writes_per_s": rate, "achieved_writes_per_s": round(writes[0] / elapsed), "threads": threads,
        "switches": len(holds), "hold_p50_s": round(statistics.median(holds), 3),
        "hold_p99_s": round(_percentile(holds, 0.99), 3), "hold_max_s": round(max(holds), 3),
        "write_p50_ms": round(_percentile(latencies, 0.5) * 1000, 2),
        "write_p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "writes_retried_after_hold_timeout": retried[0], "applier_backlog_at_switch_max": max(backlogs),
        "holds_s": [round(h, 3) for h in holds], "applier_backlog_at_switch": backlogs,
        "hold_phases_median_s": {name: round(statistics.median(p[name] for p in phases), 3) for name in phases[0]},
    }
    print(f"  hold per switch p50 {result['hold_p50_s']}s p99 {result['hold_p99_s']}s over {len(holds)} switches; "
          f"writes {result['achieved_writes_per_s']}/s (offered {rate:,.0f}), p50 {result['write_p50_ms']} ms, "
          f"p99 {result['write_p99_ms']} ms; hold phases (median s): {result['hold_phases_median_s']}", flush=True)
    return result


def _phases(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Where a switch's hold went, from the times of the lines it printed: the clients on the holding plan and the
    listeners' markers, the appliers passing the watermark, and writing the switched plan."""
    def at(prefix: str) -> float:
        return next(t for t, line in lines if prefix in line)

    held, marked, applied = at(": writes of owners up to"), at("listeners:"), at("appliers: DynamoDB holds")
    return {"clients_and_markers": marked - held, "appliers": applied - marked,
            "switched_plan": at("switched to DynamoDB") - applied}


def _caught_up(steps: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (steps.status().lag or 0) > 200 and time.monotonic() < deadline:
        time.sleep(0.5)


def _measure_pair(ours: Callable[[random.Random], Any], theirs: Callable[[random.Random], Any], ops: int,
                  rounds: int = 5) -> tuple[dict[str, float], dict[str, float]]:
    """Both, alternating in ``rounds`` slices (a slow moment of the machine falls on both alike)."""
    totals = {"ours": [0.0, 0.0], "theirs": [0.0, 0.0]}
    rngs = {"ours": random.Random(7), "theirs": random.Random(8)}  # alike, not equal (see commands())
    for _ in range(rounds):
        for name, fn in (("ours", ours), ("theirs", theirs)):
            cpu, started = time.process_time(), time.perf_counter()
            for _ in range(ops // rounds):
                fn(rngs[name])
            totals[name][0] += time.perf_counter() - started
            totals[name][1] += time.process_time() - cpu
    done = ops // rounds * rounds
    mine, base = ({"per_s": round(done / t[0]), "cpu_us_per_command": round(t[1] / done * 1e6)}
                  for t in (totals["ours"], totals["theirs"]))
    return mine, base


def overhead(stack: LocalStack, ops: int = 2000) -> dict[str, Any]:
    config = _config(stack)
    ddb = dynamodb_client(stack.dynamodb_endpoint)
    create_tables(ddb, config.rule_set, config.dynamodb.state_table)
    bare_redis = redis.Redis.from_url(stack.redis_url)
    bare_dynamo = DynamoRedis.from_config(config, ddb)
    control = ControlStore(ddb, config.dynamodb.state_table)
    app = MigratingRedis(redis.Redis.from_url(stack.redis_url), config, ddb, instance="bench-overhead")
    owners = 200

    def commands(client: Any) -> dict[str, Callable[[random.Random], Any]]:
        return {
            # Scores and values drawn afresh, by differently seeded draws for the two clients: a write equal to
            # what the other one wrote just before would change nothing (and cost DynamoDB no write).
            "zadd": lambda rng: client.zadd(f"opponents:user{rng.randrange(owners)}",
                                            {f"p{rng.randrange(20)}": rng.randrange(1 << 40)}),
            "zrevrange(k, 0, 9)": lambda rng: client.zrevrange(f"opponents:user{rng.randrange(owners)}", 0, 9,
                                                               withscores=True),
            "set (string rule)": lambda rng: client.set(f"meta:user{rng.randrange(owners)}:p1",
                                                        f"{rng.random():.17f}" * 2),
            "get (string rule)": lambda rng: client.get(f"meta:user{rng.randrange(owners)}:p1"),
        }

    results: dict[str, Any] = {}
    try:
        for stage, bare, switch in (("redis", bare_redis, None), ("dynamodb", bare_dynamo, 100)):
            if switch:  # every owner switched at once: no listener runs here to take a switch's markers
                plan = control.plan()
                control.replace(plan, plan.with_shadow(100).holding(100).switched())
                while app.plan().dynamodb < 100:
                    time.sleep(0.05)
            ours, theirs = commands(app), commands(bare)
            for name in ours:
                n = ops if stage == "redis" else ops // 4
                _measure_pair(ours[name], theirs[name], n // 5, rounds=1)  # warm both paths
                mine, base = _measure_pair(ours[name], theirs[name], n)
                results[f"{name} [{stage}]"] = {"migrating": mine, "bare": base,
                                                "ratio": round(mine["per_s"] / base["per_s"], 2)}
                print(f"  {name + ' [' + stage + ']':30} {mine['per_s']:>8,}/s  bare {base['per_s']:>8,}/s  ratio "
                      f"{results[f'{name} [{stage}]']['ratio']:.2f}  CPU-µs {mine['cpu_us_per_command']} vs "
                      f"{base['cpu_us_per_command']}", flush=True)
    finally:
        app.close()
    return results


def run(stack: LocalStack, launch: Launch, rate: float, ops: int = 2000) -> dict[str, Any]:
    print("MigratingRedis overhead per command (one thread)", flush=True)
    costs = overhead(stack, ops)
    print(f"switch holds under {rate:,.0f} offered writes/s (listener and applier in their own processes)",
          flush=True)
    return {"hold": hold(stack, launch, rate), "overhead": costs}
