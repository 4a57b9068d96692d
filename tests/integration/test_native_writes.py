"""What the application writes through DynamoRedis stands: nothing the replicator does later overwrites or
resurrects it, and concurrent clients lose nothing.

The attacks are the ones a cutover meets: the application's last Redis writes arriving late through the listener,
a replay of the whole topic, a ``verify --repair`` (Redis still holds the old values, so everything the application
changed looks like drift), a snapshot, and a listener restart (a gap: re-snapshot and reconcile, which tombstones
what DynamoDB holds and Redis does not). Each attempt reaches DynamoDB and is refused: the applier counts it stale.
"""

from __future__ import annotations

import threading

import pytest
import redis
from prometheus_client import REGISTRY

from replicator.adapters.dynamodb.tables import create_tables
from replicator.core.config import parse_config
from replicator.dynamo_redis import DynamoRedis
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    config_file,
    ddb,
    eventually,
    fully_committed,
    messaging_config,
    messaging_config_data,
    reset_to_earliest,
    run_cli,
)


def _stale() -> float:
    return sum(s.value for f in REGISTRY.collect() for s in f.samples
               if s.name == "replicator_events_applied_total" and s.labels.get("result") == "stale")


def _tables(stack, config) -> None:
    create_tables(ddb(stack), config.rule_set, config.dynamodb.state_table)


def _app_state(client: DynamoRedis) -> dict[str, object]:
    return {
        "zset": client.zrange("opponents:o1", 0, -1, withscores=True),
        "meta": client.get("meta:o1:a"),
        "meta_b": client.get("meta:o1:b"),
        "string": client.get("m1"),
        "hash": client.hgetall("h1"),
        "list": client.lrange("l1", 0, -1),
        "app_only": client.get("app-only"),
        "ttl": client.ttl("m1"),
    }


def test_replicated_events_replays_repairs_and_snapshots_never_undo_what_the_application_wrote(
        stack, uid, tmp_path):
    r, client = clean_redis(stack), ddb(stack)
    path = config_file(stack, uid, tmp_path)
    config = messaging_config(stack, uid)
    r.zadd("opponents:o1", {"a": 1, "b": 2, "c": 3})
    r.set("meta:o1:a", "redis")
    r.set("meta:o1:b", "redis")
    r.set("m1", "redis")
    r.hset("h1", mapping={"f": "redis"})
    r.rpush("l1", "redis")
    with Running(config) as run:
        run.start_applier().start_listener()
        assert_converged(r, client, config)

        # The application switches: its writes go to DynamoDB, Redis keeps its old values.
        app = DynamoRedis.from_config(config)
        app.zadd("opponents:o1", {"a": 100})
        app.zrem("opponents:o1", "b")
        app.set("meta:o1:a", "app")
        app.delete("meta:o1:b")
        app.set("m1", "app")
        app.delete("h1")
        app.rpush("l1", "app")
        app.set("app-only", "app")
        expected = _app_state(app)
        assert expected == {"zset": [(b"c", 3.0), (b"a", 100.0)], "meta": b"app", "meta_b": None,
                            "string": b"app", "hash": {}, "list": [b"redis", b"app"], "app_only": b"app",
                            "ttl": -1}

        # 1. The application's last Redis writes, arriving late through the listener.
        stale = _stale()
        r.zadd("opponents:o1", {"b": 7, "a": 1})
        r.set("meta:o1:b", "late")
        r.set("m1", "late", px=60_000)
        r.hset("h1", "f", "late")
        eventually(lambda: fully_committed(config) and _stale() > stale, 60, message="late events applied")
        assert _app_state(app) == expected

    # 2. A replay of the whole topic.
    reset_to_earliest(config.kafka, config.kafka.group_id, config.kafka.topic)
    stale = _stale()
    with Running(config) as run:
        run.start_applier()
        eventually(lambda: fully_committed(config), 90, message="replay committed to the end")
        assert _stale() > stale
        assert _app_state(app) == expected

        # 3. verify --repair: Redis still holds the old values, so every key the application changed is "drift".
        stale = _stale()
        repaired = run_cli("verify", "--config", str(path), "--repair", "--settle-seconds", "0.2")
        assert "REPAIR events" in repaired.stdout, repaired.stdout + repaired.stderr
        eventually(lambda: fully_committed(config) and _stale() > stale, 60, message="repair events applied")
        assert _app_state(app) == expected

        # 4. A snapshot.
        stale = _stale()
        report = run.snapshot()
        assert report.events_published >= 6
        eventually(lambda: fully_committed(config) and _stale() > stale, 60, message="snapshot applied")
        assert _app_state(app) == expected

    # 5. A listener restart: the start is a gap, healed by a re-snapshot and a reconcile (which tombstones what
    # DynamoDB holds and Redis does not: "app-only", the member "b", the hash...).
    stale = _stale()
    with Running(config) as run:
        run.start_applier().start_listener()  # waits for the start re-snapshot
        eventually(lambda: fully_committed(config) and _stale() > stale, 90, message="re-snapshot applied")
        assert _app_state(app) == expected


