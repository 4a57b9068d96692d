"""What the Kafka broker can do, and the client settings that follow from it.

Production brokers (MSK, Strimzi, Confluent) answer ApiVersions and get record headers, the idempotent producer and
offsets-by-timestamp. The local stack's Apache Kafka 0.9 predates ApiVersions: it drops the connection on the
request, which kafka-python 3.x cannot auto-detect (it times out bootstrapping). We therefore probe ourselves with one
raw ApiVersions request and derive each capability from the API versions the broker announces, instead of guessing
from a version number.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError

from replicator.config import KafkaConfig
from replicator.errors import BrokerError

log = logging.getLogger(__name__)

API_PRODUCE = 0
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_INIT_PRODUCER_ID = 22
#: How long a silent broker gets before we ask whether it is a pre-0.10 one.
API_VERSIONS_WAIT = 3.0


@dataclass(frozen=True)
class BrokerCapabilities:
    #: What kafka-python is told (None: let it negotiate, which works on every broker that answers ApiVersions).
    api_version: tuple[int, ...] | None
    headers: bool
    idempotent_producer: bool
    offsets_by_timestamp: bool
    create_topics: bool

    @property
    def legacy(self) -> bool:
        return self.api_version is not None and self.api_version < (0, 10)

    def describe(self) -> str:
        names = ("headers", "idempotent_producer", "offsets_by_timestamp", "create_topics")
        have = [n for n in names if getattr(self, n)]
        lacking = [n for n in names if not getattr(self, n)]
        version = "negotiated" if self.api_version is None else ".".join(map(str, self.api_version))
        return f"broker api {version}; has: {', '.join(have) or 'none'}; lacks: {', '.join(lacking) or 'nothing'}"


LEGACY_0_9 = BrokerCapabilities((0, 9), headers=False, idempotent_producer=False, offsets_by_timestamp=False,
                                create_topics=False)


def capabilities_from_api_versions(max_versions: dict[int, int]) -> BrokerCapabilities:
    """Pure: the broker's announced max version per API key → capabilities."""
    produce = max_versions.get(API_PRODUCE, -1)
    return BrokerCapabilities(
        api_version=None,
        headers=produce >= 3,  # record batch v2 (KIP-82)
        idempotent_producer=produce >= 3 and API_INIT_PRODUCER_ID in max_versions,
        offsets_by_timestamp=max_versions.get(API_LIST_OFFSETS, -1) >= 1,  # KIP-79
        create_topics=API_CREATE_TOPICS in max_versions,
    )


def capabilities_for_version(version: tuple[int, ...]) -> BrokerCapabilities:
    """Capabilities of a broker whose version the operator stated (``kafka.api_version``), without probing."""
    return BrokerCapabilities(
        api_version=version,
        headers=version >= (0, 11),
        idempotent_producer=version >= (0, 11),
        offsets_by_timestamp=version >= (0, 10, 1),
        create_topics=version >= (0, 10, 1),
    )


def detect(config: KafkaConfig, timeout: float = 10.0) -> BrokerCapabilities:
    if config.api_version != "auto":
        return capabilities_for_version(tuple(int(p) for p in config.api_version.split(".")))
    caps = probe(config, timeout)
    log.info("kafka broker capabilities", extra={"kv": {"capabilities": caps.describe()}})
    if caps.legacy:
        log.warning(
            "kafka broker predates 0.10: no record headers, no idempotent producer, no offsets by timestamp; "
            "running in compatibility mode (ordering kept with one in-flight request per connection)"
        )
    return caps


def probe(config: KafkaConfig, timeout: float = 10.0) -> BrokerCapabilities:
    """Send ApiVersions v0 to the first bootstrap server that accepts a connection."""
    deadline = time.monotonic() + timeout
    errors: list[str] = []
    while True:
        for server in config.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                return _probe_one(host.strip("[]"), int(port), config, max(0.5, deadline - time.monotonic()))
            except OSError as exc:
                errors.append(f"{server}: {exc.strerror or exc}")
        if time.monotonic() >= deadline:
            raise _unreachable(errors)
        time.sleep(0.5)


def _unreachable(errors: list[str]) -> BrokerError:
    return BrokerError(f"cannot reach any Kafka bootstrap server ({'; '.join(errors[-3:])}); "
                       "check kafka.bootstrap_servers / REPLICATOR_KAFKA_BOOTSTRAP_SERVERS", retryable=True)


