"""The Kafka edge of capture: ChangeEvent → Avro → one record keyed by owner."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from kafka import KafkaProducer

from replicator import metrics
from replicator.broker import BrokerCapabilities, client_kwargs
from replicator.config import KafkaConfig
from replicator.errors import BrokerError
from replicator.events import CONTENT_TYPE, ChangeEvent, EventCodec

log = logging.getLogger(__name__)

#: Sends in flight after which publish reaps the acknowledged ones.
_REAP_AT = 1000


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
        #: Sends not yet seen acknowledged, in send order. Reaped instead of a callback per send: two callbacks per
        #: event cost the sending thread and the producer's I/O thread more than counting them in bulk.
        self._inflight: deque[tuple[Any, bytes]] = deque()
        self._reaping = threading.Lock()
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
        self._inflight.append((self._producer.send(self.topic, key=event.owner, value=value, headers=headers),
                               event.key))
        if len(self._inflight) >= _REAP_AT:
            self.reap(wait=False)

    def reap(self, wait: bool = False) -> None:
        """Count the sends Kafka acknowledged (``replicator_events_published_total``) and note the failed ones.

        Goes in send order up to the first send still in flight. Called by publish now and then, by :meth:`flush`,
        and by long-running callers when idle so the counter stays current. ``wait=False``: skip when another
        thread is reaping.
        """
        if not self._reaping.acquire(blocking=wait):
            return
        try:
            inflight = self._inflight
            acknowledged = 0
            while inflight and inflight[0][0].is_done:
                future, key = inflight.popleft()
                if future.exception is None:
                    acknowledged += 1
                else:
                    metrics.PUBLISH_ERRORS.inc()
                    exc = future.exception
                    self._failures.append(f"key {key!r}: {type(exc).__name__}: {exc}")
            if acknowledged:
                metrics.EVENTS_PUBLISHED.inc(acknowledged)
        finally:
            self._reaping.release()

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event sent so far is acknowledged. Raises BrokerError if any was not."""
        self._producer.flush(timeout=timeout)
        self.reap(wait=True)
        with self._reaping:
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
