"""``replicator dlq``: list the dead-letter topic, and re-drive its records once what made them poison is fixed.

The topic and its envelope are the Kafka adapter's (:mod:`replicator.adapters.kafka.dead_letters`); this module reads
them back.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any

from replicator.adapters.kafka import dead_letters
from replicator.adapters.kafka.offsets import GroupOffsets
from replicator.core.config import KafkaConfig

log = logging.getLogger(__name__)


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
    with GroupOffsets(config, dead_letters.dlq_topic(topic), None) as dlq:
        records, _end = dlq.read_to_end()
    return [parse(r) for r in records]


def redrive(config: KafkaConfig, topic: str, reasons: set[str] | None = None) -> int:
    """Re-publish dead letters (original key and value) to ``topic``, once: progress is kept in a consumer group.

    Safe after fixing what made them poison (a rule, a type): the events carry their original versions, so a
    re-driven state older than what DynamoDB holds changes nothing.
    """
    group = f"{config.group_id}.redrive"
    with GroupOffsets(config, dead_letters.dlq_topic(topic), group) as dlq:
        records, end = dlq.read_to_end()
        sent = _republish(config, topic, records, reasons)
        dlq.commit(end)
    log.info("re-drove dead letters", extra={"kv": {"topic": topic, "sent": sent, "read": len(records)}})
    return sent


def _republish(config: KafkaConfig, topic: str, records: list[Any], reasons: set[str] | None) -> int:
    producer = dead_letters.producer(config)
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
    return sent