def test_concurrent_read_modify_writes_lose_nothing(stack, uid):
    """Many threads, each with its own client (as many application instances), INCR, HINCRBY, ZINCRBY, LPUSH and
    SADD the same keys at once: every increment and element is there, as in Redis."""
    config = messaging_config(stack, uid)
    clean_redis(stack)
    _tables(stack, config)
    clients = [DynamoRedis.from_config(config) for _ in range(6)]
    per_thread = 15
    errors: list[BaseException] = []

    def work(i: int) -> None:
        c = clients[i]
        try:
            for n in range(per_thread):
                c.incr("counter")
                c.hincrby("hash", "f", 2)
                c.zincrby("opponents:hot", 1.5, "m")
                c.lpush("list", f"{i}:{n}")
                c.sadd("set", f"{i}:{n}")
        except BaseException as exc:  # reported below, with the thread's work
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, [str(e) for e in errors[:3]]
    total = len(clients) * per_thread
    check = clients[0]
    assert check.get("counter") == str(total).encode()
    assert check.hget("hash", "f") == str(2 * total).encode()
    assert check.zscore("opponents:hot", "m") == 1.5 * total
    assert sorted(check.lrange("list", 0, -1)) == sorted(f"{i}:{n}".encode() for i in range(len(clients))
                                                         for n in range(per_thread))
    assert check.scard("set") == total


def test_what_a_rule_cannot_hold_is_an_error_never_a_wrong_answer(stack, uid):
    config = messaging_config(stack, uid)
    clean_redis(stack)
    _tables(stack, config)
    app = DynamoRedis.from_config(config)
    app.zadd("opponents:o1", {"a": 1})
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        app.hset("opponents:o1", "f", "v")
    with pytest.raises(redis.ResponseError, match="rule 'opponents' keeps no TTL"):
        app.expire("opponents:o1", 10)
    with pytest.raises(redis.ResponseError, match="is a number"):
        app.zadd("opponents:o1", {"b": float("inf")})
    with pytest.raises(redis.ResponseError, match="not UTF-8"):
        app.zadd("opponents:o1", {b"\xff": 1})
    assert app.zrange("opponents:o1", 0, -1, withscores=True) == [(b"a", 1.0)]  # nothing of the refused ones
    # The mirror holds what rules cannot: any bytes, infinite scores, TTLs.
    assert app.zadd("anything", {b"\xff": float("inf")}) == 1 and app.expire("anything", 100)
    unmapped = parse_config({**messaging_config_data(stack, uid), "default": None})
    with pytest.raises(redis.ResponseError, match="no rule of the replicator maps key"):
        DynamoRedis.from_config(unmapped).get("not-a-rule-key")


def test_a_key_whose_ttl_passed_is_gone_before_dynamodbs_sweeper_removes_it(stack, uid):
    config = messaging_config(stack, uid)
    clean_redis(stack)
    _tables(stack, config)
    app = DynamoRedis.from_config(config, client=ddb(stack))  # the application's own boto3 client
    assert app.set("session", "s", px=300) is True and 0 < app.pttl("session") <= 300
    eventually(lambda: app.get("session") is None, 10, interval=0.05, message="the key expired")
    assert (app.exists("session"), app.ttl("session"), app.type("session")) == (0, -2, b"none")
    item = ddb(stack).get_item(TableName=config.default.table, Key={"key": {"B": b"session"}}, ConsistentRead=True)
    assert "Item" in item  # still stored: DynamoDB's TTL sweeper takes its time, the client does not wait for it
    assert app.set("session", "new", nx=True) is True and app.get("session") == b"new" and app.ttl("session") == -1
