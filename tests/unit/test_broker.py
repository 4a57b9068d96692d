"""The one Kafka settings path: both clients get the same TLS, SASL and MSK IAM settings; topic safety is judged
without a broker; the local stack's broker version is the POM's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from replicator.adapters.kafka import settings as kafka_settings
from replicator.adapters.kafka.broker import MINIMUM_BROKER, TopicReport, topic_configs, unsafe_topic_settings
from replicator.adapters.kafka.producer import producer_settings
from replicator.adapters.kafka.settings import MskIamTokens, kafka_python, librdkafka
from replicator.core.config import KafkaConfig
from replicator.core.errors import ConfigError
from replicator.local import stack as localstack


def test_the_event_producer_keeps_per_owner_order_and_acknowledged_events():
    settings = producer_settings(KafkaConfig())
    assert settings["enable.idempotence"] and settings["max.in.flight.requests.per.connection"] == 5
    assert settings["acks"] == "all" and settings["partitioner"] == "murmur2_random"  # the Java client's partitioner


def test_tls_with_a_client_certificate_reaches_both_clients():
    config = KafkaConfig(security_protocol="SSL", ssl_ca_file="/ca.pem", ssl_cert_file="/c.pem", ssl_key_file="/k.pem",
                         ssl_key_password="kp")
    python, rdkafka = kafka_python(config), librdkafka(config)
    assert (python["ssl_cafile"], python["ssl_certfile"], python["ssl_keyfile"], python["ssl_password"]) == (
        "/ca.pem", "/c.pem", "/k.pem", "kp")
    assert (rdkafka["ssl.ca.location"], rdkafka["ssl.certificate.location"], rdkafka["ssl.key.location"],
            rdkafka["ssl.key.password"]) == ("/ca.pem", "/c.pem", "/k.pem", "kp")
    assert librdkafka(KafkaConfig(security_protocol="SSL"))["ssl.ca.location"] == "probe"  # the system's CAs


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_with_a_password_reaches_both_clients(mechanism):
    config = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username="cdc",
                         sasl_password="s3cret")
    python, rdkafka = kafka_python(config), librdkafka(config)
    assert (python["security_protocol"], python["sasl_mechanism"], python["sasl_plain_username"],
            python["sasl_plain_password"]) == ("SASL_SSL", mechanism, "cdc", "s3cret")
    assert (rdkafka["security.protocol"], rdkafka["sasl.mechanism"], rdkafka["sasl.username"],
            rdkafka["sasl.password"]) == ("sasl_ssl", mechanism, "cdc", "s3cret")
    assert "s3cret" not in repr(config)  # a logged config never shows the password


def test_msk_iam_wires_one_token_provider_with_the_region_into_every_client(monkeypatch):
    signed = []

    def generate_auth_token(region):
        signed.append((region, None))
        return f"token-{region}", 4_102_444_800_000

    def generate_auth_token_from_role_arn(region, role_arn):
        signed.append((region, role_arn))
        return f"role-token-{region}", 4_102_444_800_000

    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    # No AWS here: the signer's two entry points are replaced; the wiring is what is tested.
    monkeypatch.setattr(MSKAuthTokenProvider, "generate_auth_token", generate_auth_token)
    monkeypatch.setattr(MSKAuthTokenProvider, "generate_auth_token_from_role_arn", generate_auth_token_from_role_arn)
    config = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="AWS_MSK_IAM", aws_region="eu-west-1")
    python, rdkafka = kafka_python(config), librdkafka(config)
    assert python["sasl_mechanism"] == rdkafka["sasl.mechanism"] == "OAUTHBEARER"
    provider, callback = python["sasl_oauth_token_provider"], rdkafka["oauth_cb"]
    assert isinstance(provider, MskIamTokens) and isinstance(callback, MskIamTokens)
    assert provider.token() == "token-eu-west-1" and provider.token() == "token-eu-west-1"  # cached
    assert callback("") == ("token-eu-west-1", 4_102_444_800.0)  # librdkafka wants seconds
    assert signed == [("eu-west-1", None), ("eu-west-1", None)]  # one signing per client, not per connection
    assert "sasl_plain_password" not in python and "sasl.password" not in rdkafka

    role = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="AWS_MSK_IAM", aws_region="us-east-2",
                       aws_role_arn="arn:aws:iam::1:role/cdc")
    assert kafka_python(role)["sasl_oauth_token_provider"].token() == "role-token-us-east-2"
    assert signed[-1] == ("us-east-2", "arn:aws:iam::1:role/cdc")


def test_msk_iam_takes_the_credential_chains_region_or_says_it_needs_one(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    config = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="AWS_MSK_IAM")
    assert kafka_settings.iam_region(config) == "ap-south-1"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ConfigError, match="AWS_MSK_IAM needs a region"):
        kafka_python(config)


@pytest.mark.parametrize(("fields", "error"), [
    ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}, "needs security_protocol SASL_SSL"),
    ({"security_protocol": "SASL_SSL"}, "needs a sasl_mechanism"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}, "needs sasl_username"),
    ({"replication_factor": 1, "min_insync_replicas": 2}, "cannot exceed replication_factor"),
    ({"sasl_mechanism": "GSSAPI"}, "Input should be"),
])
def test_inconsistent_kafka_security_is_refused(fields, error):
    with pytest.raises(ValueError, match=error):
        KafkaConfig(**fields)


def test_topics_are_created_never_compacted_with_replay_retention_and_min_isr():
    assert topic_configs(KafkaConfig(retention_hours=72, min_insync_replicas=2)) == {
        "cleanup.policy": "delete", "retention.ms": str(72 * 3600 * 1000), "min.insync.replicas": "2"}


def test_unsafe_settings_of_an_existing_topic_are_named():
    config = KafkaConfig(partitions=12, replication_factor=3)
    safe = TopicReport("t", True, 12, 3, {"cleanup.policy": "delete", "retention.ms": "604800000",
                                          "min.insync.replicas": "2"})
    assert unsafe_topic_settings(config, safe) == []
    assert unsafe_topic_settings(config, TopicReport("t", True, 12, 3, {"retention.ms": "-1"})) == []  # forever
    bad = TopicReport("t", True, 6, 1, {"cleanup.policy": "compact,delete", "retention.ms": "3600000",
                                        "min.insync.replicas": "1"})
    problems = unsafe_topic_settings(config, bad)
    assert [p.split(":")[0].split(" (")[0] for p in problems] == [
        "cleanup.policy=compact,delete", "retention.ms=3600000", "replication factor 1"]
    isr = unsafe_topic_settings(config, TopicReport("t", True, 12, 3, {"min.insync.replicas": "1"}))
    assert isr == ["min.insync.replicas=1: an event acknowledged by one replica is lost with that broker"]


def test_the_local_broker_is_the_pinned_version_and_supported():
    pom = Path(localstack.KAFKA_POM).read_text()
    pinned = re.search(r"<artifactId>kafka_2\.13</artifactId>\s*<version>([\d.]+)</version>", pom)
    assert pinned and pinned.group(1) == localstack.KAFKA_VERSION
    assert tuple(int(p) for p in localstack.KAFKA_VERSION.split(".")[:2]) >= MINIMUM_BROKER
