"""verify, repair, plan and snapshot on a real 3-primary Redis Cluster: every primary is read, none is missed."""

from __future__ import annotations

from redis.cluster import RedisCluster

from replicator import pipeline
from replicator.tools.plan import Planner
from replicator.tools.verify import Verifier, VerifyOptions
from tests.support import (
    Running,
    config_file,
    eventually,
    fully_committed,
    messaging_config,
    messaging_table,
    run_cli,
)


def _fill(url):
    rc = RedisCluster.from_url(url)
    rc.flushall()
    for owner in range(30):  # keys spread over every primary's slots
        rc.zadd(f"opponents:u{owner}", {f"p{m}": 1_000 + m for m in range(3)})
        rc.set(f"meta:u{owner}:p0", f"note {owner}")
        rc.set(f"plain:{owner}", f"v{owner}")
    nodes = {rc.get_node_from_key(f"opponents:u{o}").name for o in range(30)}
    assert len(nodes) == 3, "the keys must live on every primary"
    return rc


def test_verify_repair_and_plan_read_every_primary(stack, uid, redis_cluster, tmp_path):
    cluster_url = redis_cluster
    rc = _fill(cluster_url)
    config = messaging_config(stack, uid, redis={"url": cluster_url})
    with Running(config) as run:
        client, _node, _db = pipeline.redis_client(config)
        assert isinstance(client, RedisCluster)
        verifier = Verifier(client, pipeline.dynamodb(run.ctx), run.ctx.rules, config.dynamodb.state_table)
        empty = verifier.run(VerifyOptions(settle_s=0.1, rechecks=1))
        assert empty.keys_checked == 90 and len(empty.drifted_keys) == 90  # nothing replicated yet

        plan = Planner(client, run.ctx.rules).plan()
        assert plan.exact and plan.redis_keys == 90
        assert plan.tables[messaging_table(config)].items == 30 * 3
        assert plan.tables[config.default.table].items == 30

        run.start_applier()
        report = pipeline.snapshot_loader(run.ctx).run()
        assert (report.keys_scanned, report.events_published) == (90, 90)
        eventually(lambda: fully_committed(config), 60, message="snapshot applied")
        assert not verifier.run(VerifyOptions(settle_s=0.1)).has_drift

        rc.zadd("opponents:u7", {"late": 5})
        rc.delete("plain:8")
        drift = verifier.run(VerifyOptions(settle_s=0.1, rechecks=1))
        assert sorted(drift.drifted_keys) == [b"opponents:u7", b"plain:8"]
        path = config_file(stack, uid, tmp_path, redis={"url": cluster_url})
        repaired = run_cli("verify", "--config", str(path), "--repair", "--settle-seconds", "0.1")
        assert "re-published 2 drifted key(s)" in repaired.stdout, repaired.stdout + repaired.stderr
        eventually(lambda: fully_committed(config), 60, message="repairs applied")
        assert not verifier.run(VerifyOptions(settle_s=0.1)).has_drift
