"""Keys and values no rule expected: each is a dead letter with its reason (or, for the mirror, replicated), and the
pipeline goes on applying every other key. The appliers run in threads of the test, so a crash fails the test."""

from __future__ import annotations

import json

import pytest
import redis
from kafka import KafkaProducer

from replicator import metrics
from replicator.adapters.kafka import broker
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    ddb,
    dead_letter_records,
    eventually,
    fully_committed,
    messaging_config,
    scan_all,
)


def _dead_letters(config) -> list[dict]:
    return [json.loads(record.value) for record in dead_letter_records(config)]


def _produce_garbage(config) -> None:
    producer = KafkaProducer(**broker.client_kwargs(config.kafka))
    producer.send(config.kafka.topic, key=b"garbage", value=b"\x00\x01 not an event").get(30)
    producer.close()


HOSTILE = {
    # name: (write it, reason, part of the error, undo it so both stores can be compared)
    "non_utf8_owner_of_a_string_attribute": (
        lambda r, cfg: r.zadd(b"opponents:\xff\xfebad", {"p1": 1}),
        "unmappable", "not UTF-8", lambda r: r.delete(b"opponents:\xff\xfebad")),
    "non_utf8_owner_of_a_side_key": (
        lambda r, cfg: r.set(b"meta:\xff\xfe:p1", "side"),
        "unmappable", "not UTF-8", lambda r: r.delete(b"meta:\xff\xfe:p1")),
    "empty_key": (
        lambda r, cfg: r.set(b"", b"the empty key"),
        "unmappable", "cannot be empty", lambda r: r.delete(b"")),
    "infinite_score_under_a_number_attribute": (
        lambda r, cfg: r.zadd("opponents:infinite", {"up": float("inf"), "down": float("-inf"), "ok": 1}),
        "unmappable", "is a number (N)", lambda r: r.delete("opponents:infinite")),
    "score_outside_the_range_of_dynamodb_numbers": (
        lambda r, cfg: r.zadd("opponents:tiny", {"p": 1e-200}),
        "unmappable", "outside what DynamoDB numbers hold", lambda r: r.delete("opponents:tiny")),
    "value_above_the_item_limit_under_a_rule": (
        lambda r, cfg: r.set("meta:big:p1", "x" * 420_000),
        "rejected_by_dynamodb", "size", lambda r: r.delete("meta:big:p1")),
    "record_that_is_not_avro": (
        lambda r, cfg: _produce_garbage(cfg),
        "undecodable", "not an Avro", lambda r: None),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_dead_lettered_with_its_reason_and_the_pipeline_goes_on(stack, uid, name):
    write, reason, fragment, undo = HOSTILE[name]
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()
        r.zadd("opponents:before", {"p1": 1})
        assert_converged(r, client, config)
        write(r, config)
        letters = eventually(lambda: [d for d in _dead_letters(config) if d["reason"] == reason], 60,
                             message=f"a {reason} dead letter")
        assert fragment in letters[0]["error"], letters[0]["error"]
        assert "\n" not in letters[0]["error"]
        undo(r)
        r.zadd("opponents:after", {"p1": 2, "p2": 3})  # the partition, and every other, goes on
        r.set("meta:after:p1", "applied after the poison")
        r.hset("mirrored:after", mapping={"f": "v"})
        assert_converged(r, client, config, timeout=60)
        eventually(lambda: fully_committed(config), 60, message="committed past the poison")
        run.check()  # the applier is still running


def test_infinite_scores_are_mirrored(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()
        r.zadd("scores:inf", {"up": float("inf"), "down": float("-inf"), "mid": 1.5})
        assert_converged(r, client, config)  # the mirror view compares every member and score
        r.zadd("scores:inf", {"up": 7})
        assert_converged(r, client, config)
    assert not _dead_letters(config)


def test_keys_named_like_the_replicators_are_the_applications_and_replicated(stack, uid):
    """Nothing of the replicator lives in Redis but a cutover switch's short-lived markers: a key of the application
    that happens to start with ``__replicator:`` is replicated like any other."""
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()
        r.set("__replicator:checkpoint", b"the application's")
        r.zadd("__replicator:scores", {"a": 1})
        assert_converged(r, client, config)  # every key in both stores, compared whole
        mirrored = {bytes(i["key"]["B"]) for i in scan_all(client, config.default.table)}
        assert {b"__replicator:checkpoint", b"__replicator:scores"} <= mirrored
    assert not _dead_letters(config)


def test_a_stream_key_is_counted_as_not_replicated_and_nothing_stops(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    node = f"127.0.0.1:{r.connection_pool.connection_kwargs['port']}"
    skipped = metrics.CAPTURE_SKIPPED.labels(node=node, reason="unsupported_type")
    before = skipped._value.get()
    r.xadd("events:stream", {"kind": "login"})  # seen by the listener's start re-snapshot
    with Running(config) as run:
        run.start_applier().start_listener()
        r.zadd("opponents:next", {"p1": 1})
        assert_converged(r, client, config)
        eventually(lambda: skipped._value.get() > before, 30, message="the stream counted as skipped")
        assert not any(bytes(i["key"]["B"]) == b"events:stream" for i in scan_all(client, config.default.table))
    assert not _dead_letters(config)


def _sizes_of(r: redis.Redis) -> dict[str, int]:
    return {"hash": r.hlen("big:hash"), "set": r.scard("big:set"), "list": r.llen("big:list"),
            "zset": r.zcard("big:zset"), "string": r.strlen("big:string")}


def _parts(client, config) -> list:
    return scan_all(client, f"{config.default.table}_parts")


@pytest.mark.slow
@pytest.mark.parametrize("write_mode", ["item", "transaction"])
def test_one_megabyte_values_of_every_type_are_mirrored_whole_then_shrink_and_go(stack, uid, write_mode):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid, apply={"write_mode": write_mode})
    with Running(config) as run:
        run.start_applier().start_listener()
        pipe = r.pipeline(transaction=False)
        for start in range(0, 30_000, 1000):
            pipe.hset("big:hash", mapping={f"field-{i:06d}": f"value-{i:020d}" for i in range(start, start + 1000)})
            pipe.sadd("big:set", *[f"member-{i:026d}" for i in range(start, start + 1000)])
            pipe.rpush("big:list", *[f"item-{i:028d}" for i in range(start, start + 1000)])
            pipe.zadd("big:zset", {f"member-{i:020d}": i * 0.5 for i in range(start, start + 1000)})
        pipe.set("big:string", b"\x00\xff" * 600_000)
        pipe.pexpire("big:hash", 3_600_000)
        pipe.execute()
        assert all(size >= 30_000 for size in _sizes_of(r).values())
        assert_converged(r, client, config, timeout=180)
        assert len(_parts(client, config)) >= 5 * 3  # each about 1 MB: three parts or more
        assert not _dead_letters(config)
        # Shrink: below the limit the value is inline again and the parts of older versions are gone.
        for kind in ("hash", "set", "zset"):
            r.delete(f"big:{kind}")
        r.hset("big:hash", "f", "v")
        r.sadd("big:set", "m")
        r.zadd("big:zset", {"m": 1})
        r.ltrim("big:list", 0, 9)
        r.set("big:string", "small")
        assert_converged(r, client, config, timeout=120)
        eventually(lambda: not _parts(client, config), 60, message="parts of replaced values deleted")
        # Grow again, then delete.
        r.set("big:string", b"y" * 900_000)
        assert_converged(r, client, config, timeout=120)
        r.delete("big:string", "big:hash", "big:set", "big:list", "big:zset")
        assert_converged(r, client, config, timeout=120)
        eventually(lambda: not _parts(client, config), 60, message="parts of deleted values deleted")
