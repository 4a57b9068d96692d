"""Gap healing's phases in memory, with a fake listener and reconciler: the order of the phases, a newer gap
starting over, healing without a reconciler, and what a failure does. tests/integration/test_gaps.py heals real
gaps (FLUSHDB, restarts, disconnects) end to end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import pytest

from replicator import retry
from replicator.capture.healing import Healing, Phase
from replicator.core.errors import BrokerError, SourceError
from replicator.core.events import Origin
from replicator.core.watermark import Watermark


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class Listener:
    node = "redis-a:6379"

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.captured: list[tuple[list[bytes], Origin]] = []
        #: Called inside rescan (a test injects a newer gap or a failure there).
        self.during_rescan: Callable[[], None] = lambda: None

    def rescan(self, should_stop: Callable[[], bool]) -> tuple[int, int]:
        self.steps.append("rescan")
        self.during_rescan()
        return 3, 3

    def capture(self, keys: list[bytes], origin: Origin) -> int:
        self.captured.append((keys, origin))
        return len(keys)

    def flush(self) -> None:
        self.steps.append("flush")


class Reconciler:
    def __init__(self, listener: Listener, keys: list[bytes]) -> None:
        self._listener = listener
        self._keys = keys
        self.noted: list[str] = []
        self.finished = 0
        #: The wait returns once this is set (the appliers committed past the watermark).
        self.committed = threading.Event()

    def note(self, node: str, reason: str) -> Watermark:
        self._listener.steps.append(f"note:{reason}")
        self.noted.append(reason)
        return Watermark({0: 10})

    def wait(self, node: str, watermark: Watermark, cancelled: Callable[[], bool],
             pause: Callable[[float], bool]) -> bool:
        self._listener.steps.append("wait")
        while not self.committed.is_set():
            if cancelled() or pause(0.01):
                return False
        return True

    def live_keys(self) -> Iterable[bytes]:
        self._listener.steps.append("reconcile")
        return iter(self._keys)

    def done(self, node: str) -> None:
        self.finished += 1


@pytest.fixture
def stop():
    stop = threading.Event()
    yield stop
    stop.set()


def test_a_gap_is_flushed_noted_rescanned_waited_for_and_reconciled_in_that_order(stop):
    listener = Listener()
    reconciler = Reconciler(listener, [b"k%d" % i for i in range(5)])
    healing = Healing(listener, reconciler, batch_size=2)
    healing.start(stop)
    healing.request("flush")
    _until(lambda: healing.phase is Phase.WAIT)
    assert healing.resnapshots == 1 and healing.reconciles == 0  # waits for the appliers before reconciling
    reconciler.committed.set()
    _until(lambda: healing.reconciles == 1 and healing.phase is Phase.IDLE)
    assert listener.steps == ["flush", "note:flush", "rescan", "wait", "reconcile", "flush"]
    assert listener.captured == [([b"k0", b"k1"], Origin.SNAPSHOT), ([b"k2", b"k3"], Origin.SNAPSHOT),
                                 ([b"k4"], Origin.SNAPSHOT)]
    assert reconciler.finished == 1 and healing.error is None


def test_a_newer_gap_while_healing_starts_over_with_a_later_watermark_and_the_first_never_reconciles(stop):
    listener = Listener()
    reconciler = Reconciler(listener, [b"k"])
    healing = Healing(listener, reconciler, batch_size=10)
    gaps = ["disconnect"]
    listener.during_rescan = lambda: healing.request(gaps.pop()) if gaps else None
    reconciler.committed.set()
    healing.start(stop)
    healing.request("start")
    _until(lambda: healing.reconciles == 1 and healing.phase is Phase.IDLE)
    assert reconciler.noted == ["start", "disconnect"]
    assert listener.steps == ["flush", "note:start", "rescan",  # superseded during the rescan: not counted
                              "flush", "note:disconnect", "rescan", "wait", "reconcile", "flush"]
    assert healing.resnapshots == 1 and reconciler.finished == 1


def test_without_a_reconciler_healing_is_the_rescan_alone(stop):
    listener = Listener()
    healing = Healing(listener, None, batch_size=10)
    healing.start(stop)
    healing.request("restart")
    _until(lambda: healing.resnapshots == 1 and healing.phase is Phase.IDLE)
    assert listener.steps == ["rescan"] and listener.captured == []


def test_a_service_not_answering_is_healed_again_from_the_start_and_a_refused_event_ends_healing(stop, monkeypatch):
    monkeypatch.setattr(retry, "GAP_HEALING", replace(retry.GAP_HEALING, base_s=0.001, cap_s=0.001))
    listener = Listener()
    failures: list[Exception] = [SourceError("Redis away", retryable=True)]

    def fail() -> None:
        if failures:
            raise failures.pop()

    listener.during_rescan = fail
    healing = Healing(listener, None, batch_size=10)
    healing.start(stop)
    healing.request("disconnect")
    _until(lambda: healing.resnapshots == 1)
    assert listener.steps == ["rescan", "rescan"] and healing.error is None

    failures.append(BrokerError("Kafka refused an event", retryable=False))
    healing.request("flush")
    _until(lambda: healing.error is not None)
    assert str(healing.error) == "Kafka refused an event" and healing.resnapshots == 1
