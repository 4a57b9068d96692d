"""The dead-letter topic: records that cannot be decoded or applied go to ``<topic>.dlq`` and the partition moves on.

The value is a JSON envelope (works on every broker, headers or not) holding the reason, the original coordinates
and the original key and value, base64-encoded, so the record can be inspected and re-driven after a fix.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer

from replicator import metrics
from replicator.adapters.kafka.broker import client_kwargs, commit_offsets, ensure_topic, read_topic
from replicator.core.config import KafkaConfig
from replicator.core.errors import BrokerError

log = logging.getLogger(__name__)


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def envelope(record: Any, reason: str, error: str) -> dict[str, Any]:
    return {
        "reason": reason,
        "error": error,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": getattr(record, "timestamp", None),
        "dead_lettered_at_ms": int(time.time() * 1000),
        "key_b64": None if record.key is None else base64.b64encode(record.key).decode(),
        "value_b64": None if record.value is None else base64.b64encode(record.value).decode(),
    }


def _producer(config: KafkaConfig) -> KafkaProducer:
    """The one producer setting for dead letters and their re-drive: acks=all and retrying forever keep a record
    through a broker's loss, and one request in flight keeps records in order across those retries."""
    return KafkaProducer(**client_kwargs(config), acks="all", retries=2**31 - 1,
                         max_in_flight_requests_per_connection=1, enable_idempotence=False)


class DeadLetters:
    def __init__(self, config: KafkaConfig, topic: str) -> None:
        self.topic = dlq_topic(topic)
        # Created up front: a producer meeting a missing topic only at the first poison record can stall there.
        ensure_topic(config, self.topic)
        self._producer = _producer(config)
        self._failed: list[BaseException] = []

    def send(self, record: Any, reason: str, error: str) -> None:
        """Queue one poison record. ``reason`` is a short label (metric), ``error`` the one-line explanation."""
        log.error("dead-lettered", extra={"kv": {
            "position": f"{record.topic}[{record.partition}]@{record.offset}", "reason": reason, "error": error}})
        body = json.dumps(envelope(record, reason, error)).encode()
        future = self._producer.send(self.topic, key=record.key, value=body)
        future.add_errback(self._failed.append)
        metrics.DLQ_EVENTS.labels(reason=reason).inc()

    def flush(self) -> None:
        """Called before offsets are committed: a poison record must be safe in the DLQ before we move past it."""
        self._producer.flush()
        if self._failed:
            failed, self._failed = self._failed, []
            raise BrokerError(f"could not write {len(failed)} record(s) to {self.topic}: {failed[0]}", retryable=True)

    def close(self) -> None:
        self._producer.close()


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, as ``replicator dlq list`` shows it."""

    position: str  # where it sits in the DLQ: topic[partition]@offset
    origin: str  # where it came from: topic[partition]@offset
    reason: str
    error: str
    key: bytes | None
    value: bytes | None

    def line(self) -> str:
        key = "-" if self.key is None else self.key.decode("utf-8", "backslashreplace")
        return f"{self.position}  from {self.origin}  owner={key}  {self.reason}: {self.error}"


def parse(record: Any) -> DeadLetter:
    position = f"{record.topic}[{record.partition}]@{record.offset}"
    try:
        env = json.loads(record.value)
        return DeadLetter(
            position, f"{env['topic']}[{env['partition']}]@{env['offset']}", env["reason"], env["error"],
            None if env.get("key_b64") is None else base64.b64decode(env["key_b64"]),
            None if env.get("value_b64") is None else base64.b64decode(env["value_b64"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        return DeadLetter(position, "?", "unreadable", f"not a dead-letter envelope: {exc}", record.key, None)


def list_dead_letters(config: KafkaConfig, topic: str) -> list[DeadLetter]:
    records, _end = read_topic(config, dlq_topic(topic))
    return [parse(r) for r in records]


def redrive(config: KafkaConfig, topic: str, reasons: set[str] | None = None) -> int:
    """Re-publish dead letters (original key and value) to ``topic``, once: progress is kept in a consumer group.

    Safe after fixing what made them poison (a rule, a type): the events carry their original versions, so a
    re-driven state older than what DynamoDB holds changes nothing.
    """
    group = f"{config.group_id}.redrive"
    records, end = read_topic(config, dlq_topic(topic), group=group)
    producer = _producer(config)
    sent = 0
    try:
        for record in records:
            letter = parse(record)
            if letter.value is None or (reasons and letter.reason not in reasons):
                continue
            producer.send(topic, key=letter.key, value=letter.value)
            sent += 1
        producer.flush()
    finally:
        producer.close()
    commit_offsets(config, group, end)
    log.info("re-drove dead letters", extra={"kv": {"topic": topic, "sent": sent, "read": len(records)}})
    return sent
