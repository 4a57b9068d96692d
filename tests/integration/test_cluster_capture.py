"""Capture from a real 3-primary Redis Cluster: every primary's changes arrive, also while slots move."""

from __future__ import annotations

import subprocess

import redis
from redis.cluster import RedisCluster

from replicator.local.demo import Workload
from tests.support import Running, assert_converged, ddb, eventually, messaging_config, writing


def _cluster(url):
    rc = RedisCluster.from_url(url)
    rc.flushall()
    return rc


def test_live_changes_on_every_primary_are_replicated(stack, uid, redis_cluster):
    rc, client = _cluster(redis_cluster), ddb(stack)
    config = messaging_config(stack, uid, redis={"url": redis_cluster})
    with Running(config) as run:
        run.start_applier().start_listener()
        assert len(run.listener.nodes) == 3
        workload = Workload(rc, owners=30, seed=4)
        workload.seed(opponents=4)
        for _ in range(400):
            workload.step()
        owners_per_node = {rc.get_node_from_key(f"opponents:{o}").name for o in workload.owners}
        assert len(owners_per_node) == 3  # the changes really were spread over every primary
        assert_converged(rc, client, config)


def test_slots_moved_between_primaries_while_writes_continue(stack, uid, redis_cluster):
    rc, client = _cluster(redis_cluster), ddb(stack)
    config = messaging_config(stack, uid, redis={"url": redis_cluster}, capture={"topology_refresh_s": 1.0})
    ports = stack.cluster_ports
    ids = {port: redis.Redis(port=port).execute_command("CLUSTER MYID").decode() for port in ports}
    with Running(config) as run:
        run.start_applier().start_listener()
        Workload(rc, owners=30, seed=6).seed(opponents=4)
        with writing(stack, owners=30, seed=6, client=RedisCluster.from_url(redis_cluster)) as steps:
            eventually(lambda: steps[0] > 100, 30, message="writes under way")
            moved = subprocess.run(
                ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{ports[0]}", "--cluster-from", ids[ports[0]],
                 "--cluster-to", ids[ports[1]], "--cluster-slots", "3000", "--cluster-yes"],
                capture_output=True, text=True, timeout=120)
            assert moved.returncode == 0, moved.stdout[-1000:] + moved.stderr
            mark = steps[0]
            eventually(lambda: steps[0] > mark + 100, 30, message="writes after the move")
        slots = redis.Redis(port=ports[1]).execute_command("CLUSTER SLOTS")
        assert sum(end - start + 1 for start, end, primary, *_ in slots if primary[1] == ports[1]) >= 5461 + 3000
        assert_converged(rc, client, config, timeout=90)
