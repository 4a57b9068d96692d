"""Broker capabilities come from the APIs a broker announces, not from its version string."""

from __future__ import annotations

import pytest

from replicator.broker import (
    LEGACY_0_9,
    _parse_metadata_v0,
    capabilities_for_version,
    capabilities_from_api_versions,
)
from replicator.config import KafkaConfig
from replicator.publish.producer import producer_settings


def test_a_modern_broker_gets_headers_idempotence_and_timestamps():
    caps = capabilities_from_api_versions({0: 9, 2: 7, 18: 3, 19: 7, 22: 4})
    assert caps.headers and caps.idempotent_producer and caps.offsets_by_timestamp and caps.create_topics
    assert caps.api_version is None and not caps.legacy


def test_a_0_10_0_broker_answers_api_versions_but_has_no_headers_nor_timestamps():
    caps = capabilities_from_api_versions({0: 2, 2: 0, 18: 0})
    assert not caps.headers and not caps.idempotent_producer and not caps.offsets_by_timestamp


def test_stated_versions_map_to_capabilities():
    assert capabilities_for_version((0, 9)) == LEGACY_0_9
    assert LEGACY_0_9.legacy
    modern = capabilities_for_version((3, 7))
    assert modern.headers and modern.offsets_by_timestamp
    assert "lacks: headers" in LEGACY_0_9.describe()


def test_metadata_v0_partition_counts_need_a_leader_for_every_partition():
    import struct

    def string(s: str) -> bytes:
        return struct.pack(">h", len(s)) + s.encode()

    def partition(pid: int, leader: int) -> bytes:
        return struct.pack(">hii", 0, pid, leader) + struct.pack(">ii", 1, 0) + struct.pack(">ii", 1, 0)

    reply = (struct.pack(">i", 7) + struct.pack(">i", 1) + struct.pack(">i", 0) + string("h") + struct.pack(">i", 9)
             + struct.pack(">i", 2)
             + struct.pack(">h", 0) + string("ready") + struct.pack(">i", 2) + partition(0, 0) + partition(1, 0)
             + struct.pack(">h", 5) + string("electing") + struct.pack(">i", 1) + partition(0, -1))
    assert _parse_metadata_v0(reply) == {"ready": 2, "electing": 0}


def test_kafka_down_is_not_mistaken_for_a_missing_topic():
    from replicator.broker import topic_partition_count
    from replicator.config import KafkaConfig
    from replicator.errors import BrokerError

    with pytest.raises(BrokerError, match=r"cannot reach any Kafka bootstrap server \(127.0.0.1:1: ") as raised:
        topic_partition_count(KafkaConfig(bootstrap_servers="127.0.0.1:1"), "t", timeout=1)
    assert raised.value.retryable  # long-running commands wait for it, not ready, instead of exiting


def test_the_event_producer_keeps_per_owner_order_on_every_broker_generation():
    legacy = producer_settings(KafkaConfig(), LEGACY_0_9)
    assert legacy["max.in.flight.requests.per.connection"] == 1 and not legacy["enable.idempotence"]
    assert legacy["api.version.request"] is False and legacy["broker.version.fallback"] == "0.9.0"
    modern = producer_settings(KafkaConfig(), capabilities_for_version((3, 7)))
    assert modern["enable.idempotence"] and modern["max.in.flight.requests.per.connection"] == 5
    assert "api.version.request" not in modern
    for settings in (legacy, modern):  # the Java client's partitioner: an owner's partition whatever wrote it
        assert settings["acks"] == "all" and settings["partitioner"] == "murmur2_random"


def test_the_event_producer_gets_tls_and_sasl_settings():
    config = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="cdc",
                         sasl_password="s3cret", compression_type="zstd")
    settings = producer_settings(config, capabilities_for_version((3, 7)))
    assert settings["security.protocol"] == "sasl_ssl" and settings["ssl.ca.location"] == "probe"
    assert (settings["sasl.mechanism"], settings["sasl.username"], settings["sasl.password"]) == (
        "SCRAM-SHA-512", "cdc", "s3cret")
    assert settings["compression.type"] == "zstd"
