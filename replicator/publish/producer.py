"""The Kafka edge of capture: ChangeEvent → Avro → one record keyed by owner."""

from __future__ import annotations

import logging
import threading
from typing import Any

from kafka import KafkaProducer

from replicator import metrics
from replicator.broker import BrokerCapabilities, client_kwargs
from replicator.config import KafkaConfig
from replicator.errors import BrokerError
from replicator.events import CONTENT_TYPE, ChangeEvent, EventCodec

log = logging.getLogger(__name__)


class EventPublisher:
    """Sends events asynchronously; :meth:`flush` waits for every acknowledgement and raises if any send failed.

    Ordering per owner: the idempotent producer keeps it with up to 5 in-flight requests; without it (brokers before
    0.11) retries could reorder batches, so one request in flight per connection.
    """

    def __init__(self, config: KafkaConfig, caps: BrokerCapabilities, codec: EventCodec | None = None,
                 topic: str | None = None) -> None:
        self.topic = topic or config.topic
        self.codec = codec or EventCodec()
        self._caps = caps
        kwargs: dict[str, Any] = {
            **client_kwargs(config, caps),
            "acks": "all",
            "linger_ms": config.linger_ms,
            "retries": 2**31 - 1,
            "delivery_timeout_ms": 120_000,
            "max_in_flight_requests_per_connection": 5 if caps.idempotent_producer else 1,
            "enable_idempotence": caps.idempotent_producer,
        }
        if config.compression_type != "none":
            kwargs["compression_type"] = config.compression_type
        self._producer = KafkaProducer(**kwargs)
        self._lock = threading.Lock()
        self._failures: list[str] = []

    def publish(self, event: ChangeEvent) -> None:
        value = self.codec.encode(event)
        headers = None
        if self._caps.headers:
            headers = [
                ("content-type", CONTENT_TYPE),
                ("origin", event.origin.value.encode()),
                ("version", str(event.version).encode()),
            ]
        future = self._producer.send(self.topic, key=event.owner, value=value, headers=headers)
        future.add_callback(self._delivered)
        future.add_errback(self._failed, event.key)

    def _delivered(self, _metadata: Any) -> None:
        metrics.EVENTS_PUBLISHED.inc()

    def _failed(self, key: bytes, exc: BaseException) -> None:
        metrics.PUBLISH_ERRORS.inc()
        with self._lock:
            self._failures.append(f"key {key!r}: {type(exc).__name__}: {exc}")

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event sent so far is acknowledged. Raises BrokerError if any was not."""
        self._producer.flush(timeout=timeout)
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise BrokerError(
                f"{len(failures)} event(s) were not acknowledged by Kafka topic {self.topic!r} (first: {failures[0]})"
            )

    def close(self, timeout: float = 30.0) -> None:
        try:
            self.flush(timeout)
        finally:
            self._producer.close(timeout=timeout)
