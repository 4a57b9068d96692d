"""The live listener: keyspace notifications → coalesced atomic reads → published change events."""

from __future__ import annotations

import logging
import threading
import time

import redis

from replicator import metrics
from replicator.capture.reader import KeyCapture
from replicator.config import CaptureConfig
from replicator.errors import SourceError
from replicator.events import Origin
from replicator.mapping import RuleSet
from replicator.publish.producer import EventPublisher

log = logging.getLogger(__name__)


class Listener:
    """Captures one Redis node (one db).

    Notifications only say *that* a key changed; the key is then read with its version. Notifications for the same
    key that arrive within ``coalesce_ms`` (or before the pending batch is read) cost one read: the read happens after
    all of them, so it sees the latest state. Ordering per key follows from one thread reading and publishing in
    order; ordering per owner from the Kafka key.
    """

    def __init__(self, client: redis.Redis, rules: RuleSet, publisher: EventPublisher, config: CaptureConfig,
                 node: str, db: int = 0) -> None:
        self._client = client
        self._rules = rules
        self._publisher = publisher
        self._config = config
        self._capture = KeyCapture(client, rules, publisher, node, db)
        self.node = node
        self.db = db
        self._prefix = b"__keyspace@%d__:" % db
        self.subscribed = threading.Event()

    def channels(self) -> list[bytes]:
        return [self._prefix + glob for glob in self._rules.globs()]

    def run(self, stop: threading.Event) -> None:
        """Capture until ``stop`` is set; then publish what is pending and flush the producer.

        Raises SourceError when the subscription is lost: notifications sent meanwhile are gone, which is a gap.
        """
        pubsub = self._client.pubsub()
        try:
            self._subscribe(pubsub)
            log.info("listening", extra={"kv": {"node": self.node, "db": self.db,
                                                  "channels": [c.decode("utf-8", "replace") for c in self.channels()]}})
            self._loop(pubsub, stop)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            metrics.NOTIFICATION_GAPS.labels(node=self.node, reason="disconnect").inc()
            raise SourceError(f"lost the keyspace subscription on {self.node}: {exc}; changes meanwhile were not "
                              "seen (a gap): restart the listener and re-run snapshot") from None
        finally:
            self.subscribed.clear()
            try:
                pubsub.close()
            finally:
                self._publisher.close()

    def _subscribe(self, pubsub: redis.client.PubSub) -> None:
        channels = self.channels()
        pubsub.psubscribe(*channels)
        confirmed = 0
        deadline = time.monotonic() + 10
        while confirmed < len(channels):
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "psubscribe":
                confirmed += 1
            if time.monotonic() > deadline:
                raise SourceError(f"Redis {self.node} did not confirm the keyspace subscription within 10s")
        self.subscribed.set()

    def _loop(self, pubsub: redis.client.PubSub, stop: threading.Event) -> None:
        pending: dict[bytes, None] = {}  # insertion-ordered set
        window = self._config.coalesce_ms / 1000
        batch_size = self._config.batch_size
        first_at = 0.0
        while not stop.is_set():
            timeout = 0.1 if not pending else max(0.0, first_at + window - time.monotonic())
            message = pubsub.get_message(timeout=timeout)
            while message is not None:
                if message["type"] == "pmessage":
                    key = message["channel"][len(self._prefix):]
                    if not pending:
                        first_at = time.monotonic()
                    pending[key] = None
                    if len(pending) >= batch_size:
                        break
                message = pubsub.get_message(timeout=0)
            if pending and (len(pending) >= batch_size or time.monotonic() >= first_at + window):
                self.capture(list(pending), Origin.LIVE)
                pending.clear()
        if pending:
            self.capture(list(pending), Origin.LIVE)

    def capture(self, keys: list[bytes], origin: Origin) -> int:
        return self._capture.capture(keys, origin)
