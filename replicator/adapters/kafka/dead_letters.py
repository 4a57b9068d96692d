"""The dead-letter topic: records that cannot be decoded or applied go to ``<topic>.dlq`` and the partition moves on.

The value is a JSON envelope (works on every broker, headers or not) holding the reason, the original coordinates
and the original key and value, base64-encoded, so the record can be inspected and re-driven after a fix.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

from kafka import KafkaProducer

from replicator import metrics
from replicator.adapters.kafka.broker import client_kwargs, ensure_topic
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


def producer(config: KafkaConfig) -> KafkaProducer:
    """The one producer setting for dead letters and their re-drive: acks=all and retrying forever keep a record
    through a broker's loss, and one request in flight keeps records in order across those retries."""
    return KafkaProducer(**client_kwargs(config), acks="all", retries=2**31 - 1,
                         max_in_flight_requests_per_connection=1, enable_idempotence=False)


class DeadLetters:
    def __init__(self, config: KafkaConfig, topic: str) -> None:
        self.topic = dlq_topic(topic)
        # Created up front: a producer meeting a missing topic only at the first poison record can stall there.
        ensure_topic(config, self.topic)
        self._producer = producer(config)
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
