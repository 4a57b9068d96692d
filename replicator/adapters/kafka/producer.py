"""The Kafka edge of capture: ChangeEvent → Avro → one record keyed by owner.

Change events are produced with confluent-kafka (librdkafka): its ``produce`` costs a few µs of Python time where
kafka-python's costs about 40, which made the Kafka client most of a listener's CPU. Everything else that talks to
Kafka uses kafka-python; both get their connection settings from :mod:`replicator.adapters.kafka.settings`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import KafkaException, Producer

from replicator import metrics
from replicator.adapters.kafka.settings import librdkafka
from replicator.core.avro import CONTENT_TYPE, EventCodec
from replicator.core.config import KafkaConfig
from replicator.core.errors import BrokerError
from replicator.core.events import ChangeEvent

log = logging.getLogger(__name__)

#: Events produced between two servings of delivery reports (publish also serves them when the queue is full).
_POLL_EVERY = 1000
#: How long a record may wait for its acknowledgement, retries included (the producer's delivery timeout).
DELIVERY_TIMEOUT_MS = 120_000


def producer_settings(config: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings for the change-event producer.

    Ordering per owner: the idempotent producer keeps it with up to 5 requests in flight, retries included, and
    acks=all with the topic's ``min.insync.replicas`` keeps an acknowledged event through a broker's loss.
    Partitioning is murmur2, as in the Java client and kafka-python, so an owner's partition does not depend on
    which client wrote it.
    """
    return {
        **librdkafka(config),
        "acks": "all",
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": config.linger_ms,
        "compression.type": config.compression_type,
        "partitioner": "murmur2_random",
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
    }


class EventPublisher:
    """Sends events asynchronously; :meth:`flush` waits for every acknowledgement and raises if any send failed.

    Acknowledgements are counted (``replicator_events_published_total``) when delivery reports are served: on
    publish now and then, in :meth:`reap` (long-running callers call it when idle) and in :meth:`flush`.
    Safe to share between threads.
    """

    def __init__(self, config: KafkaConfig, codec: EventCodec | None = None,
                 topic: str | None = None) -> None:
        self.topic = topic or config.topic
        self.codec = codec or EventCodec()
        self.settings = producer_settings(config)
        try:
            self._producer = Producer(self.settings, logger=logging.getLogger("replicator.librdkafka"))
        except KafkaException as exc:
            raise BrokerError(f"cannot create the Kafka producer: {exc}; check the kafka section of the config"
                              ) from None
        self._lock = threading.Lock()
        self._acknowledged = 0
        self._failures: list[str] = []
        self._since_poll = 0

    def publish(self, event: ChangeEvent) -> None:
        value = self.codec.encode(event)
        headers = [
            ("content-type", CONTENT_TYPE),
            ("origin", event.origin.value.encode()),
            ("version", str(event.version).encode()),
        ]
        while True:
            try:
                self._producer.produce(self.topic, value, event.owner, headers=headers, on_delivery=self._delivered)
                break
            except BufferError:  # the local queue is full: Kafka is slower than capture; wait for acknowledgements
                self._producer.poll(0.1)
        self._since_poll += 1
        if self._since_poll >= _POLL_EVERY:
            self._since_poll = 0
            self.reap()

    def _delivered(self, error: Any, message: Any) -> None:
        with self._lock:
            if error is None:
                self._acknowledged += 1
            else:
                self._failures.append(f"owner {message.key()!r}: {error}")

    def reap(self) -> None:
        """Serve delivery reports and count the acknowledged events.

        Raises BrokerError once an event was not acknowledged within the delivery timeout: a listener must not run
        on past a lost event (its restart is a gap, which the re-snapshot heals).
        """
        self._producer.poll(0)
        self._count_reports()

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event sent so far is acknowledged. Raises BrokerError if any was not."""
        waiting = self._producer.flush(-1 if timeout is None else timeout)
        self._count_reports(f"{waiting} event(s) still unacknowledged after {timeout}s" if waiting else None)

    def _count_reports(self, also: str | None = None) -> None:
        """Count the delivery reports served since the last call; raise BrokerError for any failure (or ``also``)."""
        with self._lock:
            acknowledged, self._acknowledged = self._acknowledged, 0
            failures, self._failures = self._failures, []
        if acknowledged:
            metrics.EVENTS_PUBLISHED.inc(acknowledged)
        if failures:
            metrics.PUBLISH_ERRORS.inc(len(failures))
        if also:
            failures.append(also)
        if failures:
            raise BrokerError(
                f"{len(failures)} event(s) were not acknowledged by Kafka topic {self.topic!r} (first: {failures[0]})"
            )

    def close(self, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout``) for what is still unacknowledged; raises BrokerError for any event Kafka did not
        take. librdkafka has no close: the producer is freed with this object.

        Called once, by whoever created the publisher (the stage that called its ``new_publisher()``, or the command
        that made it); whoever it is lent to only flushes.
        """
        self.flush(timeout)
