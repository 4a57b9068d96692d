"""Benchmarks: each stage's throughput as a ratio of a raw baseline measured in the same run, on the same services.

    .venv/bin/python bench/run.py [--repeat 3] [--events 20000] [--keys 1000000] [--rate 5000 1500]
                                  [--seconds 60] [--write-mode transaction]

Starts the embedded local stack (redis-server, Kafka 4 in KRaft mode, DynamoDB Local), then for every figure prints
min / median / max over ``--repeat`` runs and writes everything to ``bench/results/<utc time>.json`` so results can
be compared across commits. The figures:

- capture: events/s from Redis writes to Avro events acknowledged by Kafka (the listener), vs a plain kafka-python
  producer sending pre-encoded messages of the same size, vs a bare confluent-kafka producer doing the same with
  the listener's producer settings (the ceiling), and vs a bare subscriber counting the notifications;
- apply: items/s from the topic into DynamoDB (the applier, in each write mode), vs raw boto3 BatchWriteItem of the
  same items from one thread, vs raw conditional TransactWriteItems of them (100 per call, 16 threads), and vs raw
  BatchExecuteStatement INSERTs of them (25 per call, 16 threads); plus the applier's CPU-µs per item;
- mixed: a realistic mixed workload's burst drained by each write mode and by the parent commit's applier (see
  bench/mixed.py): drain time, events/s, DynamoDB requests per event, CPU-µs per item;
- snapshot: keys/s of a mixed-type keyspace (the snapshot loader; and two `replicator snapshot` processes as capture
  shards, start-up included), vs a bare SCAN + pipelined read loop;
- end to end: p50/p99 latency at a fixed offered write rate, with the listener and the applier in two processes
  as deployed, and both processes' RSS at start and end;
- client: DynamoRedis commands/s next to raw boto3 making the same reads and writes by hand, DynamoDB requests and
  client CPU-µs per command (see bench/client.py);
- verify: ``replicator verify`` over a keyspace loaded into both stores, next to a raw loop reading the same keys
  and to the parent commit's verify (see bench/verify.py).
- cutover: how long a switch holds writes under a fixed offered write rate through MigratingRedis, and
  MigratingRedis' cost per command next to the bare clients it routes to (see bench/cutover.py).

A warm-up pass runs first: the JVMs behind Kafka and DynamoDB Local compile their hot paths on the first requests.

Throughput is never asserted in tests; this is where it is measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import client as client_bench  # noqa: E402  (bench/client.py)
import cutover as cutover_bench  # noqa: E402  (bench/cutover.py)
import mixed  # noqa: E402  (bench/mixed.py)
import redis  # noqa: E402
import verify as verify_bench  # noqa: E402  (bench/verify.py)
from confluent_kafka import Producer  # noqa: E402
from kafka import KafkaProducer  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from replicator import pipeline  # noqa: E402
from replicator.adapters.kafka import broker  # noqa: E402
from replicator.adapters.kafka.producer import producer_settings  # noqa: E402
from replicator.adapters.redis.states import StateReader  # noqa: E402
from replicator.core.config import Config, parse_config  # noqa: E402
from replicator.local.stack import LocalStack, dynamodb_client, free_port, wait_until  # noqa: E402
from replicator.logs import setup as setup_logs  # noqa: E402

VALUE = b"x" * 100  # every benchmark key holds a 100-byte string unless it says otherwise


def _config(stack: LocalStack, name: str, **sections: Any) -> Config:
    return parse_config(_config_data(stack, name, **sections))


def _config_data(stack: LocalStack, name: str, **sections: Any) -> dict[str, Any]:
    """Mirror-rule only (one item per key), tables and topic unique to this measurement."""
    overrides = stack.config_overrides()
    data: dict[str, Any] = {
        **overrides,
        "default": {"table": f"bench_{name}"},
        "kafka": {**overrides["kafka"], "topic": f"bench.{name}", "group_id": f"bench-{name}"},
        "dynamodb": {**overrides["dynamodb"], "state_table": f"bench_state_{name}"},
        "capture": {"resnapshot_on_gap": False, "coalesce_ms": 5},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def _counter(name: str) -> float:
    return sum(s.value for f in REGISTRY.collect() for s in f.samples if s.name == name)


#: SETs done by redis-server itself, a thousand per call: the writes cost the measured process nothing, as when
#: the application writing to Redis is another process (which it is).
_WRITE = "for i = ARGV[2], ARGV[3] do redis.call('SET', ARGV[1] .. ':' .. i, ARGV[4]) end"


def _write_keys(client: redis.Redis, prefix: str, n: int, value: bytes = VALUE) -> None:
    for start in range(0, n, 1000):
        client.eval(_WRITE, 0, prefix, start, min(n, start + 1000) - 1, value)


# -- capture -----------------------------------------------------------------------------------------------------


def capture_rate(stack: LocalStack, n: int) -> float:
    r = redis.Redis.from_url(stack.redis_url)
    config = _config(stack, f"cap{uuid.uuid4().hex[:6]}")
    ctx = pipeline.context(config)
    listener = pipeline.listener(ctx)
    return _stage_rate(listener, "replicator_events_published_total", n, 300, ready=listener.subscribed.is_set,
                       act=lambda: _write_keys(r, f"cap{uuid.uuid4().hex[:6]}", n))


def _stage_rate(stage: Any, counter: str, n: int, timeout: float, ready: Callable[[], bool] = lambda: True,
                act: Callable[[], None] = lambda: None) -> float:
    """Run ``stage`` in a thread; once ``ready``, start the clock, ``act``, and time ``counter`` growing to ``n``.

    Only what the stage does after it is ready counts (an applier joining its group is not throughput).
    """
    stop = threading.Event()
    before = _counter(counter)
    thread = threading.Thread(target=stage.run, args=(stop,), daemon=True)
    thread.start()
    wait_until(ready, 60, "stage ready", interval=0.001)
    started, at_start = time.perf_counter(), _counter(counter)
    act()
    wait_until(lambda: _counter(counter) - before >= n, timeout, counter, interval=0.01)
    elapsed = time.perf_counter() - started
    done = _counter(counter) - at_start
    stop.set()
    thread.join(60)
    return done / elapsed


#: CPU-µs per record of each raw producer run: "process" (every thread, the client's I/O thread included) and
#: "caller" (the thread that calls send/produce: the time a listener's one Python thread loses per event).
PRODUCER_CPU_US: dict[str, dict[str, list[float]]] = {}


def _producer_cpu(client: str, n: int, process_before: float, caller_before: float) -> None:
    cpu = PRODUCER_CPU_US.setdefault(client, {"process": [], "caller": []})
    cpu["process"].append((time.process_time() - process_before) / n * 1e6)
    cpu["caller"].append((time.thread_time() - caller_before) / n * 1e6)


def raw_producer_rate(stack: LocalStack, n: int, size: int) -> float:
    config = _config(stack, f"raw{uuid.uuid4().hex[:6]}")
    broker.ensure_topic(config.kafka, config.kafka.topic, config.kafka.partitions)
    producer = KafkaProducer(**broker.client_kwargs(config.kafka), acks="all", linger_ms=5,
                             max_in_flight_requests_per_connection=1)
    payload = b"p" * size
    process, caller = time.process_time(), time.thread_time()
    started = time.perf_counter()
    for i in range(n):
        producer.send(config.kafka.topic, key=str(i % 1000).encode(), value=payload)
    producer.flush()
    elapsed = time.perf_counter() - started
    _producer_cpu("kafka-python", n, process, caller)
    producer.close()
    return n / elapsed


def raw_librdkafka_rate(stack: LocalStack, n: int, size: int) -> float:
    """The same messages through a bare confluent-kafka producer with the publisher's settings: the ceiling of
    what capture can publish."""
    config = _config(stack, f"rdk{uuid.uuid4().hex[:6]}")
    broker.ensure_topic(config.kafka, config.kafka.topic, config.kafka.partitions)
    producer = Producer(producer_settings(config.kafka), logger=logging.getLogger("bench.librdkafka"))
    payload = b"p" * size
    process, caller = time.process_time(), time.thread_time()
    started = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(config.kafka.topic, payload, str(i % 1000).encode())
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush()
    elapsed = time.perf_counter() - started
    _producer_cpu("librdkafka", n, process, caller)
    return n / elapsed


def bare_subscriber_rate(stack: LocalStack, n: int) -> float:
    r = redis.Redis.from_url(stack.redis_url)
    r.config_set("notify-keyspace-events", "KEA")
    prefix = f"sub{uuid.uuid4().hex[:6]}"
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"__keyspace@0__:{prefix}:*")
    wait_until(lambda: pubsub.get_message(timeout=0.1) is None, 5, "subscribed")
    received = [0]

    def count() -> None:
        while received[0] < n:
            if pubsub.get_message(timeout=1.0) is not None:
                received[0] += 1

    thread = threading.Thread(target=count, daemon=True)
    started = time.perf_counter()
    thread.start()
    _write_keys(redis.Redis.from_url(stack.redis_url), prefix, n)
    thread.join(300)
    elapsed = time.perf_counter() - started
    pubsub.close()
    return received[0] / elapsed


def encoded_event_size(stack: LocalStack) -> int:
    from replicator.core.avro import EventCodec
    from replicator.core.events import ChangeEvent, KeyType, Op, Origin

    event = ChangeEvent(b"cap123456:12345", KeyType.STRING, Op.UPSERT, Origin.LIVE, 1, 1, b"cap123456:12345", VALUE,
                        event_id=ChangeEvent.new_id())
    return len(EventCodec().encode(event))


# -- apply -------------------------------------------------------------------------------------------------------


#: Applier CPU-µs per item, per write mode, of every apply_rate run.
APPLY_CPU_US: dict[str, list[float]] = {}


def apply_rate(stack: LocalStack, n: int, write_mode: str = "batch") -> float:
    name = f"app{uuid.uuid4().hex[:6]}"
    r = redis.Redis.from_url(stack.redis_url)
    r.flushall()  # the snapshot below publishes every key: only these
    config = _config(stack, name, apply={"write_mode": write_mode})
    ctx = pipeline.context(config)
    _write_keys(r, name, n)
    pipeline.snapshot_loader(ctx).run()  # n events in the topic, nothing applied yet
    applier = pipeline.applier(ctx)
    cpu = os.times()
    rate = _stage_rate(applier, "replicator_events_applied_total", n, 600, ready=applier.assigned.is_set)
    used = sum(os.times()[:2]) - sum(cpu[:2])  # this process is the applier (and idle bench threads) meanwhile
    APPLY_CPU_US.setdefault(write_mode, []).append(used / n * 1e6)
    return rate


def raw_batch_statement_rate(stack: LocalStack, n: int, threads: int = 16) -> float:
    """The same items as PartiQL INSERTs, 25 per BatchExecuteStatement, ``threads`` at a time: what DynamoDB (here:
    DynamoDB Local, whose PartiQL engine costs it about three times a BatchWriteItem's put) can take of the
    requests the batch mode sends."""
    client = dynamodb_client(stack.dynamodb_endpoint)
    table = _raw_table(client)
    text = f'INSERT INTO "{table}" VALUE {{\'key\': ?, \'type\': ?, \'value\': ?, \'_v_mirror\': ?}}'
    statements = [{"Statement": text, "Parameters": [{"B": f"raw:{i}".encode()}, {"S": "string"}, {"B": VALUE},
                                                     {"N": "1795000000000000"}]} for i in range(n)]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: client.batch_execute_statement(Statements=statements[i:i + 25]), range(0, n, 25)))
    return n / (time.perf_counter() - started)


def raw_batch_write_rate(stack: LocalStack, n: int) -> float:
    client = dynamodb_client(stack.dynamodb_endpoint)
    table = _raw_table(client)
    items = [{"key": {"B": f"raw:{i}".encode()}, "type": {"S": "string"}, "value": {"B": VALUE},
              "_v_mirror": {"N": "1795000000000000"}} for i in range(n)]
    started = time.perf_counter()
    for i in range(0, n, 25):
        pending = {table: [{"PutRequest": {"Item": item}} for item in items[i:i + 25]]}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    return n / (time.perf_counter() - started)


def raw_transaction_rate(stack: LocalStack, n: int, threads: int = 16) -> float:
    """The same items as conditional updates (newer version wins, as the applier writes them), 100 per
    TransactWriteItems, ``threads`` at a time: what DynamoDB can take of the writes the transaction mode sends."""
    client = dynamodb_client(stack.dynamodb_endpoint)
    table = _raw_table(client)
    requests = [
        {"Update": {"TableName": table, "Key": {"key": {"B": f"raw:{i}".encode()}},
                    "UpdateExpression": "SET #t = :t, #val = :val, #v = :v",
                    "ConditionExpression": "attribute_not_exists(#v) OR #v <= :v",
                    "ExpressionAttributeNames": {"#t": "type", "#val": "value", "#v": "_v_mirror"},
                    "ExpressionAttributeValues": {":t": {"S": "string"}, ":val": {"B": VALUE},
                                                  ":v": {"N": "1795000000000000"}}}}
        for i in range(n)
    ]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: client.transact_write_items(TransactItems=requests[i:i + 100]), range(0, n, 100)))
    return n / (time.perf_counter() - started)


def _raw_table(client: Any) -> str:
    table = f"bench_raw_{uuid.uuid4().hex[:6]}"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "B"}])
    wait_until(lambda: client.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE", 30, "table")
    return table


# -- snapshot ----------------------------------------------------------------------------------------------------


def _mixed_keyspace(client: redis.Redis, prefix: str, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            pipe.set(f"{prefix}:s:{i}", VALUE)
        elif kind == 1:
            pipe.hset(f"{prefix}:h:{i}", mapping={"a": "1", "b": VALUE})
        else:
            pipe.zadd(f"{prefix}:z:{i}", {"m1": 1, "m2": 2, "m3": 3})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def snapshot_rate(stack: LocalStack) -> float:
    config = _config(stack, f"snap{uuid.uuid4().hex[:6]}")
    report = pipeline.snapshot_loader(pipeline.context(config)).run()
    return report.keys_scanned / report.seconds


def sharded_snapshot_rate(stack: LocalStack, shards: int) -> float:
    """``shards`` snapshot processes (``replicator snapshot`` with capture.shard 0..shards-1) started together:
    keys of the keyspace / time until the last one exits, start-up included."""
    data = _config_data(stack, f"shs{uuid.uuid4().hex[:6]}")
    config = parse_config(data)
    ctx = pipeline.context(config)
    pipeline.dynamodb(ctx)  # tables and topic exist before the processes race to create them
    broker.ensure_topic(config.kafka, config.kafka.topic, config.kafka.partitions)
    keys = redis.Redis.from_url(stack.redis_url).dbsize()
    with _config_file(data) as path:
        started = time.perf_counter()
        processes = [_replicator("snapshot", path, REPLICATOR_CAPTURE_SHARDS=str(shards),
                                 REPLICATOR_CAPTURE_SHARD=str(shard)) for shard in range(shards)]
        failed = [p.args for p in processes if p.wait(1800) != 0]
        elapsed = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"snapshot shard failed: {failed[0]}")
    return keys / elapsed


def bare_scan_rate(stack: LocalStack, n: int) -> float:
    client = redis.Redis.from_url(stack.redis_url)
    reader = StateReader(client)
    started = time.perf_counter()
    done = 0
    batch: list[bytes] = []
    for key in client.scan_iter(count=1000):
        batch.append(key)
        if len(batch) >= 500:
            done += len(reader.read(batch))
            batch = []
    done += len(reader.read(batch))
    return done / (time.perf_counter() - started)


# -- end to end --------------------------------------------------------------------------------------------------


def end_to_end(stack: LocalStack, rate: float, seconds: float, write_mode: str) -> dict[str, Any]:
    """Latency from a Redis write to its item in DynamoDB at ``rate`` writes/s, with the listener and the applier
    in two processes as they are deployed (this one applies: the latency histogram is its own)."""
    name = f"e2e{uuid.uuid4().hex[:6]}"
    r = redis.Redis.from_url(stack.redis_url)
    port = free_port()
    data = _config_data(stack, name, apply={"write_mode": write_mode}, metrics={"port": port})
    config = parse_config(data)
    applier = pipeline.applier(pipeline.context(config))
    stop = threading.Event()
    thread = threading.Thread(target=applier.run, args=(stop,), daemon=True)
    thread.start()
    with _config_file(data) as path:
        listener = _replicator("listen", path)
        try:
            wait_until(lambda: mixed.ready(port) and applier.assigned.is_set(), 60, "pipeline ready")
            before = _histogram()
            applied = _counter("replicator_events_applied_total")
            rss_start = {"applier": _rss_mb(os.getpid()), "listener": _rss_mb(listener.pid)}
            written = mixed.paced(r, seconds, rate, lambda pipe, i: pipe.set(f"{name}:{i % 50_000}", VALUE))
            rss_end = {"applier": _rss_mb(os.getpid()), "listener": _rss_mb(listener.pid)}
            listener.terminate()  # it publishes what it has read, then exits
            listener.wait(60)
            drained = time.perf_counter()
            lag = mixed.group_lag(config)
            wait_until(lambda: lag()[1] == 0, max(120.0, written / 500), "events applied", 0.05)
            behind_s = time.perf_counter() - drained
        finally:
            if listener.poll() is None:
                listener.kill()
            stop.set()
            thread.join(60)
    after = _histogram()
    buckets = {le: after["buckets"][le] - before["buckets"].get(le, 0) for le in after["buckets"]}
    return {"write_mode": write_mode, "p50_s": _quantile(buckets, 0.5), "p99_s": _quantile(buckets, 0.99),
            "writes": written, "events_applied": _counter("replicator_events_applied_total") - applied,
            "drain_after_writes_stopped_s": behind_s, "rss_start_mb": rss_start, "rss_end_mb": rss_end}


@contextmanager
def _config_file(data: dict[str, Any]) -> Iterator[str]:
    """``data`` as a config file for ``replicator`` processes (JSON is YAML), removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(json.dumps(data))
        yield str(path)


def _replicator(command: str, config_path: str, **env: str) -> subprocess.Popen:
    """``replicator <command>`` from this checkout, as its own process (as deployed)."""
    return subprocess.Popen([sys.executable, "-m", "replicator", "--log-level", "ERROR", command, "-c", config_path],
                            cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT), **env}, stdout=subprocess.DEVNULL)


