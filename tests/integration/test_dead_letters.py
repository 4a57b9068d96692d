"""A record that cannot be applied goes to <topic>.dlq, is counted, and the partition moves on."""

from __future__ import annotations

import base64
import json

from kafka import KafkaProducer

from replicator import metrics
from replicator.adapters.kafka import broker
from replicator.core.config import parse_config
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    ddb,
    dead_letter_records,
    eventually,
    fully_committed,
    messaging_config,
    messaging_config_data,
)


def test_a_poison_record_is_dead_lettered_and_the_events_after_it_are_applied(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    undecodable = metrics.DLQ_EVENTS.labels(reason="undecodable")._value.get()
    with Running(config) as run:
        run.start_applier().start_listener()
        r.zadd("opponents:alice", {"bob": 1})
        assert_converged(r, client, config)
        producer = KafkaProducer(**broker.client_kwargs(config.kafka))
        producer.send(config.kafka.topic, key=b"alice", value=b"not avro at all").get(30)  # same partition as alice
        producer.close()
        r.zadd("opponents:alice", {"carol": 2})
        r.set("meta:alice:carol", "after the poison")
        assert_converged(r, client, config)
        eventually(lambda: fully_committed(config), 30, message="offsets committed past the poison record")

    assert metrics.DLQ_EVENTS.labels(reason="undecodable")._value.get() == undecodable + 1
    (dead,) = dead_letter_records(config)
    envelope = json.loads(dead.value)
    assert envelope["reason"] == "undecodable"
    assert "not an Avro single-object-encoded ChangeEvent" in envelope["error"]
    assert envelope["topic"] == config.kafka.topic and isinstance(envelope["offset"], int)
    assert base64.b64decode(envelope["value_b64"]) == b"not avro at all"
    assert dead.key == b"alice"


def test_a_value_dynamodb_rejects_is_dead_lettered_without_stopping_the_partition(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    before = metrics.DLQ_EVENTS.labels(reason="unmappable")._value.get()
    with Running(config) as run:
        run.start_applier().start_listener()
        r.zadd("opponents:bob", {"x": float("inf")})  # a score DynamoDB cannot store as a number
        r.set("meta:bob:y", "fine")
        eventually(lambda: metrics.DLQ_EVENTS.labels(reason="unmappable")._value.get() == before + 1, 60,
                   message="the unmappable event dead-lettered")
        eventually(lambda: client.get_item(TableName=config.table_name("messaging"), ConsistentRead=True,
                                           Key={"owner_id": {"S": "bob"}, "opponent_id": {"S": "y"}}).get("Item"),
                   60, message="the event after it applied")


def test_dead_letters_are_listed_and_re_driven_once_after_the_fix(stack, uid, tmp_path):
    import subprocess
    import sys

    import yaml

    r, client = clean_redis(stack), ddb(stack)
    data = messaging_config_data(stack, uid)
    config = parse_config(data)
    with Running(config) as run:
        run.start_applier().start_listener()
        r.set("meta:cat:dog", b"\xff\xfebinary")  # metadata is a string (S) attribute: not UTF-8, poison
        # (An empty topic counts as fully committed: wait for the dead letter itself first.)
        eventually(lambda: dead_letter_records(config), 60, message="the poison event dead-lettered")
        eventually(lambda: fully_committed(config), 60, message="the poison event consumed")

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))

    def cli(*args):
        result = subprocess.run([sys.executable, "-m", "replicator", "dlq", *args, "--config", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    listed = cli("list")
    assert "owner=cat  unmappable: key b'meta:cat:dog': attribute 'metadata' of rule 'meta' is a string (S)" in listed
    assert listed.strip().endswith(f"1 dead letter(s) in changes.{uid}.dlq")

    # The fix: metadata holds binary data.
    data["tables"]["messaging"]["types"] = {"metadata": "B"}
    path.write_text(yaml.safe_dump(data))
    assert "re-drove 1 dead letter(s)" in cli("redrive")
    assert "re-drove 0 dead letter(s)" in cli("redrive")  # progress is kept: nothing is sent twice
    with Running(parse_config(data)) as run:
        run.start_applier()
        item = eventually(lambda: client.get_item(
            TableName=config.table_name("messaging"), ConsistentRead=True,
            Key={"owner_id": {"S": "cat"}, "opponent_id": {"S": "dog"}}).get("Item"), 60, message="re-driven item")
    assert item["metadata"] == {"B": b"\xff\xfebinary"}


def test_an_item_above_dynamodbs_400kb_limit_is_dead_lettered_and_later_events_apply(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    before = metrics.DLQ_EVENTS.labels(reason="rejected_by_dynamodb")._value.get()
    with Running(config) as run:
        run.start_applier().start_listener()
        r.set("meta:big:one", "x" * 450_000)  # fine for Redis and Kafka, too big for one DynamoDB item
        r.set("meta:big:two", "small")
        eventually(lambda: metrics.DLQ_EVENTS.labels(reason="rejected_by_dynamodb")._value.get() == before + 1, 60,
                   message="the oversized item dead-lettered")
        item = eventually(lambda: client.get_item(
            TableName=config.table_name("messaging"), ConsistentRead=True,
            Key={"owner_id": {"S": "big"}, "opponent_id": {"S": "two"}}).get("Item"), 60,
            message="the event after the oversized one applied")
        eventually(lambda: fully_committed(config), 60, message="the partition moved on")
    assert item["metadata"] == {"S": "small"}
