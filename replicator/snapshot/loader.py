"""The snapshot loader: SCAN the keyspace and publish every key's state with origin SNAPSHOT.

Safe to run at any time, also while the listener runs: snapshot events carry versions read the same way as live ones,
so whichever state is newer wins in DynamoDB whatever order the two arrive in (the snapshot/live race cannot lose a
change).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from replicator import metrics
from replicator.adapters.kafka.producer import EventPublisher
from replicator.adapters.redis.client import Node, nodes
from replicator.adapters.redis.cluster import dbsize
from replicator.adapters.redis.reader import KeyCapture, Reading
from replicator.core.batching import batches
from replicator.core.config import CaptureConfig
from replicator.core.events import Origin
from replicator.core.mapping import RuleSet
from replicator.core.ratelimit import RateLimiter
from replicator.snapshot.checkpoints import Checkpoints, Position

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotReport:
    keys_scanned: int
    events_published: int
    seconds: float


#: Where a node's scan starts without a checkpoint.
BEGINNING = Position(0, 0)


def scan_node(conn: Node, globs: tuple[bytes, ...], capture: KeyCapture, batch_size: int = 500,
              scan_count: int = 1000, start: Position = BEGINNING,
              should_stop: Callable[[], bool] = lambda: False, limiter: RateLimiter | None = None,
              on_scan: Callable[[int, int, int], None] = lambda index, cursor, n: None) -> tuple[int, int]:
    """SCAN one node for each glob from ``start`` and capture what it finds with origin SNAPSHOT.

    ``on_scan(glob index, cursor, keys)`` runs after every SCAN call's keys are captured (cursor 0: that glob is
    done). Stops after the SCAN call during which ``should_stop`` became true. Returns (keys scanned, events).
    """
    scanned = published = 0
    if start.glob >= len(globs):
        return scanned, published

    def fetch(index: int, cursor: int) -> tuple[int, int, list[bytes], Reading]:
        cursor, keys = conn.scan(cursor=cursor, match=globs[index], count=scan_count)
        return index, cursor, keys, capture.read(keys)

    # The next SCAN page is read while this one is published: Redis works while Python encodes and sends.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan-ahead") as ahead:
        page = ahead.submit(fetch, start.glob, start.cursor)
        while page is not None:
            index, cursor, keys, reading = page.result()
            following = (index, cursor) if cursor != 0 else (index + 1, 0) if index + 1 < len(globs) else None
            page = ahead.submit(fetch, *following) if following is not None and not should_stop() else None
            for states in batches(reading.states, batch_size):
                if limiter is not None:
                    limiter.take(len(states))
                published += capture.publish(Reading(states, reading.read_at_us), Origin.SNAPSHOT)
            scanned += len(keys)
            on_scan(index, cursor, len(keys))
            if page is None or (cursor != 0 and should_stop()):
                break
    return scanned, published


def scan_and_capture(client: Node, rules: RuleSet, capture: KeyCapture, batch_size: int = 500,
                     scan_count: int = 1000, should_stop: Callable[[], bool] = lambda: False) -> tuple[int, int]:
    """The listener's re-snapshot of its node after a gap: :func:`scan_node` with the snapshot metrics."""
    estimate = max(1, dbsize(client))
    done = [0]

    def count(_index: int, _cursor: int, n: int) -> None:
        done[0] += n
        metrics.SNAPSHOT_KEYS.inc(n)
        metrics.SNAPSHOT_PROGRESS.set(min(1.0, done[0] / estimate))

    result = scan_node(client, rules.globs(), capture, batch_size, scan_count, should_stop=should_stop, on_scan=count)
    if not should_stop():
        metrics.SNAPSHOT_PROGRESS.set(1.0)
    return result


