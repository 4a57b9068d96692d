"""The modern broker, as users run it: version check, headers, idempotence, offsets by timestamp, topics created
with safe settings, and SASL/SCRAM on the local broker's own SASL listener."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer

from replicator.adapters.kafka import broker
from replicator.adapters.kafka.producer import EventPublisher
from replicator.core.avro import EventCodec
from replicator.core.config import KafkaConfig
from replicator.core.errors import BrokerError
from replicator.core.events import ChangeEvent, KeyType, Op, Origin
from replicator.local.stack import KAFKA_VERSION
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    config_file,
    ddb,
    eventually,
    messaging_config,
    run_cli,
    topic_records,
)


def _kafka(stack, uid, **fields) -> KafkaConfig:
    return KafkaConfig(**{"bootstrap_servers": stack.kafka_bootstrap, "topic": f"t.{uid}", "partitions": 3,
                          "replication_factor": 1, "min_insync_replicas": 1, **fields})


def test_the_broker_version_is_read_and_the_local_broker_is_the_pinned_one(stack):
    info = broker.check_broker(KafkaConfig(bootstrap_servers=stack.kafka_bootstrap))
    assert info.brokers >= 1 and info.version >= broker.MINIMUM_BROKER
    if stack.origins["kafka"] == "process":
        assert info.version_text == ".".join(KAFKA_VERSION.split(".")[:2])


def test_a_broker_older_than_the_minimum_fails_with_one_line_naming_both_versions(stack):
    # kafka-python's API-version override makes the real broker look like Kafka 2.0 to the client.
    config = KafkaConfig(bootstrap_servers=stack.kafka_bootstrap)
    with pytest.raises(BrokerError) as raised:
        broker.check_broker(config, api_version=(2, 0))
    assert str(raised.value) == (f"Kafka at {stack.kafka_bootstrap} is version 2.0; the replicator needs Kafka 2.8 or "
                                 "newer (idempotent producer, headers, offsets by timestamp)")
    assert not raised.value.retryable


def test_an_unreachable_broker_is_a_clear_retryable_error():
    with pytest.raises(BrokerError, match=r"cannot reach Kafka at 127\.0\.0\.1:1 to check its version: .*check "
                                          r"kafka\.bootstrap_servers") as raised:
        broker.check_broker(KafkaConfig(bootstrap_servers="127.0.0.1:1"))
    assert raised.value.retryable  # long-running commands wait for it, not ready, instead of exiting


def _event() -> ChangeEvent:
    return ChangeEvent(b"k", KeyType.STRING, Op.UPSERT, Origin.SNAPSHOT, 42, 43, b"owner-1", b"v", event_id="e")


def test_change_events_carry_headers_through_the_idempotent_producer(stack, uid):
    config = _kafka(stack, uid)
    broker.ensure_topic(config, config.topic)
    publisher = EventPublisher(config)
    assert publisher.settings["enable.idempotence"] and publisher.settings["max.in.flight.requests.per.connection"] == 5
    publisher.publish(_event())
    publisher.close()

    class _Cfg:
        kafka = config

    (record,) = eventually(lambda: topic_records(_Cfg), 30, message="the record")
    headers = dict(record.headers)
    assert headers["content-type"] == b"application/vnd.replicator.change-event+avro"
    assert headers["origin"] == b"SNAPSHOT" and headers["version"] == b"42"
    assert EventCodec().decode(record.value).key == b"k"


def test_offsets_are_found_by_timestamp(stack, uid):
    config = _kafka(stack, uid, partitions=1)
    broker.ensure_topic(config, config.topic)
    publisher = EventPublisher(config)
    publisher.publish(_event())
    publisher.close()
    consumer = KafkaConsumer(**broker.client_kwargs(config))
    try:
        (tp,) = broker.topic_partitions(config, config.topic)
        assert consumer.offsets_for_times({tp: 0})[tp].offset == 0
        assert consumer.offsets_for_times({tp: 4_102_444_800_000})[tp] is None  # 2100: nothing that late
    finally:
        consumer.close()


def test_topics_are_created_with_explicit_safe_settings_and_existing_unsafe_ones_are_named(stack, uid):
    config = _kafka(stack, uid, partitions=5, retention_hours=48)
    assert broker.ensure_topic(config, config.topic) == 5
    report = broker.describe_topic(config, config.topic)
    assert (report.exists, report.partitions, report.replication_factor) == (True, 5, 1)
    assert {k: report.configs[k] for k in ("cleanup.policy", "retention.ms", "min.insync.replicas")} == {
        "cleanup.policy": "delete", "retention.ms": str(48 * 3600 * 1000), "min.insync.replicas": "1"}
    assert broker.unsafe_topic_settings(config, report) == []
    assert broker.ensure_topic(config, config.topic) == 5  # an existing topic is left as it is

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(**broker.client_kwargs(config))
    admin.create_topics([NewTopic(f"compacted.{uid}", 5, 1, topic_configs={"cleanup.policy": "compact"})])
    admin.close()
    compacted = broker.describe_topic(config, f"compacted.{uid}")
    assert broker.unsafe_topic_settings(config, compacted)[0].startswith("cleanup.policy=compact: compaction keeps "
                                                                         "one event per owner")
    assert broker.describe_topic(config, f"missing.{uid}").exists is False


def _scram_config(stack, uid, password):
    bootstrap, user, _ = stack.kafka_scram()
    return messaging_config(stack, uid, kafka={
        "bootstrap_servers": bootstrap, "topic": f"changes.{uid}", "group_id": f"apply-{uid}",
        "partitions": stack.kafka_partitions, "replication_factor": 1, "min_insync_replicas": 1,
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": user,
        "sasl_password": password})


def test_the_pipeline_replicates_over_sasl_scram(stack, uid):
    if stack.origins["kafka"] != "process":
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names the broker; the SASL listener is the stack's own broker's")
    r, client = clean_redis(stack), ddb(stack)
    config = _scram_config(stack, uid, stack.kafka_scram()[2])
    with Running(config) as run:
        run.start_applier().start_listener()
        r.zadd("opponents:amy", {"bob": 1_700_000_000, "cid": 1_700_000_001})
        r.set("meta:amy:bob", "typing")
        r.set("plain:over-sasl", "yes")
        assert_converged(r, client, config)


def test_a_wrong_sasl_password_is_a_one_line_error_without_the_secret(stack, uid, tmp_path):
    if stack.origins["kafka"] != "process":
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names the broker; the SASL listener is the stack's own broker's")
    config = _scram_config(stack, uid, "not-the-password-4711")
    path = config_file(stack, uid, tmp_path, kafka=config.kafka.model_dump(mode="json") | {
        "sasl_password": "not-the-password-4711"})
    result = run_cli("status", "--config", str(path))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("replicator: error: ") and "authentication" in line.lower(), line
    assert "not-the-password-4711" not in result.stderr + result.stdout