def _probe_one(host: str, port: int, config: KafkaConfig, timeout: float) -> BrokerCapabilities:
    # Brokers before 0.10 do not know ApiVersions: 0.9 neither answers nor closes the connection (its network
    # thread logs an uncaught exception). Silence is ambiguous, so a Metadata v0 request, which every broker answers,
    # tells "alive but legacy" from "not answering".
    reply = _request(host, port, config, API_API_VERSIONS, b"", min(timeout, API_VERSIONS_WAIT))
    if reply is None:
        if _request(host, port, config, API_METADATA, struct.pack(">i", 0), timeout) is None:
            raise OSError(f"no answer from {host}:{port} to ApiVersions nor Metadata")
        return LEGACY_0_9
    _correlation, error_code, count = struct.unpack(">ihi", reply[:10])
    if error_code != 0:
        raise BrokerError(f"Kafka at {host}:{port} answered ApiVersions with error code {error_code}")
    versions: dict[int, int] = {}
    for i in range(count):
        api_key, _min, max_version = struct.unpack(">hhh", reply[10 + 6 * i : 16 + 6 * i])
        versions[api_key] = max_version
    return capabilities_from_api_versions(versions)


def _request(host: str, port: int, config: KafkaConfig, api_key: int, body: bytes, timeout: float) -> bytes | None:
    """One v0 request on a fresh connection; the response payload, or None on silence or a closed connection."""
    client_id = config.client_id.encode()
    message = struct.pack(">hhih", api_key, 0, 1, len(client_id)) + client_id + body
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock: socket.socket = raw
        if config.security_protocol in ("SSL", "SASL_SSL"):
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
        sock.sendall(struct.pack(">i", len(message)) + message)
        try:
            header = _recv_exactly(sock, 4)
            if header is None:
                return None
            return _recv_exactly(sock, struct.unpack(">i", header)[0])
        except TimeoutError:
            return None


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def client_kwargs(config: KafkaConfig, caps: BrokerCapabilities) -> dict[str, Any]:
    """Settings shared by producer, consumer and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers.split(","),
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
    }
    if caps.api_version is not None:
        kwargs["api_version"] = caps.api_version
    if config.sasl_mechanism:
        kwargs["sasl_mechanism"] = config.sasl_mechanism
        kwargs["sasl_plain_username"] = config.sasl_username
        kwargs["sasl_plain_password"] = config.sasl_password.get_secret_value() if config.sasl_password else None
    return kwargs


def ensure_topic(config: KafkaConfig, caps: BrokerCapabilities, topic: str, partitions: int | None = None,
                 timeout: float = 30.0) -> int:
    """Make sure ``topic`` exists; return its partition count.

    Modern brokers: CreateTopics with ``kafka.partitions``. Legacy brokers cannot create topics through the API;
    a Metadata request naming the topic makes the broker auto-create it with its ``num.partitions``.
    """
    wanted = partitions or config.partitions
    if caps.create_topics:
        _create_topic(config, caps, topic, wanted)
    deadline = time.monotonic() + timeout
    while True:
        count = topic_partition_count(config, topic)
        if count:
            if partitions is not None and count != partitions:
                log.warning("topic partition count differs from the configured one", extra={
                    "kv": {"topic": topic, "partitions": count, "configured": wanted}})
            return count
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"topic {topic!r} does not exist and could not be created within {timeout:.0f}s; "
                "create it, or enable auto.create.topics.enable on the broker"
            )
        time.sleep(0.2)


def topic_partition_count(config: KafkaConfig, topic: str, timeout: float = 10.0) -> int:
    """Partitions of ``topic`` that have a leader, from a Metadata v0 request naming it.

    The request auto-creates the topic where the broker allows it. A retryable BrokerError when no bootstrap
    server answers, so that "Kafka is down" is never mistaken for "the topic does not exist".
    """
    name = topic.encode()
    return _metadata(config, struct.pack(">ih", 1, len(name)) + name, timeout).get(topic, 0)


def existing_topic_partitions(config: KafkaConfig, topic: str, timeout: float = 10.0) -> int | None:
    """Partitions of ``topic``, or None when it does not exist, without auto-creating it (Metadata v0, all topics)."""
    return _metadata(config, struct.pack(">i", 0), timeout).get(topic)


def _metadata(config: KafkaConfig, body: bytes, timeout: float) -> dict[str, int]:
    """One Metadata v0 request to the first bootstrap server that answers: partitions with a leader per topic."""
    errors = []
    for server in config.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            reply = _request(host.strip("[]"), int(port), config, API_METADATA, body, timeout)
        except OSError as exc:
            errors.append(f"{server.strip()}: {exc.strerror or exc}")
            continue
        if reply is not None:
            return _parse_metadata_v0(reply)
        errors.append(f"{server.strip()}: no metadata reply")
    raise _unreachable(errors)


def topic_partitions(config: KafkaConfig, topic: str) -> list[Any]:
    """The topic's partitions as kafka-python TopicPartitions; BrokerError when the topic does not exist.

    kafka-python 3 answers ``partitions_for_topic`` only for topics the client already tracks, hence our own request.
    """
    from kafka import TopicPartition

    count = topic_partition_count(config, topic)
    if not count:
        raise BrokerError(f"topic {topic!r} does not exist or has partitions without a leader")
    return [TopicPartition(topic, p) for p in range(count)]


def _parse_metadata_v0(reply: bytes) -> dict[str, int]:
    pos = 4  # correlation id

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        values = struct.unpack_from(fmt, reply, pos)
        pos += struct.calcsize(fmt)
        return values

    def string() -> str:
        nonlocal pos
        (length,) = take(">h")
        value = reply[pos : pos + max(length, 0)].decode()
        pos += max(length, 0)
        return value

    (brokers,) = take(">i")
    for _ in range(brokers):
        take(">i")
        string()
        take(">i")
    counts: dict[str, int] = {}
    (topics,) = take(">i")
    for _ in range(topics):
        (topic_error,) = take(">h")
        name = string()
        (n_partitions,) = take(">i")
        leaders = 0
        for _ in range(n_partitions):
            _error, _pid, leader = take(">hii")
            (replicas,) = take(">i")
            take(f">{replicas}i")
            (isr,) = take(">i")
            take(f">{isr}i")
            leaders += leader >= 0
        counts[name] = leaders if topic_error == 0 and leaders == n_partitions else 0
    return counts


def _create_topic(config: KafkaConfig, caps: BrokerCapabilities, topic: str, partitions: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(**client_kwargs(config, caps))
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka to create topic {topic!r}: {exc}", retryable=True) from None
    try:
        if topic in admin.list_topics():
            return
        brokers = len(admin.describe_cluster()["brokers"])
        try:
            admin.create_topics([NewTopic(topic, partitions, min(config.replication_factor, max(1, brokers)))])
            log.info("created topic", extra={"kv": {"topic": topic, "partitions": partitions}})
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()


def read_topic(config: KafkaConfig, caps: BrokerCapabilities, topic: str, group: str | None = None,
               timeout: float = 60.0) -> tuple[list[Any], dict[Any, int]]:
    """Every record from ``group``'s committed offsets (or the beginning) to the current end of ``topic``.

    Returns the records and the end offsets, which the caller may commit for ``group`` once it has handled them.
    """
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**client_kwargs(config, caps), group_id=group, enable_auto_commit=False)
    try:
        partitions = topic_partitions(config, topic)
        consumer.assign(partitions)
        for tp in partitions:
            committed = consumer.committed(tp) if group else None
            if committed is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        end = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(r for r in batch if r.offset < end[_tp_of(r)])
            if time.monotonic() > deadline:
                raise BrokerError(f"could not read topic {topic!r} to its end within {timeout:.0f}s")
        return records, end
    finally:
        consumer.close(autocommit=False)


def commit_offsets(config: KafkaConfig, caps: BrokerCapabilities, group: str, offsets: dict[Any, int]) -> None:
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(**client_kwargs(config, caps), group_id=group, enable_auto_commit=False)
    try:
        consumer.assign(list(offsets))
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
    finally:
        consumer.close(autocommit=False)


def _tp_of(record: Any) -> Any:
    from kafka import TopicPartition

    return TopicPartition(record.topic, record.partition)


class GroupOffsets:
    """A topic's end offsets and one consumer group's committed offsets on it, read without joining the group.

    What the listener's gap reconcile waits on (see capture/reconcile.py). One consumer connection, kept open;
    kafka-python's consumer is not thread-safe, so calls are serialised.
    """

    def __init__(self, config: KafkaConfig, caps: BrokerCapabilities, topic: str, group: str) -> None:
        from kafka import KafkaConsumer

        self.topic, self.group = topic, group
        self._config = config
        self._consumer = KafkaConsumer(**client_kwargs(config, caps), group_id=group, enable_auto_commit=False)
        self._lock = threading.Lock()

    def end(self) -> dict[int, int]:
        """Per partition, the offset the next record will get. Retryable BrokerError while Kafka does not answer."""
        with self._lock:
            try:
                tps = topic_partitions(self._config, self.topic)
                return {tp.partition: offset for tp, offset in self._consumer.end_offsets(tps).items()}
            except KafkaError as exc:
                raise BrokerError(f"cannot read the end offsets of {self.topic!r}: {exc}", retryable=True) from None

    def committed(self) -> dict[int, int | None]:
        """Per partition, the group's committed offset (None: never committed)."""
        with self._lock:
            try:
                tps = topic_partitions(self._config, self.topic)
                return {tp.partition: self._consumer.committed(tp) for tp in tps}
            except KafkaError as exc:
                raise BrokerError(f"cannot read group {self.group!r}'s offsets on {self.topic!r}: {exc}",
                                  retryable=True) from None

    def close(self) -> None:
        with self._lock:
            self._consumer.close(autocommit=False)