class _Launch:
    """``replicator`` processes for bench/cutover.py (see cutover.Launch)."""

    config_file = staticmethod(_config_file)
    replicator = staticmethod(_replicator)


def _histogram() -> dict[str, Any]:
    buckets: dict[float, float] = {}
    count = 0.0
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name == "replicator_end_to_end_latency_seconds_bucket":
                buckets[float(s.labels["le"])] = s.value
            elif s.name == "replicator_end_to_end_latency_seconds_count":
                count = s.value
    return {"buckets": buckets, "count": count}


def _quantile(buckets: dict[float, float], q: float) -> float:
    """Upper bound of the bucket holding the q-quantile (the histogram's resolution: an honest 'at most')."""
    total = buckets.get(float("inf"), 0)
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return float("inf")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- report ------------------------------------------------------------------------------------------------------


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _repeat(fn: Callable[[], float], times: int) -> dict[str, float]:
    values = [fn() for _ in range(times)]
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000, help="events per capture/apply measurement")
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys of the snapshot keyspace")
    parser.add_argument("--rate", type=float, nargs="+", default=[5000, 1500],
                        help="offered writes/s of the latency run (several: one run each)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the latency run")
    parser.add_argument("--write-mode", choices=["batch", "item", "transaction"], default="batch",
                        help="the applier's write mode in the latency run")
    parser.add_argument("--mixed-seconds", type=float, default=60, help="length of the mixed workload's burst")
    parser.add_argument("--mixed-rate", type=float, default=800, help="Redis commands/s of the mixed burst")
    parser.add_argument("--baseline-rev", default="HEAD~1",
                        help="the commit whose applier drains the mixed burst as 'today' ('' for none)")
    parser.add_argument("--client-ops", type=int, default=1000, help="commands per DynamoRedis measurement")
    parser.add_argument("--cutover-rate", type=float, default=250,
                        help="offered writes/s through MigratingRedis while switches run (DynamoDB Local, taking "
                             "the switched owners' writes and the applier's, keeps up with about this much on 2 "
                             "cores: 1,000 left the appliers 130k events behind)")
    parser.add_argument("--verify-keys", type=int, default=1_000_000,
                        help="keys of verify's keyspace (loaded into DynamoDB directly: about 3 minutes per 500k)")
    parser.add_argument("--verify-today-keys", type=int, default=50_000,
                        help="keys of the smaller keyspace on which today's verify (--baseline-rev) and this "
                             "commit's are compared")
    parser.add_argument("--only", choices=["all", "apply", "mixed", "client", "cutover", "verify"], default="all",
                        help="measure only the apply figures, the mixed workload, the Redis-shaped client, or the "
                             "cutover (switch holds, MigratingRedis' overhead)")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/<time>.json)")
    args = parser.parse_args(argv)
    setup_logs("ERROR")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    results: dict[str, Any] = {"when": datetime.now(timezone.utc).isoformat(), "commit": _commit(),
                               "args": vars(args) | {"json": None}}

    apply_figures = args.only in ("all", "apply")
    figures: dict[str, dict[str, float]] = {}
    latencies: list[dict[str, Any]] = []
    mixed_results: list[dict[str, Any]] = []
    client_results: dict[str, Any] = {}
    cutover_results: dict[str, Any] = {}
    verify_results: dict[str, Any] = {}
    with LocalStack(kafka_partitions=4) as stack:
        r = redis.Redis.from_url(stack.redis_url)
        r.config_set("notify-keyspace-events", "KEA")
        size = encoded_event_size(stack)
        print(f"stack up; {args.repeat} run(s) per figure; events of {size} bytes; warming up", flush=True)
        # The JVMs (Kafka, DynamoDB Local) compile their hot paths during the first requests: not throughput.
        capture_rate(stack, 5000)
        apply_rate(stack, 2000, "batch")
        APPLY_CPU_US.clear()
        raw_batch_write_rate(stack, 5000)
        raw_batch_statement_rate(stack, 5000)
        if args.only == "all":
            figures |= {
                "capture_events_per_s": _repeat(lambda: capture_rate(stack, args.events), args.repeat),
                "raw_producer_msgs_per_s": _repeat(lambda: raw_producer_rate(stack, args.events, size),
                                                   args.repeat),
                "raw_librdkafka_producer_msgs_per_s": _repeat(lambda: raw_librdkafka_rate(stack, args.events, size),
                                                              args.repeat),
                "bare_subscriber_notifications_per_s": _repeat(lambda: bare_subscriber_rate(stack, args.events),
                                                               args.repeat),
            }
        if apply_figures:
            figures |= {
                f"apply_{mode}_mode_items_per_s": _repeat(lambda mode=mode: apply_rate(stack, args.events, mode),
                                                          args.repeat)
                for mode in ("batch", "transaction", "item")
            }
            figures |= {
                "raw_batch_write_items_per_s": _repeat(lambda: raw_batch_write_rate(stack, args.events),
                                                       args.repeat),
                "raw_batch_statement_items_per_s": _repeat(lambda: raw_batch_statement_rate(stack, args.events),
                                                           args.repeat),
                "raw_conditional_transaction_items_per_s": _repeat(
                    lambda: raw_transaction_rate(stack, args.events), args.repeat),
            }
        if args.only == "all":
            r.flushall()
            _mixed_keyspace(r, "snap", args.keys)
            figures["snapshot_keys_per_s"] = _repeat(lambda: snapshot_rate(stack), args.repeat)
            figures["snapshot_2_shard_processes_keys_per_s"] = _repeat(lambda: sharded_snapshot_rate(stack, 2),
                                                                       args.repeat)
            figures["bare_scan_read_keys_per_s"] = _repeat(lambda: bare_scan_rate(stack, args.keys), args.repeat)
            r.flushall()
            latencies = [end_to_end(stack, rate, args.seconds, args.write_mode) for rate in args.rate]
        if args.only in ("all", "mixed"):
            print("mixed workload", flush=True)
            mixed_results = mixed.run(stack, args.mixed_seconds, args.mixed_rate, args.baseline_rev or None)
        if args.only in ("all", "client"):
            print("DynamoRedis vs raw boto3 (one thread)", flush=True)
            client_results = client_bench.run(stack, args.client_ops)
        if args.only in ("all", "cutover"):
            print("cutover", flush=True)
            cutover_results = cutover_bench.run(stack, _Launch(), args.cutover_rate)
        if args.only in ("all", "verify"):
            print("verify", flush=True)
            verify_results = verify_bench.run(stack, args.verify_keys, args.verify_today_keys,
                                              args.baseline_rev or None)

    def ratio(stage: str, baseline: str) -> float:
        return figures[stage]["median"] / figures[baseline]["median"]

    ratios = {}
    if args.only == "all":
        ratios |= {
            "capture / raw kafka-python producer": ratio("capture_events_per_s", "raw_producer_msgs_per_s"),
            "capture / raw librdkafka producer": ratio("capture_events_per_s", "raw_librdkafka_producer_msgs_per_s"),
            "capture / bare subscriber": ratio("capture_events_per_s", "bare_subscriber_notifications_per_s"),
            "snapshot / bare SCAN+read": ratio("snapshot_keys_per_s", "bare_scan_read_keys_per_s"),
            "snapshot, 2 shard processes / bare SCAN+read": ratio("snapshot_2_shard_processes_keys_per_s",
                                                                  "bare_scan_read_keys_per_s"),
        }
    if apply_figures:
        ratios |= {
            "apply (batch) / raw BatchWriteItem": ratio("apply_batch_mode_items_per_s", "raw_batch_write_items_per_s"),
            "apply (batch) / raw BatchExecuteStatement": ratio("apply_batch_mode_items_per_s",
                                                               "raw_batch_statement_items_per_s"),
            "apply (item) / raw BatchWriteItem": ratio("apply_item_mode_items_per_s", "raw_batch_write_items_per_s"),
            "apply (transaction) / raw BatchWriteItem": ratio("apply_transaction_mode_items_per_s",
                                                              "raw_batch_write_items_per_s"),
            "apply (transaction) / raw transactions": ratio("apply_transaction_mode_items_per_s",
                                                            "raw_conditional_transaction_items_per_s"),
        }
    cpu = {mode: round(statistics.median(values)) for mode, values in APPLY_CPU_US.items()}
    producer_cpu = {client: {thread: round(statistics.median(values), 1) for thread, values in cpu_us.items()}
                    for client, cpu_us in PRODUCER_CPU_US.items()}
    results.update(figures=figures, ratios=ratios, apply_cpu_us_per_item=cpu, producer_cpu_us_per_record=producer_cpu,
                   end_to_end=latencies, mixed=mixed_results, client=client_results, cutover=cutover_results,
                   verify=verify_results)
    print(f"\n{'figure':46} {'min':>10} {'median':>10} {'max':>10}")
    for name, f in figures.items():
        print(f"{name:46} {f['min']:>10,.0f} {f['median']:>10,.0f} {f['max']:>10,.0f}")
    print()
    for name, value in ratios.items():
        print(f"{name:46} {value:>10.2f}")
    for mode, us in cpu.items():
        print(f"{'apply (' + mode + ') CPU-µs per item':46} {us:>10}")
    for client, us in producer_cpu.items():
        print(f"{'raw ' + client + ' CPU-µs per record':46} {us['process']:>10} (calling thread: {us['caller']})")
    if mixed_results:
        print(f"\nmixed burst ({args.mixed_seconds:.0f}s at {args.mixed_rate:,.0f} Redis commands/s), drained by:")
        print(f"{'applier':28} {'mode':>12} {'drain s':>8} {'events/s':>9} {'items/s':>8} {'req/event':>9} "
              f"{'items/event':>11} {'CPU-µs/item':>11}")
        for m in mixed_results:
            print(f"{m['variant']:28} {m['write_mode']:>12} {m['drain_s']:>8} {m['events_per_s']:>9,} "
                  f"{m['items_per_s']:>8,} {m['requests_per_event']:>9} {m['items_per_event']:>11} "
                  f"{m['cpu_us_per_item']:>11}")
    for rate, latency in zip(args.rate, latencies, strict=False):
        rss = {p: f"{latency['rss_start_mb'][p]:.0f} -> {latency['rss_end_mb'][p]:.0f}"
               for p in ("listener", "applier")}
        print(f"\nend to end at {rate:,.0f} writes/s for {args.seconds:.0f}s ({latency['write_mode']} mode): "
              f"p50 <= {latency['p50_s']}s, p99 <= {latency['p99_s']}s; all applied "
              f"{latency['drain_after_writes_stopped_s']:.1f}s after the writes stopped; "
              f"RSS MiB listener {rss['listener']}, applier {rss['applier']}")
    if verify_results:
        v = verify_results
        print(f"\nverify of {v['keys']:,} keys: {v['verify']['keys_per_s']:,} keys/s "
              f"({v['verify']['cpu_us_per_key']} CPU-µs/key, {v['verify']['rcu_per_key']} RCU/key); raw loop "
              f"{v['raw_loop_keys_per_s']:,} keys/s (with PartiQL IN {v['raw_loop_partiql_keys_per_s']:,}); "
              f"verify / raw loop {v['verify / raw loop']} ({v['verify / raw loop (PartiQL IN)']})"
              + (f"; on {v['today_keys']:,} keys verify / today {v['verify / today']}" if "verify / today" in v
                 else ""))
    out = args.json or ROOT / "bench" / "results" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
