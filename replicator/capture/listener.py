"""The live listener: keyspace notifications → coalesced atomic reads → published change events."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import redis

from replicator import metrics, retry
from replicator.adapters.kafka.producer import EventPublisher
from replicator.adapters.redis.reader import KeyCapture
from replicator.capture.reconcile import Reconciler
from replicator.capture.watch import ServerMarks, read_marks, unannounced_change
from replicator.core.batching import batches
from replicator.core.config import CaptureConfig
from replicator.core.cutover import MARK_PREFIX
from replicator.core.errors import ReplicatorError, SourceError
from replicator.core.events import Origin
from replicator.core.mapping import RuleSet

log = logging.getLogger(__name__)

#: The reason of the gap before a listener's first subscription: the listener starting, or (in a cluster) a primary
#: that appeared while the cluster was being captured.
GAP_START = "start"
GAP_TOPOLOGY = "topology"


class Resnapshot(Protocol):
    """Publish the state of every captured key on ``client`` through ``capture`` (origin SNAPSHOT), stopping early
    when ``should_stop()``; returns (keys scanned, events published).

    Injected (pipeline.py passes the snapshot stage's ``scan_and_capture``) so that capture does not depend on the
    snapshot stage.
    """

    def __call__(self, client: redis.Redis, capture: KeyCapture,
                 should_stop: Callable[[], bool]) -> tuple[int, int]: ...


def _unprepared(client: redis.Redis) -> None:
    return None


@dataclass(frozen=True)
class Collaborators:
    """What a listener works with besides its node, made by whoever builds the listener (who closes what needs it).

    ``resnapshot`` heals gaps when ``capture.resnapshot_on_gap`` is on; ``reconciler``, when given, then also finds
    the keys deleted during a gap. ``prepare(client)`` runs before every subscription (a restarted Redis has lost a
    notify-keyspace-events set by CONFIG SET).
    """

    rules: RuleSet
    resnapshot: Resnapshot
    reconciler: Reconciler | None = None
    prepare: Callable[[redis.Redis], object] = _unprepared


class NodeListener:
    """Captures one Redis node (one db), publishing to a publisher it borrows: it flushes it, never closes it.

    Notifications only say *that* a key changed; the key is then read with its version. Notifications for the same
    key that arrive within ``coalesce_ms`` (or before the pending batch is read) cost one read: the read happens after
    all of them, so it sees the latest state. Ordering per key follows from one thread reading and publishing in
    order; ordering per owner from the Kafka key.

    Keyspace notifications are fire-and-forget: whatever changed while the listener was not subscribed (before it
    started, while the connection was down), and whatever no notification announces (FLUSHDB, SWAPDB, a restart; see
    capture/watch.py), is a *gap*: counted by reason, then healed in the background while live capture goes on
    (safe because events are versioned states): a re-snapshot publishes what exists, and a reconcile, once the
    appliers have applied everything published before the gap (capture/reconcile.py), re-reads every key DynamoDB
    still holds, which turns keys deleted during the gap into DELETE events (a SCAN cannot see them).
    """

    def __init__(self, client: redis.Redis, publisher: EventPublisher, config: CaptureConfig, node: str, db: int,
                 collaborators: Collaborators, *, read_client: Any = None) -> None:
        """``client`` is the node subscribed to, watched and re-snapshotted; keys are read through ``read_client``
        (a cluster client routes each key to its current owner) when given."""
        rules = collaborators.rules
        self._client = client
        self._rules = rules
        self._publisher = publisher
        self._config = config
        self._capture = KeyCapture(read_client if read_client is not None else client, rules, publisher, node, db,
                                   config)
        self.node = node
        self.db = db
        self._prefix = b"__keyspace@%d__:" % db
        self.subscribed = threading.Event()
        self._resnapshot = collaborators.resnapshot
        self._healing = (_Healing(self, collaborators.reconciler, config.batch_size) if config.resnapshot_on_gap
                         else None)
        self._prepare = collaborators.prepare
        self._marks: ServerMarks | None = None
        self._watch_due = 0.0
        self._markers_refused = False  # warned once that the ACL refuses the cutover markers

    @property
    def resnapshots_completed(self) -> int:
        """Re-snapshots done after gaps (the reconcile that follows each may still be waiting)."""
        return self._healing.resnapshots if self._healing else 0

    @property
    def reconciles_completed(self) -> int:
        return self._healing.reconciles if self._healing else 0

    def channels(self) -> list[bytes]:
        """The keyspace patterns of the rules (the cutover's marker pattern is subscribed on its own)."""
        return [self._prefix + glob for glob in self._rules.globs()]

    def run(self, stop: threading.Event, gap: str = GAP_START) -> None:
        """Capture until ``stop`` is set; then publish what is pending and flush the publisher.

        A lost subscription is retried with backoff until ``stop``; every (re)subscription is a gap, the first one
        counted with reason ``gap``.
        """
        reason = gap
        first, cap = self._config.reconnect_backoff_s
        backoff = retry.Backoff(replace(retry.REDIS_SUBSCRIPTION, base_s=first, cap_s=cap), stop=stop)
        if self._healing:
            self._healing.start(stop)
        try:
            while not stop.is_set():
                pubsub = self._client.pubsub()
                try:
                    self._prepare(self._client)
                    self._subscribe(pubsub)
                    # A restart or failover also drops the subscription: say which it was.
                    self._gap(self._unannounced() or reason)
                    backoff.reset()
                    self._loop(pubsub, stop)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    reason = "disconnect"
                    self.subscribed.clear()
                    backoff.wait(exc, node=self.node)
                finally:
                    self.subscribed.clear()
                    pubsub.close()
        finally:
            if self._healing:
                self._healing.join()
            self._publisher.flush()
        if self._healing and self._healing.error is not None:
            raise self._healing.error

    def _unannounced(self) -> str | None:
        """Read INFO; the reason of an unannounced change since the last reading, if any."""
        self._watch_due = time.monotonic() + self._config.watch_interval_s
        try:
            marks = read_marks(self._client)
        except redis.ResponseError as exc:  # INFO refused (a renamed command, a restrictive ACL): warn once
            log.warning("cannot read INFO; FLUSHDB, SWAPDB and restarts will not be detected",
                        extra={"kv": {"node": self.node, "error": str(exc)}})
            self._watch_due = float("inf")
            return None
        reason = unannounced_change(self._marks, marks)
        self._marks = marks
        return reason

    def _gap(self, reason: str) -> None:
        metrics.NOTIFICATION_GAPS.labels(node=self.node, reason=reason).inc()
        channels = [c.decode("utf-8", "replace") for c in self.channels()]
        log.info("subscribed; a gap: changes since the last subscription or INFO reading were not announced",
                 extra={"kv": {"node": self.node, "db": self.db, "gap": reason,
                               "resnapshot": self._healing is not None, "channels": channels}})
        if self._healing:
            self._healing.request(reason)

    def _subscribe(self, pubsub: redis.client.PubSub) -> None:
        _confirmed(pubsub, self.channels(), self.node)
        self._subscribe_markers(pubsub)
        self.subscribed.set()

    def _subscribe_markers(self, pubsub: redis.client.PubSub) -> None:
        """Subscribe to the cutover's markers, apart from the rules' patterns: a user whose ACL predates the cutover
        (no ``&__keyspace@<db>__:__replicator:mark:*``) still replicates; only a switch cannot finish (it says why),
        and this says once how to grant it."""
        pattern = self._prefix + MARK_PREFIX + b"*"
        try:
            _confirmed(pubsub, [pattern], self.node)
        except redis.exceptions.NoPermissionError as exc:
            pubsub.punsubscribe(pattern)  # else redis-py would subscribe it again after a reconnect
            if not self._markers_refused:
                log.warning("the cutover's marker channel is refused; replication goes on, but a cutover switch "
                            "cannot finish until the user may subscribe to it and delete the markers (replicator "
                            "preflight --acl prints the rules)",
                            extra={"kv": {"node": self.node, "channel": pattern.decode(), "error": str(exc)}})
            self._markers_refused = True

    def _loop(self, pubsub: redis.client.PubSub, stop: threading.Event) -> None:
        pending: dict[bytes, None] = {}  # insertion-ordered set
        window = self._config.coalesce_ms / 1000
        batch_size = self._config.batch_size
        first_at = 0.0
        prefix = len(self._prefix)
        mark = self._prefix + MARK_PREFIX
        while not stop.is_set():
            timeout = 0.1 if not pending else max(0.0, first_at + window - time.monotonic())
            channel = _next_channel(pubsub, timeout)
            while channel is not None:
                if channel.startswith(mark):
                    self._acknowledge(channel[prefix:], pending)
                elif channel:
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
            if time.monotonic() >= self._watch_due and (reason := self._unannounced()) is not None:
                self._gap(reason)
            if self._healing and self._healing.error is not None:
                return  # run() raises it
        if pending:
            self.capture(list(pending), Origin.LIVE)

    def _acknowledge(self, marker: bytes, pending: dict[bytes, None]) -> None:
        """A cutover switch's marker (``Cutover.switch`` writes one to every primary): every change this node
        announced before it is published and acknowledged once the marker is gone, so the switch can note its
        watermark after it. A refused DEL (an ACL without write access to the markers) is logged, not fatal: the
        marker expires by itself and the switch gives up, saying which listener did not take it."""
        if pending:
            self.capture(list(pending), Origin.LIVE)
            pending.clear()
        self._publisher.flush()
        try:
            self._client.delete(marker)
        except redis.exceptions.NoPermissionError as exc:
            log.warning("cannot delete the cutover's marker: the switch waiting for it will give up (replicator "
                        "preflight --acl prints the rules the user needs)",
                        extra={"kv": {"node": self.node, "marker": marker.decode("utf-8", "replace"),
                                      "error": str(exc)}})

    def capture(self, keys: list[bytes], origin: Origin) -> int:
        return self._capture.capture(keys, origin)

    def rescan(self, should_stop: Callable[[], bool]) -> tuple[int, int]:
        """Re-snapshot this node (SCAN it, publish every captured key); returns (keys scanned, events published)."""
        return self._resnapshot(self._client, self._capture, should_stop)

    def flush(self) -> None:
        """Wait until Kafka acknowledged everything published so far (raises BrokerError for any it did not)."""
        self._publisher.flush()


class Listener(NodeListener):
    """The listener of a single server: it creates its publisher, so it closes it when :meth:`run` ends.

    ``new_publisher()`` is called here, while the stage is built, so that a Kafka that does not answer yet fails the
    build (which the CLI retries while reporting not-ready) rather than the run.
    """

    def __init__(self, client: redis.Redis, new_publisher: Callable[[], EventPublisher], config: CaptureConfig,
                 node: str, db: int, collaborators: Collaborators) -> None:
        super().__init__(client, new_publisher(), config, node, db, collaborators)

    def run(self, stop: threading.Event, gap: str = GAP_START) -> None:
        try:
            super().run(stop, gap)
        finally:
            self._publisher.close()


def _confirmed(pubsub: redis.client.PubSub, patterns: list[bytes], node: str) -> None:
    """PSUBSCRIBE ``patterns`` and wait (10 s at most) until Redis confirmed every one (or refused them)."""
    pubsub.psubscribe(*patterns)
    confirmed = 0
    deadline = time.monotonic() + 10
    while confirmed < len(patterns):
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "psubscribe":
            confirmed += 1
        if time.monotonic() > deadline:
            raise SourceError(f"Redis {node} did not confirm the keyspace subscription within 10s")


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


class _Healed(Protocol):
    """All that healing uses of its listener."""

    node: str

    def rescan(self, should_stop: Callable[[], bool]) -> tuple[int, int]: ...

    def capture(self, keys: list[bytes], origin: Origin) -> int: ...

    def flush(self) -> None: ...


class _Healing:
    """Heals gaps in the background: re-snapshot at once, reconcile once the gap's watermark is committed.

    A gap while one is being healed starts it over (its watermark is later, so it covers both). A failure to publish
    is kept in ``error`` and stops the listener (its restart is a gap); Redis or Kafka not answering is retried.
    """

    def __init__(self, listener: _Healed, reconciler: Reconciler | None, batch_size: int) -> None:
        self._listener = listener
        self._reconciler = reconciler
        self._batch_size = batch_size
        self._requested = threading.Event()
        self._reason = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.resnapshots = 0
        self.reconciles = 0
        self.error: BaseException | None = None

    def start(self, stop: threading.Event) -> None:
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name=f"heal-{self._listener.node}", daemon=True)
        self._thread.start()

    def request(self, reason: str) -> None:
        self._reason = reason
        self._requested.set()

    def join(self) -> None:
        if self._thread is not None:
            self._requested.set()  # wake it so it sees stop
            self._thread.join(60)

    def _superseded(self) -> bool:
        return self._stop.is_set() or self._requested.is_set()

    def _pause(self, seconds: float) -> bool:
        """Wait; True when the wait should end early (stop, or a newer gap)."""
        return self._stop.wait(seconds) or self._requested.is_set()

    def _run(self) -> None:
        stop = self._stop
        backoff = retry.Backoff(retry.GAP_HEALING, stop=stop)
        while not stop.is_set():
            self._requested.wait()
            if stop.is_set():
                return
            self._requested.clear()
            try:
                self._heal(self._reason)
                backoff.reset()
            except ReplicatorError as exc:
                if not exc.retryable:  # an event Kafka did not take: the listener must not run on past it
                    self.error = exc
                    return
                self._retry(backoff, exc)
            except Exception as exc:  # Redis, DynamoDB or Kafka not answering: heal again from the start
                self._retry(backoff, exc)

    def _retry(self, backoff: retry.Backoff, exc: Exception) -> None:
        self._requested.set()
        backoff.wait(exc, node=self._listener.node)

    def _heal(self, reason: str) -> None:
        listener = self._listener
        node = listener.node
        watermark = None
        if self._reconciler is not None:
            # Everything read before the gap is then below the watermark (see capture/reconcile.py).
            listener.flush()
            watermark = self._reconciler.note(node, reason)
        scanned, published = listener.rescan(self._superseded)
        if self._superseded():
            return
        self.resnapshots += 1
        log.info("re-snapshot done", extra={"kv": {"node": node, "gap": reason, "keys_scanned": scanned,
                                                   "events_published": published}})
        if self._reconciler is None or watermark is None:
            metrics.GAP_RESNAPSHOTS.labels(node=node).inc()
            return
        if not self._reconciler.wait(node, watermark, self._superseded, self._pause):
            return
        reconciled = 0
        for batch in batches(self._reconciler.live_keys(), self._batch_size):
            listener.capture(batch, Origin.SNAPSHOT)
            reconciled += len(batch)
            if self._superseded():
                return
        listener.flush()
        self._reconciler.done(node)
        self.reconciles += 1
        metrics.GAP_RESNAPSHOTS.labels(node=node).inc()
        log.info("reconcile done", extra={"kv": {"node": node, "gap": reason, "keys_reconciled": reconciled,
                                                 "waited_s": round(time.time() - watermark.noted_at, 1)}})
