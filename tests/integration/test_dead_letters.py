"""A record that cannot be applied goes to <topic>.dlq, is counted, and the partition moves on."""

from __future__ import annotations

import base64
import json

from kafka import KafkaProducer

from replicator import broker, metrics
from replicator.config import parse_config
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    ddb,
    eventually,
    fully_committed,
    messaging_config,
    messaging_config_data,
    topic_records,
)


def test_a_poison_record_is_dead_lettered_and_the_events_after_it_are_applied(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    undecodable = metrics.DLQ_EVENTS.labels(reason="undecodable")._value.get()
    with Running(config) as run:
        run.start_applier().start_listener()
        r.zadd("opponents:alice", {"bob": 1})
        assert_converged(r, client, config)
        caps = broker.detect(config.kafka)
        producer = KafkaProducer(**broker.client_kwargs(config.kafka, caps))
        producer.send(config.kafka.topic, key=b"alice", value=b"not avro at all").get(30)  # same partition as alice
        producer.close()
        r.zadd("opponents:alice", {"carol": 2})
        r.set("meta:alice:carol", "after the poison")
        assert_converged(r, client, config)
        eventually(lambda: fully_committed(config), 30, message="offsets committed past the poison record")

    assert metrics.DLQ_EVENTS.labels(reason="undecodable")._value.get() == undecodable + 1
    dlq = parse_config({**messaging_config_data(stack, uid),
                        "kafka": {**messaging_config_data(stack, uid)["kafka"], "topic": f"changes.{uid}.dlq"}})
    (dead,) = topic_records(dlq)
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
