"""Capture's ownership: whoever creates the publisher closes it, once; a failing node is one line. (Where capture
sits in the import graph is checked package-wide by test_architecture.py.)

Run without any service: the Redis clients, the cluster and the publisher are fakes.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from replicator.capture import cluster_listener
from replicator.capture.cluster_listener import ClusterListener
from replicator.capture.listener import GAP_START, GAP_TOPOLOGY, Collaborators, Listener
from replicator.core.config import CaptureConfig
from replicator.core.errors import ReplicatorError, SourceError
from replicator.snapshot.loader import SnapshotLoader
from tests.unit.rules import messaging


class FakePublisher:
    def __init__(self) -> None:
        self.flushes = 0
        self.closes = 0

    def publish(self, event: Any) -> None:
        raise AssertionError("nothing is published here")

    def reap(self) -> None:
        pass

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1

    def close(self, timeout: float = 30.0) -> None:
        self.closes += 1


class FakeRedis:
    """Enough of a redis.Redis for a listener or loader that reads nothing."""

    def register_script(self, script: str) -> Any:
        return lambda keys, args, client=None: []

    def dbsize(self) -> int:
        return 0

    def scan(self, cursor: int, match: bytes, count: int) -> tuple[int, list[bytes]]:
        return 0, []


def _nothing_to_rescan(client: Any, capture: Any, should_stop: Any) -> tuple[int, int]:
    return 0, 0


def _collaborators() -> Collaborators:
    return Collaborators(messaging(), _nothing_to_rescan)


def test_a_single_server_listener_closes_the_publisher_it_created_once():
    made: list[FakePublisher] = []

    def new_publisher() -> Any:
        made.append(FakePublisher())
        return made[-1]

    listener = Listener(FakeRedis(), new_publisher, CaptureConfig(), "redis:6379", 0,  # type: ignore[arg-type]
                        _collaborators())
    assert len(made) == 1  # created while the stage is built
    stop = threading.Event()
    stop.set()  # stopped before it subscribes: nothing but the end of run()
    listener.run(stop)
    assert made[0].closes == 1


def test_a_snapshot_loader_closes_the_publisher_it_created_once():
    publisher = FakePublisher()
    loader = SnapshotLoader(FakeRedis(), messaging(), lambda: publisher, "redis:6379")  # type: ignore[arg-type,return-value]
    report = loader.run()
    assert (report.keys_scanned, publisher.closes) == (0, 1)


class FakeCluster:
    def __init__(self, primaries: list[tuple[str, int]]) -> None:
        self._slots = {(i, i): {"primary": primary} for i, primary in enumerate(primaries)}
        self.nodes_manager = self

    def cluster_slots(self) -> dict[tuple[int, int], dict[str, tuple[str, int]]]:
        return self._slots

    def initialize(self) -> None:
        pass


class FailingNodeListener:
    """A node listener whose run fails the way a Redis client does, with a message over two lines."""

    runs: list[tuple[str, str]] = []

    def __init__(self, client: Any, publisher: Any, config: CaptureConfig, node: str, db: int,
                 collaborators: Collaborators, *, read_client: Any = None) -> None:
        self.node = node
        self.subscribed = threading.Event()
        self.resnapshots_completed = self.reconciles_completed = 0

    def run(self, stop: threading.Event, gap: str = GAP_START) -> None:
        FailingNodeListener.runs.append((self.node, gap))
        raise ConnectionError("Error 104 while reading from 10.0.0.1:7000\nConnection reset by peer")


def test_a_failing_node_listener_ends_the_cluster_listener_with_one_line(monkeypatch):
    monkeypatch.setattr(cluster_listener, "NodeListener", FailingNodeListener)
    FailingNodeListener.runs = []
    publisher = FakePublisher()
    listener = ClusterListener(FakeCluster([("10.0.0.1", 7000)]), lambda: publisher,  # type: ignore[arg-type,return-value]
                               CaptureConfig(), lambda host, port: object(), _collaborators())
    with pytest.raises(SourceError) as raised:
        listener.run(threading.Event())
    message = str(raised.value)
    assert isinstance(raised.value, ReplicatorError)  # what the CLI prints as one line, without a traceback
    assert "\n" not in message
    assert message == ("listener of primary 10.0.0.1:7000 failed: ConnectionError: Error 104 while reading from "
                       "10.0.0.1:7000 Connection reset by peer")
    assert FailingNodeListener.runs == [("10.0.0.1:7000", GAP_START)]
    assert publisher.closes == 1  # created by the cluster listener, lent to its nodes, closed by it alone


def test_a_primary_found_after_the_first_listing_opens_with_a_topology_gap(monkeypatch):
    monkeypatch.setattr(cluster_listener, "NodeListener", FailingNodeListener)
    FailingNodeListener.runs = []
    cluster = FakeCluster([("10.0.0.1", 7000)])
    listener = ClusterListener(cluster, FakePublisher, CaptureConfig(),  # type: ignore[arg-type]
                               lambda host, port: object(), _collaborators())
    listener._follow_topology(threading.Event())
    cluster._slots[(1, 1)] = {"primary": ("10.0.0.2", 7000)}
    listener._follow_topology(threading.Event())
    for node in listener._nodes.values():
        node.thread.join(5)
    assert sorted(FailingNodeListener.runs) == [("10.0.0.1:7000", GAP_START), ("10.0.0.2:7000", GAP_TOPOLOGY)]
