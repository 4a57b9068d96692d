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

import redis
from redis.cluster import RedisCluster

from replicator import metrics
from replicator.batching import batches
from replicator.capture.cluster import dbsize, primaries
from replicator.capture.reader import KeyCapture
from replicator.config import CaptureConfig
from replicator.events import Origin
from replicator.mapping import RuleSet
from replicator.publish.producer import EventPublisher
from replicator.ratelimit import RateLimiter
from replicator.snapshot.checkpoints import Checkpoints, Position

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotReport:
    keys_scanned: int
    events_published: int
    seconds: float


def scan_and_capture(client: redis.Redis, rules: RuleSet, capture: KeyCapture, batch_size: int = 500,
                     scan_count: int = 1000, should_stop: Callable[[], bool] = lambda: False) -> tuple[int, int]:
    """SCAN every rule's glob and capture the keys found with origin SNAPSHOT. Returns (keys scanned, events).

    Shared by the snapshot command and the listener's re-snapshot after a gap.
    """
    estimate = max(1, dbsize(client))
    scanned = published = 0
    for glob in rules.globs():
        batch: list[bytes] = []
        for key in client.scan_iter(match=glob, count=scan_count):
            batch.append(key)
            if len(batch) >= batch_size:
                published += capture.capture(batch, Origin.SNAPSHOT)
                scanned += len(batch)
                metrics.SNAPSHOT_KEYS.inc(len(batch))
                metrics.SNAPSHOT_PROGRESS.set(min(1.0, scanned / estimate))
                batch = []
                if should_stop():
                    return scanned, published
        if batch:
            published += capture.capture(batch, Origin.SNAPSHOT)
            scanned += len(batch)
            metrics.SNAPSHOT_KEYS.inc(len(batch))
        if should_stop():
            return scanned, published
    metrics.SNAPSHOT_PROGRESS.set(1.0)
    return scanned, published


class SnapshotLoader:
    """SCAN every primary (in parallel on a cluster), publish each key's state, checkpoint, resume.

    With ``checkpoints``, each node's SCAN position is saved every ``checkpoint_every`` keys, after Kafka
    acknowledged what came before; ``run(resume=True)`` continues from there (nodes that finished are skipped).
    """

    def __init__(self, client: Any, rules: RuleSet, publisher: EventPublisher, node: str, db: int = 0,
                 config: CaptureConfig | None = None, scan_count: int = 1000, checkpoints: Checkpoints | None = None,
                 max_keys_per_second: float | None = None, checkpoint_every: int = 10_000,
                 progress: Callable[[int, str], None] | None = None) -> None:
        self._config = config or CaptureConfig()
        self._client = client
        self._rules = rules
        self._publisher = publisher
        self._node, self._db = node, db
        self._scan_count = scan_count
        self._checkpoints = checkpoints
        self._limiter = RateLimiter(max_keys_per_second)
        self._checkpoint_every = checkpoint_every
        self._progress = progress
        self._lock = threading.Lock()
        self._scanned = 0

    def nodes(self) -> list[tuple[str, Any]]:
        return primaries(self._client) if isinstance(self._client, RedisCluster) else [(self._node, self._client)]

    def run(self, stop: threading.Event | None = None, resume: bool = False) -> SnapshotReport:
        """Publish every captured key and wait for Kafka to acknowledge all of them."""
        stop = stop or threading.Event()
        started = time.monotonic()
        if self._checkpoints is not None and not resume:
            self._checkpoints.clear()
        self._estimate = max(1, dbsize(self._client))
        nodes = self.nodes()
        try:
            with ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix="snapshot") as pool:
                results = list(pool.map(lambda n: self._scan_node(n[0], n[1], stop, resume), nodes))
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

    def _scan_node(self, name: str, conn: Any, stop: threading.Event, resume: bool) -> tuple[int, int]:
        globs = self._rules.globs()
        at = self._checkpoints.load(name) if self._checkpoints is not None and resume else None
        at = at or Position(0, 0)
        capture = KeyCapture(self._client, self._rules, self._publisher, name, self._db, self._config)
        scanned = published = since_save = 0
        for index in range(at.glob, len(globs)):
            cursor = at.cursor if index == at.glob else 0
            while True:
                cursor, keys = conn.scan(cursor=cursor, match=globs[index], count=self._scan_count)
                for batch in batches(keys, self._config.batch_size):
                    self._limiter.take(len(batch))
                    published += capture.capture(batch, Origin.SNAPSHOT)
                scanned += len(keys)
                since_save += len(keys)
                self._count(len(keys))
                done_glob = cursor == 0
                if self._checkpoints is not None and (since_save >= self._checkpoint_every or done_glob
                                                      or stop.is_set()):
                    self._publisher.flush()  # only what Kafka has may be skipped on resume
                    self._checkpoints.save(name, Position(index + 1, 0) if done_glob else Position(index, cursor))
                    since_save = 0
                if done_glob:
                    break
                if stop.is_set():
                    return scanned, published
        return scanned, published

    def _count(self, n: int) -> None:
        metrics.SNAPSHOT_KEYS.inc(n)
        with self._lock:
            self._scanned += n
            done = self._scanned
        metrics.SNAPSHOT_PROGRESS.set(min(1.0, done / self._estimate))
        if self._progress is not None:
            self._progress(done, "")
