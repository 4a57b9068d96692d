"""Capture from a Redis Cluster: one listener per primary, following the topology.

Keyspace notifications are node-local, so every primary gets its own subscription (a listener on one node sees
only its own slots' changes). Keys are read through the cluster client, which routes each read to the key's
current owner, so a notification raised by a node that has just handed its slot over still reads the right state.

The primaries are listed again every ``capture.topology_refresh_s`` (and whenever a node listener fails): a new
primary (failover, added node) gets a listener, whose start is a gap followed by a re-snapshot of that node; a
primary that is gone has its listener stopped. Every change of the subscription set is counted as a gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from replicator.adapters.kafka.producer import EventPublisher
from replicator.adapters.redis.client import Client
from replicator.adapters.redis.cluster import reload_slots, slot_primaries
from replicator.capture.listener import GAP_START, GAP_TOPOLOGY, Collaborators, NodeListener
from replicator.core import failures
from replicator.core.config import CaptureConfig
from replicator.core.errors import SourceError

log = logging.getLogger(__name__)


@dataclass
class _Node:
    listener: NodeListener
    stop: threading.Event
    thread: threading.Thread
    error: BaseException | None = None


class _AllSubscribed:
    """``is_set()`` while every primary's listener is subscribed (what /readyz reports)."""

    def __init__(self, owner: ClusterListener) -> None:
        self._owner = owner

    def is_set(self) -> bool:
        nodes = list(self._owner._nodes.values())
        return bool(nodes) and all(n.listener.subscribed.is_set() for n in nodes)


class ClusterListener:
    """The node listeners of every primary, sharing one publisher: created here, lent to them, closed by :meth:`run`.

    ``new_publisher()`` is called while the stage is built, so that a Kafka that does not answer yet fails the build
    (which the CLI retries while reporting not-ready) rather than the run.
    """

    def __init__(self, cluster: Client, new_publisher: Callable[[], EventPublisher], config: CaptureConfig,
                 node_client: Callable[[str, int], Any], collaborators: Collaborators) -> None:
        """``node_client(host, port)``: a client of one node for its subscription and re-snapshots, independent of
        the cluster client (whose connections it may reset when the slot map changes)."""
        self._cluster = cluster
        self._node_client = node_client
        self._config = config
        self._collaborators = collaborators
        self._publisher = new_publisher()
        self._nodes: dict[str, _Node] = {}
        self._wake = threading.Event()
        self._started = False  # after the first listing, a new primary is a topology change
        self.subscribed = _AllSubscribed(self)

    @property
    def nodes(self) -> list[str]:
        return sorted(self._nodes)

    @property
    def resnapshots_completed(self) -> int:
        """Re-snapshots every current primary has completed (the smallest count)."""
        return min((n.listener.resnapshots_completed for n in self._nodes.values()), default=0)

    @property
    def reconciles_completed(self) -> int:
        return min((n.listener.reconciles_completed for n in self._nodes.values()), default=0)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self._follow_topology(stop)
                failed = [(name, n.error) for name, n in self._nodes.items() if n.error is not None]
                if failed:
                    name, error = failed[0]
                    # One line for the user (the CLI prints ReplicatorErrors), whatever the node's error was.
                    why = " ".join(failures.describe(error).split())
                    raise SourceError(f"listener of primary {name} failed: {why}") from error
                deadline = time.monotonic() + self._config.topology_refresh_s
                while not (stop.is_set() or self._wake.is_set()) and time.monotonic() < deadline:
                    stop.wait(0.2)
                self._wake.clear()
        finally:
            for node in self._nodes.values():
                node.stop.set()
            for node in self._nodes.values():
                node.thread.join(60)
            self._publisher.close()

    def _follow_topology(self, stop: threading.Event) -> None:
        """Primaries owning slots now (CLUSTER SLOTS from any node); the slot map is reloaded only on a change."""
        try:
            current = slot_primaries(self._cluster)
        except Exception as exc:  # the cluster is failing over: keep what runs, try again at the next refresh
            log.warning("cannot list the cluster's primaries", extra={"kv": {"error": str(exc)[:200]}})
            return
        if set(current) != set(self._nodes):
            reload_slots(self._cluster)
        for name in [n for n in self._nodes if n not in current]:
            log.info("primary gone; stopping its listener", extra={"kv": {"node": name}})
            node = self._nodes.pop(name)
            node.stop.set()
            node.thread.join(60)
        for name, (host, port) in current.items():
            if name not in self._nodes and not stop.is_set():
                self._start(name, self._node_client(host, port))
        self._started = True

    def _start(self, name: str, client: Any) -> None:
        # This node's share of the keys DynamoDB holds.
        reconciler = self._collaborators.reconciler
        if reconciler is not None:
            reconciler = reconciler.scoped(lambda k: self._cluster.get_node_from_key(k).name == name)
        listener = NodeListener(client, self._publisher, self._config, name, 0,
                                replace(self._collaborators, reconciler=reconciler), read_client=self._cluster)
        gap = GAP_TOPOLOGY if self._started else GAP_START
        node_stop = threading.Event()

        def body() -> None:
            try:
                listener.run(node_stop, gap)
            except BaseException as exc:
                self._nodes[name].error = exc
                self._wake.set()

        thread = threading.Thread(target=body, name=f"listener-{name}", daemon=True)
        self._nodes[name] = _Node(listener, node_stop, thread)  # run() stops them all when it ends
        thread.start()
        log.info("listening to primary", extra={"kv": {"node": name}})
