"""Healing a notification gap, as a state machine with named phases.

Keyspace notifications are fire-and-forget: what changed while a listener was not subscribed, and what no
notification announces (FLUSHDB, SWAPDB, a restart), is a *gap*. The listener reports one with :meth:`request`;
healing runs in its own thread while live capture goes on (safe because events are versioned states):

1. ``FLUSH``: everything read before the gap is published and acknowledged,
2. ``NOTE_WATERMARK``: so it lies below the change topic's end offsets noted now (capture/reconcile.py),
3. ``RESCAN``: the node is re-snapshotted: every key that exists is published,
4. ``WAIT``: until the applier group has committed past the watermark, so DynamoDB holds all of it,
5. ``RECONCILE``: every key DynamoDB still holds for the node is read again, which publishes the keys deleted
   during the gap as DELETE events (a SCAN cannot see them),

then ``IDLE``. Without a reconciler (no group to wait for) healing is the re-snapshot alone. A newer gap in any
phase starts over from ``FLUSH``: its watermark is later, so it covers both. A failure to publish (Kafka refused an
event) is kept in :attr:`Healing.error` and ends healing, and the listener with it (its restart is a gap); Redis,
DynamoDB or Kafka not answering is retried from the start with backoff.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from replicator import metrics, retry
from replicator.core.batching import batches
from replicator.core.errors import ReplicatorError
from replicator.core.events import Origin
from replicator.core.watermark import Watermark

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    IDLE = "idle"
    FLUSH = "flush"
    NOTE_WATERMARK = "note_watermark"
    RESCAN = "rescan"
    WAIT = "wait"
    RECONCILE = "reconcile"


class Healed(Protocol):
    """All that healing uses of its listener."""

    node: str

    def rescan(self, should_stop: Callable[[], bool]) -> tuple[int, int]: ...

    def capture(self, keys: list[bytes], origin: Origin) -> int: ...

    def flush(self) -> None: ...


class Reconciles(Protocol):
    """All that healing uses of a :class:`~replicator.capture.reconcile.Reconciler`."""

    def note(self, node: str, reason: str) -> Watermark: ...

    def wait(self, node: str, watermark: Watermark, cancelled: Callable[[], bool],
             pause: Callable[[float], bool]) -> bool: ...

    def live_keys(self) -> Iterable[bytes]: ...

    def done(self, node: str) -> None: ...


class Healing:
    """Heals one listener's gaps in a background thread: :meth:`start`, :meth:`request` per gap, :meth:`join`."""

    def __init__(self, listener: Healed, reconciler: Reconciles | None, batch_size: int) -> None:
        self._listener = listener
        self._reconciler = reconciler
        self._batch_size = batch_size
        self._requested = threading.Event()
        self._reason = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        #: The phase the healing thread is in (read from other threads: status, tests).
        self.phase = Phase.IDLE
        self.resnapshots = 0
        self.reconciles = 0
        self.error: BaseException | None = None

    def start(self, stop: threading.Event) -> None:
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name=f"heal-{self._listener.node}", daemon=True)
        self._thread.start()

    def request(self, reason: str) -> None:
        """A gap: heal it (starting over if a heal is under way)."""
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
            finally:
                self.phase = Phase.IDLE

    def _retry(self, backoff: retry.Backoff, exc: Exception) -> None:
        self._requested.set()
        backoff.wait(exc, node=self._listener.node)

    def _heal(self, reason: str) -> None:
        """One pass through the phases; returns early (to start over) when superseded."""
        node = self._listener.node
        watermark = None
        if self._reconciler is not None:
            self.phase = Phase.FLUSH
            self._listener.flush()
            self.phase = Phase.NOTE_WATERMARK
            watermark = self._reconciler.note(node, reason)
        self.phase = Phase.RESCAN
        scanned, published = self._listener.rescan(self._superseded)
        if self._superseded():
            return
        self.resnapshots += 1
        log.info("re-snapshot done", extra={"kv": {"node": node, "gap": reason, "keys_scanned": scanned,
                                                   "events_published": published}})
        if self._reconciler is None or watermark is None:
            metrics.GAP_RESNAPSHOTS.labels(node=node).inc()
            return
        self.phase = Phase.WAIT
        if not self._reconciler.wait(node, watermark, self._superseded, self._pause):
            return
        self.phase = Phase.RECONCILE
        reconciled = self._reconcile()
        if reconciled is None:
            return
        self._reconciler.done(node)
        self.reconciles += 1
        metrics.GAP_RESNAPSHOTS.labels(node=node).inc()
        log.info("reconcile done", extra={"kv": {"node": node, "gap": reason, "keys_reconciled": reconciled,
                                                 "waited_s": round(time.time() - watermark.noted_at, 1)}})

    def _reconcile(self) -> int | None:
        """Read again every key DynamoDB holds live for the node; how many, or None when superseded."""
        assert self._reconciler is not None
        reconciled = 0
        for batch in batches(self._reconciler.live_keys(), self._batch_size):
            self._listener.capture(batch, Origin.SNAPSHOT)
            reconciled += len(batch)
            if self._superseded():
                return None
        self._listener.flush()
        return reconciled
