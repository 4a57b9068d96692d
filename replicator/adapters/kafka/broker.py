"""Kafka administration the replicator needs, through kafka-python's own APIs: the broker's version, topics with
safe settings, partitions, and a consumer group's state (its offsets: :mod:`.offsets`).

Brokers 2.8 and newer are supported (``MINIMUM_BROKER``: the oldest line Amazon MSK still runs; what the code relies
on -- idempotent producer, record headers, offsets by timestamp, CreateTopics with configs, static group
membership -- is all older than that). An older broker fails at start with one line naming both versions.
Client settings (TLS, SASL, MSK IAM) come from :mod:`replicator.adapters.kafka.settings`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownBrokerIdError

from replicator.adapters.kafka.settings import kafka_python, librdkafka
from replicator.core.config import KafkaConfig
from replicator.core.errors import BrokerError

log = logging.getLogger(__name__)

MINIMUM_BROKER = (2, 8)
#: A replay must reach back at least this far; preflight warns about a shorter retention.
MINIMUM_RETENTION_HOURS = 24


def client_kwargs(config: KafkaConfig) -> dict[str, Any]:
    """kafka-python settings for ``config`` (kept here so that callers need one import for Kafka work)."""
    return kafka_python(config)


def _admin(config: KafkaConfig, what: str, **overrides: Any) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**client_kwargs(config), **overrides)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {config.bootstrap_servers} to {what}: {_why(exc)}; check "
                          "kafka.bootstrap_servers and the kafka security settings", retryable=True) from None


def _why(exc: BaseException) -> str:
    """One line, never a secret: kafka-python's messages name mechanisms and hosts, not passwords."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


@dataclass(frozen=True)
class BrokerInfo:
    version: tuple[int, ...]
    brokers: int

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def check_broker(config: KafkaConfig, **client_overrides: Any) -> BrokerInfo:
    """The cluster's (lowest) broker version and size; BrokerError in one line when it is older than the minimum.

    ``client_overrides`` go to kafka-python (its ``api_version`` override is how tests play an old broker).
    """
    try:
        admin = _admin(config, "check its version", **{"bootstrap_timeout_ms": 10_000, **client_overrides})
    except BrokerError:
        refused = _refusal(config)
        if refused:
            raise BrokerError(f"Kafka at {config.bootstrap_servers} refused the connection: {refused}; check the "
                              "kafka security settings", retryable=False) from None
        raise
    try:
        brokers = [b["broker_id"] for b in admin.describe_cluster()["brokers"]]
        versions = []
        for broker_id in brokers:
            try:
                versions.append(admin.get_broker_version_data(broker_id).broker_version)
            except UnknownBrokerIdError:  # just joined: not in this client's metadata yet; the others decide
                continue
        if not versions:
            raise UnknownBrokerIdError(f"none of brokers {brokers}")
        version = min(versions)
    except KafkaError as exc:
        raise BrokerError(f"cannot read the Kafka brokers' versions at {config.bootstrap_servers}: {_why(exc)}",
                          retryable=True) from None
    finally:
        admin.close()
    info = BrokerInfo(tuple(version), len(brokers))
    if info.version < MINIMUM_BROKER:
        minimum = ".".join(map(str, MINIMUM_BROKER))
        raise BrokerError(f"Kafka at {config.bootstrap_servers} is version {info.version_text}; the replicator needs "
                          f"Kafka {minimum} or newer (idempotent producer, headers, offsets by timestamp)")
    log.info("kafka broker", extra={"kv": {"version": info.version_text, "brokers": info.brokers}})
    return info


def _refusal(config: KafkaConfig, wait_s: float = 5.0) -> str | None:
    """Why the brokers refuse us (authentication, TLS), when that is why; None when they are just not there.

    kafka-python reports a failed SASL handshake only as "unable to bootstrap"; librdkafka names the cause, so it is
    asked for a few seconds. Its messages name the mechanism and the broker, never the password.
    """
    errors: list[Any] = []
    quiet = logging.getLogger("replicator.librdkafka.diagnosis")
    quiet.propagate, quiet.disabled = False, True
    admin = AdminClient({**librdkafka(config), "error_cb": errors.append}, logger=quiet)
    with contextlib.suppress(KafkaException):  # what failed is in ``errors``
        admin.list_topics(timeout=wait_s)
    admin.poll(0.2)
    for error in errors:
        if error.code() in (RdKafkaError._AUTHENTICATION, RdKafkaError._SSL):
            return error.str().split(": ", 1)[-1]
    return None


def topic_configs(config: KafkaConfig) -> dict[str, str]:
    """What every topic the replicator creates is given. Never compacted: the record key is the owner, not the
    Redis key, so compaction would keep one event per owner and lose the rest."""
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(int(config.retention_hours * 3600 * 1000)),
        "min.insync.replicas": str(config.min_insync_replicas),
    }


