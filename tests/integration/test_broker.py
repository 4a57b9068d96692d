"""Broker capability detection against real brokers.

The local stack's Kafka 0.9 exercises the legacy path. The modern paths (headers, idempotent producer, offsets by
timestamp) run when KAFKA_BOOTSTRAP_SERVERS names a modern broker or testcontainers provides one; here they skip.
"""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer

from replicator import broker
from replicator.config import KafkaConfig
from replicator.events import ChangeEvent, EventCodec, KeyType, Op, Origin
from replicator.publish.producer import EventPublisher
from tests.support import eventually, topic_records


def _probe(stack):
    return broker.probe(KafkaConfig(bootstrap_servers=stack.kafka_bootstrap))


def test_probe_tells_a_legacy_broker_from_a_modern_one(stack):
    caps = _probe(stack)
    if stack.origins["kafka"] == "process":
        assert caps == broker.LEGACY_0_9
    else:
        assert caps.headers and caps.offsets_by_timestamp


def test_an_unreachable_broker_is_a_clear_error():
    from replicator.errors import BrokerError

    with pytest.raises(BrokerError, match=r"cannot reach any Kafka bootstrap server .*check kafka\.bootstrap_servers"):
        broker.probe(KafkaConfig(bootstrap_servers="127.0.0.1:1"), timeout=1)


def _event() -> ChangeEvent:
    return ChangeEvent(b"k", KeyType.STRING, Op.UPSERT, Origin.SNAPSHOT, 42, 43, b"owner-1", b"v", event_id="e")


@pytest.mark.modern_kafka
def test_modern_brokers_get_headers_and_the_idempotent_producer(stack, uid, modern):
    config = KafkaConfig(bootstrap_servers=stack.kafka_bootstrap, topic=f"modern.{uid}", partitions=3,
                         replication_factor=1)
    broker.ensure_topic(config, modern, config.topic)
    publisher = EventPublisher(config, modern)
    assert publisher.settings["enable.idempotence"] and publisher.settings["max.in.flight.requests.per.connection"] == 5
    publisher.publish(_event())
    publisher.close()
    from tests.support import messaging_config  # noqa: F401  (keeps the import graph of the suite uniform)

    class _Cfg:
        kafka = config

    (record,) = eventually(lambda: topic_records(_Cfg), 30, message="the record")
    headers = dict(record.headers)
    assert headers["content-type"] == b"application/vnd.replicator.change-event+avro"
    assert headers["origin"] == b"SNAPSHOT" and headers["version"] == b"42"
    assert EventCodec().decode(record.value).key == b"k"


@pytest.mark.modern_kafka
def test_modern_brokers_answer_offsets_by_timestamp(stack, uid, modern):
    config = KafkaConfig(bootstrap_servers=stack.kafka_bootstrap, topic=f"ts.{uid}", partitions=1,
                         replication_factor=1)
    broker.ensure_topic(config, modern, config.topic)
    publisher = EventPublisher(config, modern)
    publisher.publish(_event())
    publisher.close()
    consumer = KafkaConsumer(**broker.client_kwargs(config, modern))
    try:
        (tp,) = broker.topic_partitions(config, config.topic)
        found = consumer.offsets_for_times({tp: 0})
        assert found[tp].offset == 0
    finally:
        consumer.close()


def test_a_legacy_broker_refuses_offsets_by_timestamp_with_a_clear_error(stack):
    from kafka.errors import IncompatibleBrokerVersion

    caps = _probe(stack)
    if not caps.legacy:
        pytest.skip("the broker supports offsets by timestamp")
    config = KafkaConfig(bootstrap_servers=stack.kafka_bootstrap, topic="_stack_ready")
    consumer = KafkaConsumer(**broker.client_kwargs(config, caps))
    try:
        with pytest.raises(IncompatibleBrokerVersion, match="ListOffsetsRequest"):
            consumer.offsets_for_times({broker.topic_partitions(config, config.topic)[0]: 0})
    finally:
        consumer.close()
