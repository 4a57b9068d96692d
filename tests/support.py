"""Test helpers: a running pipeline in threads, polling with deadlines, and full-state reads of both stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from replicator import pipeline
from replicator.adapters.kafka import broker
from replicator.adapters.kafka.offsets import GroupOffsets
from replicator.core.config import Config, KafkaConfig, parse_config
from replicator.local.demo import MESSAGING_RULES, Workload
from replicator.local.stack import LocalStack, dynamodb_client
from replicator.tools import replay


def eventually(condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2,
               message: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; fail with the last value seen. Never a bare sleep."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached within {timeout}s (last: {last!r})")
        time.sleep(interval)


def messaging_config(stack: LocalStack, uid: str, **sections: Any) -> Config:
    """The demo's messaging rules on tables, topic and group unique to one test."""
    return parse_config(messaging_config_data(stack, uid, **sections))


def messaging_config_data(stack: LocalStack, uid: str, **sections: Any) -> dict[str, Any]:
    overrides = stack.config_overrides()
    data: dict[str, Any] = {
        **MESSAGING_RULES,
        **overrides,
        "tables": {"messaging": {**MESSAGING_RULES["tables"]["messaging"], "name": f"messaging_{uid}"}},
        "default": {"table": f"mirror_{uid}"},
        "kafka": {**overrides["kafka"], "topic": f"changes.{uid}", "group_id": f"apply-{uid}"},
        "dynamodb": {**overrides["dynamodb"], "state_table": f"state_{uid}"},
        "capture": {"coalesce_ms": 2},
        "apply": {"poll_timeout_ms": 100},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return data


class Running:
    """Listener and/or applier running in threads against real services; errors in them fail the test."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.ctx = pipeline.context(config)
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._stop = threading.Event()
        self.listener: Any = None
        self.applier: Any = None

    def _spawn(self, name: str, target: Callable[[threading.Event], Any]) -> None:
        def body() -> None:
            try:
                target(self._stop)
            except BaseException as exc:
                self._errors.append(exc)

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start_applier(self) -> Running:
        self.applier = pipeline.applier(self.ctx)
        self._spawn("applier", self.applier.run)
        return self

    def start_listener(self) -> Running:
        self.listener = pipeline.listener(self.ctx)
        self._spawn("listener", self.listener.run)
        eventually(lambda: self.listener.subscribed.is_set() or self._errors, 30, message="listener subscribed")
        if self.config.capture.resnapshot_on_gap:
            # The start is a gap: wait for its re-snapshot so tests decide which events are LIVE.
            eventually(lambda: self.listener.resnapshots_completed or self._errors, 60, message="start re-snapshot")
        self.check()
        return self

    def snapshot(self) -> Any:
        return pipeline.snapshot_loader(self.ctx).run()

    def check(self) -> None:
        if self._errors:
            raise self._errors[0]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), f"{thread.name} did not stop within 60s"
        self.check()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def answers(client: redis.Redis) -> bool:
    """Whether a redis-server answers PING (for polling one that is starting)."""
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def clean_redis(stack: LocalStack) -> redis.Redis:
    client = redis.Redis.from_url(stack.redis_url)
    client.flushall()
    return client


def ddb(stack: LocalStack) -> Any:
    return dynamodb_client(stack.dynamodb_endpoint)


def scan_all(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    return items


def topic_records(config: Config, timeout: float = 30.0) -> list[Any]:
    """Every record of the config's topic, read with a throwaway consumer (no group)."""
    with GroupOffsets(config.kafka, config.kafka.topic, None) as topic:
        records, _end = topic.read_to_end(timeout=timeout)
    return records


def dead_letter_records(config: Config) -> list[Any]:
    with GroupOffsets(config.kafka, f"{config.kafka.topic}.dlq", None) as dlq:
        records, _end = dlq.read_to_end()
    return records


def reset_to_earliest(config: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    """Commit each partition's earliest available offset for ``group`` (a replay from the start). Returns them."""
    return {m.partition: m.after for m in replay.reset_offsets(config, group, topic, replay.Target("earliest"))}


def fully_committed(config: Config, group: str | None = None) -> bool:
    """Every partition's committed offset is its end offset (an empty, never-committed partition counts as done).

    Only meaningful once the events waited for are in the topic: an event still on its way is not counted.
    """
    committed, end = committed_and_end(config, group)
    return all((committed[p] or 0) == end[p] for p in end)


def committed_and_end(config: Config, group: str | None = None) -> tuple[dict[int, int | None], dict[int, int]]:
    partitions = [tp.partition for tp in broker.topic_partitions(config.kafka, config.kafka.topic)]
    with GroupOffsets(config.kafka, config.kafka.topic, group or config.kafka.group_id) as offsets:
        return offsets.committed(partitions), offsets.end(partitions)


def messaging_table(config: Config) -> str:
    return config.table_name("messaging")


def mirror_redis_view(r: redis.Redis) -> dict[bytes, tuple[str, Any, int | None]]:
    """Keys no messaging rule maps, as the mirror table should hold them: type, whole value, absolute expiry (ms)."""
    view = {}
    for key in r.scan_iter(count=1000):
        if key.startswith((b"opponents:", b"meta:")):
            continue
        kind = r.type(key).decode()
        if kind == "string":
            value: Any = r.get(key)
        elif kind == "hash":
            value = sorted(r.hgetall(key).items())
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(r.smembers(key))
        elif kind == "zset":
            value = sorted(r.zrange(key, 0, -1, withscores=True))
        else:
            continue  # streams are not replicated (see README)
        if value in (None, [], b"") and kind != "string":
            continue  # gone between SCAN and the read
        expire = r.pexpiretime(key)
        view[key] = (kind, value, expire if expire > 0 else None)
    return view


def mirror_dynamodb_view(client: Any, table: str) -> dict[bytes, tuple[str, Any, int | None]]:
    """The live items of the mirror table, values decoded (and put together from parts) as Redis would show them."""
    view = {}
    for item in scan_all(client, table):
        decoded = mirror_value(client, table, item)
        if decoded is None:
            continue  # a tombstone
        kind, value = decoded
        expire = int(item["expire_at"]["N"]) if "expire_at" in item else None
        view[bytes(item["key"]["B"])] = (kind, value, expire)
    return view


def mirror_value(client: Any, table: str, item: dict[str, Any]) -> tuple[str, Any] | None:
    """(type, value as mirror_redis_view shows it) of one mirror item, read back through the replicator's reader."""
    from replicator.adapters.dynamodb.store import read_mirror_value

    typed = read_mirror_value(client, table, item)
    if typed is None:
        return None
    kind = item["type"]["S"]
    raw = typed.value
    if kind == "string":
        return kind, raw
    if kind == "hash":
        return kind, sorted((pair.value[0].value, pair.value[1].value) for pair in raw)
    if kind == "list":
        return kind, [v.value for v in raw]
    if kind == "set":
        return kind, sorted(v.value for v in raw)
    members = []
    for entry in raw:
        fields = dict(entry.value)
        members.append((fields["member"].value, float(fields["score"].value)))
    return kind, sorted(members)


def _same_mirror(want: dict, got: dict) -> bool:
    """Equal, with expiries allowed 2 ms apart (Redis keeps them in ms; we derive them from TIME in µs + PTTL)."""
    if set(want) != set(got):
        return False
    for key, (kind, value, expire) in want.items():
        got_kind, got_value, got_expire = got[key]
        if (kind, value) != (got_kind, got_value) or (expire is None) != (got_expire is None):
            return False
        if expire is not None and abs(expire - got_expire) > 2:
            return False
    return True


def assert_converged(r: redis.Redis, client: Any, config: Config, timeout: float = 60.0) -> None:
    """DynamoDB equals Redis, read completely on both sides: every owner, opponent, timestamp and metadata of the
    messaging table, and every other key's type, value and expiry in the mirror table."""
    from replicator.local.demo import dynamodb_view, redis_view

    table = messaging_table(config)
    mirror = config.default.table if config.default else None
    state: dict[str, Any] = {}

    def equal() -> bool:
        state["redis"], state["dynamodb"] = redis_view(r), dynamodb_view(client, table)
        if state["redis"] != state["dynamodb"]:
            return False
        if mirror is None:
            return True
        state["mirror_redis"], state["mirror_dynamodb"] = mirror_redis_view(r), mirror_dynamodb_view(client, mirror)
        return _same_mirror(state["mirror_redis"], state["mirror_dynamodb"])

    try:
        eventually(equal, timeout, interval=0.3, message="DynamoDB equal to Redis")
    except AssertionError:
        mirrored = state["redis"] == state["dynamodb"]
        want, got = (state["mirror_redis"], state["mirror_dynamodb"]) if mirrored else (state["redis"],
                                                                                        state["dynamodb"])
        missing = sorted(set(want) - set(got))[:5]
        extra = sorted(set(got) - set(want))[:5]
        differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:5]
        raise AssertionError(
            f"{'mirror table' if mirrored else 'DynamoDB'} != Redis after {timeout}s: missing {missing}, "
            f"extra {extra}, differ {[(k, want[k], got[k]) for k in differ]}"
        ) from None


# -- replicator commands in their own processes -------------------------------------------------------------------


class Process:
    """A replicator command in its own process, stopped (SIGKILL) at the end of the test whatever happens."""

    def __init__(self, command: str, config_path: Path, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        # Lives as long as the process; closed in kill().
        self.log = open(tmp_path / f"{command}-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115
        self.popen = subprocess.Popen([sys.executable, "-m", "replicator", command, "--config", str(config_path)],
                                      stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)
        self.log.close()

    def terminate(self, timeout: float = 60) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``replicator ARGS`` to completion, as a user types it."""
    return subprocess.run([sys.executable, "-m", "replicator", *args], capture_output=True, text=True,
                          timeout=timeout)


def config_file(stack: LocalStack, uid: str, tmp_path: Path, **sections: Any) -> Path:
    data = messaging_config_data(stack, uid, **sections)
    path = tmp_path / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET on a process's endpoint; (0, error) while it is not serving."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def scrape(port: int) -> dict[str, float]:
    """Every sample on a process's /metrics, parsed with prometheus-client's parser: {'name{labels}': value}."""
    status, text = http_get(port, "/metrics")
    if status != 200:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name and all(w in rest for w in wanted):
            total += value
    return total


@contextmanager
def writing(stack: LocalStack, owners: int = 20, seed: int = 21, client: Any = None) -> Iterator[list[int]]:
    """Live writes (the demo workload) from another connection until the block ends; yields [steps so far]."""
    stop = threading.Event()
    count = [0]

    def run() -> None:
        workload = Workload(client or redis.Redis.from_url(stack.redis_url), owners=owners, seed=seed)
        workload._clock = 1_800_000_000_000 + seed * 10_000_000
        while not stop.is_set():
            workload.step()
            count[0] += 1
            stop.wait(0.001)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield count
    finally:
        stop.set()
        thread.join(10)