class SnapshotLoader:
    """SCAN every primary (in parallel on a cluster), publish each key's state, checkpoint, resume.

    With ``checkpoints``, each node's SCAN position is saved every ``checkpoint_every`` keys, after Kafka
    acknowledged what came before; ``run(resume=True)`` continues from there (nodes that finished are skipped).

    The loader creates its publisher (``new_publisher()``, here, so a Kafka that does not answer fails at once) and
    closes it when :meth:`run` ends: one loader, one run.
    """

    def __init__(self, client: Any, rules: RuleSet, new_publisher: Callable[[], EventPublisher], node: str,
                 db: int = 0, config: CaptureConfig | None = None, scan_count: int = 1000,
                 checkpoints: Checkpoints | None = None, max_keys_per_second: float | None = None,
                 checkpoint_every: int = 10_000) -> None:
        self._config = config or CaptureConfig()
        self._client = client
        self._rules = rules
        self._publisher = new_publisher()
        self._node, self._db = node, db
        self._scan_count = scan_count
        self._checkpoints = checkpoints
        self._limiter = RateLimiter(max_keys_per_second)
        self._checkpoint_every = checkpoint_every
        self._lock = threading.Lock()
        self._estimate: int | None = None

    def nodes(self) -> list[tuple[str, Any]]:
        return nodes(self._client, self._node)

    def keys_estimate(self) -> int:
        """Keys in the database (DBSIZE over every primary), read once: the denominator of progress."""
        if self._estimate is None:
            self._estimate = max(1, dbsize(self._client))
        return self._estimate

    def run(self, stop: threading.Event | None = None, resume: bool = False,
            progress: Callable[[int, str], None] | None = None) -> SnapshotReport:
        """Publish every captured key and wait for Kafka to acknowledge all of them."""
        stop = stop or threading.Event()
        started = time.monotonic()
        if self._checkpoints is not None and not resume:
            self._checkpoints.clear()
        estimate = self.keys_estimate()
        done = [0]

        def count(n: int) -> None:
            metrics.SNAPSHOT_KEYS.inc(n)
            with self._lock:
                done[0] += n
                total = done[0]
            metrics.SNAPSHOT_PROGRESS.set(min(1.0, total / estimate))
            if progress is not None:
                progress(total, "")

        nodes = self.nodes()
        try:
            with ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix="snapshot") as pool:
                results = list(pool.map(lambda n: self._scan_node(n[0], n[1], stop, resume, count), nodes))
        finally:
            self._publisher.close()
        scanned, published = sum(r[0] for r in results), sum(r[1] for r in results)
        if stop.is_set():
            log.warning("snapshot interrupted; run it again with --resume", extra={"kv": {"keys_scanned": scanned}})
        else:
            metrics.SNAPSHOT_PROGRESS.set(1.0)
        report = SnapshotReport(scanned, published, time.monotonic() - started)
        log.info("snapshot done", extra={"kv": {"keys_scanned": scanned, "events_published": published,
                                                "nodes": len(nodes), "seconds": round(report.seconds, 2)}})
        return report

    def _scan_node(self, name: str, conn: Any, stop: threading.Event, resume: bool,
                   count: Callable[[int], None]) -> tuple[int, int]:
        """One node, checkpointed every ``checkpoint_every`` keys, at each glob's end, and when stopped."""
        start = self._checkpoints.load(name) if self._checkpoints is not None and resume else None
        capture = KeyCapture(self._client, self._rules, self._publisher, name, self._db, self._config)
        since_save = [0]

        def on_scan(index: int, cursor: int, n: int) -> None:
            count(n)
            since_save[0] += n
            if self._checkpoints is not None and (since_save[0] >= self._checkpoint_every or cursor == 0
                                                  or stop.is_set()):
                self._publisher.flush()  # only what Kafka has may be skipped on resume
                self._checkpoints.save(name, Position(index + 1, 0) if cursor == 0 else Position(index, cursor))
                since_save[0] = 0

        return scan_node(conn, self._rules.globs(), capture, self._config.batch_size, self._scan_count,
                         start or BEGINNING, stop.is_set, self._limiter, on_scan)
