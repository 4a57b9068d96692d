"""The live listener: keyspace notifications → coalesced atomic reads → published change events."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from replicator import metrics, retry
from replicator.adapters.kafka.producer import EventPublisher
from replicator.adapters.redis.client import UNAVAILABLE, Node, NoPermission, Refused
from replicator.adapters.redis.reader import KeyCapture
from replicator.adapters.redis.subscription import KeyspaceSubscription, keyspace_patterns
from replicator.capture.healing import Healing
from replicator.capture.reconcile import Reconciler
from replicator.capture.watch import ServerMarks, read_marks, unannounced_change
from replicator.core.config import CaptureConfig
from replicator.core.cutover import MARK_PREFIX
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

    def __call__(self, client: Node, capture: KeyCapture,
                 should_stop: Callable[[], bool]) -> tuple[int, int]: ...


def _unprepared(client: Node) -> None:
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
    prepare: Callable[[Node], object] = _unprepared


class NodeListener:
    """Captures one Redis node (one db), publishing to a publisher it borrows: it flushes it, never closes it.

    Notifications only say *that* a key changed; the key is then read with its version. Notifications for the same
    key that arrive within ``coalesce_ms`` (or before the pending batch is read) cost one read: the read happens after
    all of them, so it sees the latest state. Ordering per key follows from one thread reading and publishing in
    order; ordering per owner from the Kafka key.

    Keyspace notifications are fire-and-forget: whatever changed while the listener was not subscribed (before it
    started, while the connection was down), and whatever no notification announces (FLUSHDB, SWAPDB, a restart; see
    capture/watch.py), is a *gap*: counted by reason, then healed in the background while live capture goes on
    (:mod:`replicator.capture.healing`: a re-snapshot publishes what exists, and a reconcile, once the appliers
    have applied everything published before the gap, turns keys deleted during the gap into DELETE events).
    """

    def __init__(self, client: Node, publisher: EventPublisher, config: CaptureConfig, node: str, db: int,
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
        self.subscribed = threading.Event()
        self._resnapshot = collaborators.resnapshot
        self._healing = (Healing(self, collaborators.reconciler, config.batch_size) if config.resnapshot_on_gap
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
        return keyspace_patterns(self.db, self._rules.globs())

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
                subscription = KeyspaceSubscription(self._client, self.db, self._rules.globs(), MARK_PREFIX,
                                                    self.node)
                try:
                    self._prepare(self._client)
                    self._subscribe(subscription)
                    # A restart or failover also drops the subscription: say which it was.
                    self._gap(self._unannounced() or reason)
                    backoff.reset()
                    self._loop(subscription, stop)
                except UNAVAILABLE as exc:
                    reason = "disconnect"
                    self.subscribed.clear()
                    backoff.wait(exc, node=self.node)
                finally:
                    self.subscribed.clear()
                    subscription.close()
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
        except Refused as exc:  # INFO refused (a renamed command, a restrictive ACL): warn once
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

    def _subscribe(self, subscription: KeyspaceSubscription) -> None:
        """Subscribe the rules' patterns, then the cutover's markers apart from them: a user whose ACL predates the
        cutover (no ``&__keyspace@<db>__:__replicator:mark:*``) still replicates; only a switch cannot finish (it
        says why), and this says once how to grant it."""
        subscription.subscribe()
        refused = subscription.subscribe_markers()
        if refused is not None:
            if not self._markers_refused:
                log.warning("the cutover's marker channel is refused; replication goes on, but a cutover switch "
                            "cannot finish until the user may subscribe to it and delete the markers (replicator "
                            "preflight --acl prints the rules)",
                            extra={"kv": {"node": self.node, "channel": subscription.marker_pattern.decode(),
                                          "error": str(refused)}})
            self._markers_refused = True
        self.subscribed.set()

    def _loop(self, subscription: KeyspaceSubscription, stop: threading.Event) -> None:
        pending: dict[bytes, None] = {}  # insertion-ordered set
        window = self._config.coalesce_ms / 1000
        batch_size = self._config.batch_size
        first_at = 0.0
        while not stop.is_set():
            timeout = 0.1 if not pending else max(0.0, first_at + window - time.monotonic())
            announced = subscription.next_keys(timeout, batch_size - len(pending))
            if announced.keys:
                if not pending:
                    first_at = time.monotonic()
                pending.update(announced.keys)
            if announced.marker is not None:
                self._acknowledge(announced.marker, pending)
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
        except NoPermission as exc:
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

    def __init__(self, client: Node, new_publisher: Callable[[], EventPublisher], config: CaptureConfig,
                 node: str, db: int, collaborators: Collaborators) -> None:
        super().__init__(client, new_publisher(), config, node, db, collaborators)

    def run(self, stop: threading.Event, gap: str = GAP_START) -> None:
        try:
            super().run(stop, gap)
        finally:
            self._publisher.close()