def ensure_topic(config: KafkaConfig, topic: str, partitions: int | None = None, timeout: float = 30.0) -> int:
    """Create ``topic`` when missing (partitions, replication factor, :func:`topic_configs`); return its partition
    count once every partition has a leader. An existing topic is left as it is (preflight says what is unsafe)."""
    wanted = partitions or config.partitions
    admin = _admin(config, f"create topic {topic!r}")
    try:
        deadline = time.monotonic() + timeout
        if topic not in admin.list_topics():
            brokers = len(admin.describe_cluster()["brokers"])
            factor = min(config.replication_factor, max(1, brokers))
            configs = topic_configs(config)
            configs["min.insync.replicas"] = str(min(config.min_insync_replicas, factor))
            try:
                admin.create_topics([NewTopic(topic, wanted, factor, topic_configs=configs)])
                log.info("created topic", extra={"kv": {"topic": topic, "partitions": wanted,
                                                        "replication_factor": factor, **configs}})
            except TopicAlreadyExistsError:
                pass
        while True:
            count = _led_partitions(admin, topic)
            if count:
                if partitions is not None and count != partitions:
                    log.warning("topic partition count differs from the configured one", extra={
                        "kv": {"topic": topic, "partitions": count, "configured": wanted}})
                return count
            if time.monotonic() >= deadline:
                raise BrokerError(f"topic {topic!r} has partitions without a leader {timeout:.0f}s after creation")
            time.sleep(0.1)
    except KafkaError as exc:
        raise BrokerError(f"cannot create topic {topic!r}: {_why(exc)}", retryable=True) from None
    finally:
        admin.close()


def _led_partitions(admin: KafkaAdminClient, topic: str) -> int:
    """Partitions of ``topic`` when every one has a leader; 0 when it is missing or some partition has none."""
    described = admin.describe_topics([topic])[0]
    parts = described["partitions"]
    if described["error_code"] != 0 or not parts or any(p["leader_id"] < 0 for p in parts):
        return 0
    return len(parts)


def existing_topic_partitions(config: KafkaConfig, topic: str) -> int | None:
    """Partitions of ``topic``, or None when it does not exist (never creates it)."""
    admin = _admin(config, f"describe topic {topic!r}")
    try:
        described = admin.describe_topics([topic])[0]
    except KafkaError as exc:
        raise BrokerError(f"cannot describe topic {topic!r}: {_why(exc)}", retryable=True) from None
    finally:
        admin.close()
    return len(described["partitions"]) if described["error_code"] == 0 else None


@dataclass(frozen=True)
class TopicReport:
    """An existing topic as preflight sees it."""

    topic: str
    exists: bool
    partitions: int = 0
    replication_factor: int = 0
    configs: dict[str, str] | None = None


def describe_topic(config: KafkaConfig, topic: str) -> TopicReport:
    admin = _admin(config, f"describe topic {topic!r}")
    try:
        described = admin.describe_topics([topic])[0]
        if described["error_code"] != 0:
            return TopicReport(topic, exists=False)
        raw = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        configs = {name: entry["value"] for name, entry in raw.get("topic", {}).get(topic, {}).items()}
    except KafkaError as exc:
        raise BrokerError(f"cannot describe topic {topic!r}: {_why(exc)}", retryable=True) from None
    finally:
        admin.close()
    parts = described["partitions"]
    factor = min((len(p["replica_nodes"]) for p in parts), default=0)
    return TopicReport(topic, True, len(parts), factor, configs)


def unsafe_topic_settings(config: KafkaConfig, report: TopicReport) -> list[str]:
    """Pure: what about an existing topic can lose or reorder events, or shorten replay. Empty when all is well."""
    problems = []
    configs = report.configs or {}
    if "compact" in configs.get("cleanup.policy", "delete"):
        problems.append(f"cleanup.policy={configs['cleanup.policy']}: compaction keeps one event per owner and "
                        "drops the rest; set cleanup.policy=delete")
    retention = configs.get("retention.ms")
    if retention is not None and 0 <= int(retention) < MINIMUM_RETENTION_HOURS * 3600 * 1000:
        problems.append(f"retention.ms={retention}: less than {MINIMUM_RETENTION_HOURS} h of events to replay from")
    if report.replication_factor < min(3, config.replication_factor):
        problems.append(f"replication factor {report.replication_factor} (configured {config.replication_factor}): "
                        "losing one broker can lose acknowledged events")
    isr = configs.get("min.insync.replicas")
    if isr is not None and report.replication_factor > 1 and int(isr) < 2:
        problems.append(f"min.insync.replicas={isr}: an event acknowledged by one replica is lost with that broker")
    return problems


@dataclass(frozen=True)
class GroupDescription:
    state: str
    #: Live members as "client id@host".
    members: list[str]


def describe_group(config: KafkaConfig, group: str) -> GroupDescription:
    """The consumer group's state and live members; a retryable BrokerError when Kafka does not answer."""
    admin = _admin(config, f"describe consumer group {group!r}")
    try:
        described = admin.describe_groups([group]).get(group) or {}
    except KafkaError as exc:
        raise BrokerError(f"cannot describe consumer group {group!r}: {exc}", retryable=True) from None
    finally:
        admin.close()
    members = described.get("members") or []
    return GroupDescription(str(described.get("group_state") or "unknown"),
                            [f"{m.get('client_id', '?')}@{str(m.get('client_host', '?')).lstrip('/')}"
                             for m in members])


def topic_partitions(config: KafkaConfig, topic: str) -> list[TopicPartition]:
    """The topic's partitions; BrokerError when it does not exist (looked up without creating it)."""
    count = existing_topic_partitions(config, topic)
    if not count:
        raise BrokerError(f"topic {topic!r} does not exist")
    return [TopicPartition(topic, p) for p in range(count)]
