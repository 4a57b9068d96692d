"""Gaps on a Redis Cluster: unannounced changes on any primary, and clock skew between primaries."""

from __future__ import annotations

import redis
from prometheus_client import REGISTRY
from redis.cluster import RedisCluster

from replicator.adapters.redis.cluster import primaries
from replicator.tools.preflight import clock_findings, clock_offsets
from tests.integration.test_cluster_capture import _cluster
from tests.support import Running, assert_converged, ddb, eventually, messaging_config, writing


class _Shifted:
    """A node whose TIME runs ``shift_ms`` ahead: the test hook for a skewed clock (Lua cannot change TIME)."""

    def __init__(self, conn: redis.Redis, shift_ms: float) -> None:
        self._conn, self._shift = conn, shift_ms

    def time(self) -> tuple[int, int]:
        seconds, micros = self._conn.time()
        total = seconds * 1_000_000 + micros + int(self._shift * 1000)
        return total // 1_000_000, total % 1_000_000


def test_preflight_warns_when_the_primaries_clocks_are_apart(redis_cluster):
    nodes = primaries(RedisCluster.from_url(redis_cluster))
    assert clock_findings(nodes).level == "ok"  # one machine, one clock
    offsets, _uncertainty = clock_offsets(nodes)
    assert len(offsets) == len(nodes) >= 3
    shifted = [nodes[0], (nodes[1][0], _Shifted(nodes[1][1], 250)), *nodes[2:]]
    found = clock_findings(shifted)
    assert found.level == "warning" and nodes[1][0] in found.what and "stale" in found.why


def test_flushall_on_every_primary_is_replicated(stack, uid, redis_cluster):
    rc, client = _cluster(redis_cluster), ddb(stack)
    config = messaging_config(stack, uid, redis={"url": redis_cluster},
                              capture={"topology_refresh_s": 1.0, "watch_interval_s": 0.2})

    def flush_gaps() -> float:
        return sum(sample.value for family in REGISTRY.collect() for sample in family.samples
                   if sample.name == "replicator_notifications_gaps_total"
                   and sample.labels.get("reason") == "flushall")

    before = flush_gaps()
    with Running(config) as run:
        run.start_applier().start_listener()
        for i in range(60):
            rc.zadd(f"opponents:owner{i}", {"p1": i, "p2": i + 1})
            rc.set(f"meta:owner{i}:p1", f"m{i}")
            rc.set(f"mirrored:{i}", f"v{i}")
        assert_converged(rc, client, config, timeout=120)
        with writing(stack, owners=10, seed=8, client=RedisCluster.from_url(redis_cluster)):
            for _name, node in primaries(RedisCluster.from_url(redis_cluster)):
                node.flushall()
            eventually(lambda: flush_gaps() >= before + 3, 30, message="a flushall gap on every primary")
        assert_converged(rc, client, config, timeout=120)
