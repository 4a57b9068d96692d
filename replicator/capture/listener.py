"""The live listener: keyspace notifications → coalesced atomic reads → published change events."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from replicator import metrics
from replicator.capture.reader import KeyCapture
from replicator.config import CaptureConfig
from replicator.errors import SourceError
from replicator.events import Origin
from replicator.mapping import RuleSet
from replicator.publish.producer import EventPublisher
from replicator.snapshot.loader import scan_and_capture

log = logging.getLogger(__name__)


class Listener:
    """Captures one Redis node (one db).

    Notifications only say *that* a key changed; the key is then read with its version. Notifications for the same
    key that arrive within ``coalesce_ms`` (or before the pending batch is read) cost one read: the read happens after
    all of them, so it sees the latest state. Ordering per key follows from one thread reading and publishing in
    order; ordering per owner from the Kafka key.

    Keyspace notifications are fire-and-forget: whatever changed while the listener was not subscribed (before it
    started, while the connection was down) was never announced. Each of those is a *gap*: counted, and followed by
    a re-snapshot running in the background while live capture goes on (safe because events are versioned states),
    then by a reconcile that re-reads every key DynamoDB still holds, which turns keys deleted during the gap into
    DELETE events (a SCAN cannot see them).
    """

    def __init__(self, client: redis.Redis, rules: RuleSet, publisher: EventPublisher, config: CaptureConfig,
                 node: str, db: int = 0, live_keys: Callable[[], Iterable[bytes]] | None = None,
                 read_client: Any = None, owns_publisher: bool = True, first_gap: str = "start") -> None:
        """``client`` is the node subscribed to and re-snapshotted; keys are read through ``read_client`` (a
        cluster client routes each key to its current owner) when given. ``owns_publisher``: close it at the end."""
        self._client = client
        self._rules = rules
        self._publisher = publisher
        self._owns_publisher = owns_publisher
        self._config = config
        self._capture = KeyCapture(read_client if read_client is not None else client, rules, publisher, node, db,
                                   config)
        self.node = node
        self.db = db
        self._prefix = b"__keyspace@%d__:" % db
        self.subscribed = threading.Event()
        #: Keys DynamoDB holds live data for; re-read after a re-snapshot to find deletions made during a gap.
        self._live_keys = live_keys
        self._resnapshot = _Resnapshot(self) if config.resnapshot_on_gap else None
        self._first_gap = first_gap

    @property
    def resnapshots_completed(self) -> int:
        return self._resnapshot.completed if self._resnapshot else 0

    def channels(self) -> list[bytes]:
        return [self._prefix + glob for glob in self._rules.globs()]

    def run(self, stop: threading.Event) -> None:
        """Capture until ``stop`` is set; then publish what is pending, flush and close the producer.

        A lost subscription is retried with backoff until ``stop``; every (re)subscription is a gap.
        """
        reason = self._first_gap
        first, cap = self._config.reconnect_backoff_s
        delay = first
        if self._resnapshot:
            self._resnapshot.start(stop)
        try:
            while not stop.is_set():
                pubsub = self._client.pubsub()
                try:
                    self._subscribe(pubsub)
                    self._gap(reason)
                    delay = first
                    self._loop(pubsub, stop)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    reason = "disconnect"
                    self.subscribed.clear()
                    log.warning("keyspace subscription lost; reconnecting", extra={"kv": {
                        "node": self.node, "error": str(exc), "retry_in_s": round(delay, 2)}})
                    stop.wait(delay * random.uniform(0.5, 1.0))
                    delay = min(cap, delay * 2)
                finally:
                    self.subscribed.clear()
                    pubsub.close()
        finally:
            if self._resnapshot:
                self._resnapshot.join()
            if self._owns_publisher:
                self._publisher.close()

    def _gap(self, reason: str) -> None:
        metrics.NOTIFICATION_GAPS.labels(node=self.node, reason=reason).inc()
        log.info("subscribed; changes before this point were not announced", extra={"kv": {
            "node": self.node, "db": self.db, "gap": reason, "resnapshot": self._resnapshot is not None,
            "channels": [c.decode("utf-8", "replace") for c in self.channels()]}})
        if self._resnapshot:
            self._resnapshot.request()

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
        prefix = len(self._prefix)
        while not stop.is_set():
            timeout = 0.1 if not pending else max(0.0, first_at + window - time.monotonic())
            channel = _next_channel(pubsub, timeout)
            while channel is not None:
                if channel:
                    if not pending:
                        first_at = time.monotonic()
                    pending[channel[prefix:]] = None
                    if len(pending) >= batch_size:
                        break
                channel = _next_channel(pubsub, 0)
            if pending and (len(pending) >= batch_size or time.monotonic() >= first_at + window):
                self.capture(list(pending), Origin.LIVE)
                pending.clear()
            self._publisher.reap()  # keeps the acknowledged-events counter current, also when idle
        if pending:
            self.capture(list(pending), Origin.LIVE)

    def capture(self, keys: list[bytes], origin: Origin) -> int:
        return self._capture.capture(keys, origin)


def _next_channel(pubsub: redis.client.PubSub, timeout: float) -> bytes | None:
    """The channel of the next keyspace notification; b"" for another reply; None when none came within timeout.

    Not ``get_message``: it builds a dict and records telemetry for every message, which costs more than reading the
    notification. Replies other than notifications (subscription confirmations, health-check pongs) still go through
    redis-py's handling, which keeps its subscription state.
    """
    response = pubsub.parse_response(block=False, timeout=timeout)
    if response is None:
        return None
    if isinstance(response, list) and response[0] == b"pmessage":  # hiredis gives a list subclass
        return response[2]
    pubsub.handle_message(response)
    return b""


class _Resnapshot:
    """Background re-snapshots after gaps. A gap during a running re-snapshot restarts it from the beginning."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self.completed = 0

    def start(self, stop: threading.Event) -> None:
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="resnapshot", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._requested.set()

    def join(self) -> None:
        if self._thread is not None:
            self._requested.set()  # wake it so it sees stop
            self._thread.join(60)

    def _run(self) -> None:
        assert self._stop is not None
        stop = self._stop
        listener = self._listener
        while not stop.is_set():
            self._requested.wait()
            if stop.is_set():
                return
            self._requested.clear()
            try:
                scanned, published = scan_and_capture(
                    listener._client, listener._rules, listener._capture, listener._config.batch_size,
                    should_stop=lambda: stop.is_set() or self._requested.is_set(),
                )
                reconciled = self._reconcile(stop)
            except redis.RedisError as exc:
                log.warning("re-snapshot failed; retrying", extra={"kv": {"node": listener.node, "error": str(exc)}})
                self._requested.set()
                stop.wait(1.0)
                continue
            if not (stop.is_set() or self._requested.is_set()):
                self.completed += 1
                metrics.GAP_RESNAPSHOTS.labels(node=listener.node).inc()
                log.info("re-snapshot done", extra={"kv": {"node": listener.node, "keys_scanned": scanned,
                                                           "events_published": published,
                                                           "keys_reconciled": reconciled}})

    def _reconcile(self, stop: threading.Event) -> int:
        listener = self._listener
        if listener._live_keys is None:
            return 0
        done = 0
        batch: list[bytes] = []
        for key in listener._live_keys():
            batch.append(key)
            if len(batch) >= listener._config.batch_size:
                listener.capture(batch, Origin.SNAPSHOT)
                done += len(batch)
                batch = []
                if stop.is_set() or self._requested.is_set():
                    return done
        if batch:
            listener.capture(batch, Origin.SNAPSHOT)
            done += len(batch)
        return done
