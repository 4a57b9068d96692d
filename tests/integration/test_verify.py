"""verify and repair: drift of every kind is found and counted, repair goes through Kafka, live writes are not drift."""

from __future__ import annotations

import json
import time

import pytest

from replicator import metrics, pipeline
from replicator.core.drift import DriftKind
from replicator.core.watermark import Watermark
from replicator.local.demo import Workload
from replicator.tools.verify import Verifier, VerifyOptions
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    config_file,
    ddb,
    eventually,
    fully_committed,
    messaging_config,
    messaging_table,
    run_cli,
    writing,
)


def _seed(r):
    for owner in range(5):
        r.zadd(f"opponents:o{owner}", {f"p{m}": 1_700_000_000 + 10 * owner + m for m in range(4)})
    for owner in range(2):
        r.set(f"meta:o{owner}:p1", f"note {owner}")
    for n in range(5):
        r.set(f"plain:{n}", f"value {n}")


def _verifier(ctx, stack):
    client, node, db = pipeline.redis_client(ctx.config)
    return Verifier(client, ddb(stack), ctx.rules, ctx.config.dynamodb.state_table, node=node, db=db,
                    progress=pipeline.group_offsets(ctx))


def _n(value: int) -> dict:
    return {"N": str(value)}


def test_each_kind_of_drift_is_counted_and_repair_through_kafka_ends_it(stack, uid, tmp_path):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    table, mirror = messaging_table(config), config.default.table
    with Running(config) as run:
        run.start_applier().start_listener()
        _seed(r)
        assert_converged(r, client, config)
        eventually(lambda: fully_committed(config), 30, message="everything committed")
    verifier = _verifier(run.ctx, stack)
    equal = verifier.run(VerifyOptions(settle_s=0.2))
    assert (equal.keys_checked, equal.has_drift) == (5 + 2 + 5, False)

    # Nothing runs now: every change below is drift until repaired.
    client.delete_item(TableName=mirror, Key={"key": {"B": b"plain:0"}})                        # missing
    r.set("plain:9", "created while nobody listened")                                          # missing
    client.update_item(TableName=table, Key={"owner_id": {"S": "o1"}, "opponent_id": {"S": "p2"}},
                       UpdateExpression="SET #t = :t", ExpressionAttributeNames={"#t": "timestamp"},
                       ExpressionAttributeValues={":t": _n(5)})                                # value
    client.put_item(TableName=table, Item={"owner_id": {"S": "o2"}, "opponent_id": {"S": "ghost"},
                                           "timestamp": _n(1)})                                # extra
    r.delete("plain:1")                                                                        # extra
    r.expire("plain:2", 3600)                                                                  # ttl

    path = config_file(stack, uid, tmp_path)
    found = run_cli("verify", "--config", str(path), "--json", "--settle-seconds", "0.2")
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert report["drift"] == {"missing_in_dynamodb": 2, "extra_in_dynamodb": 2, "value_differs": 1,
                               "ttl_differs": 1}
    assert report["drift_keys"] == 6
    assert any("b'opponents:o1'" in e and "p2" in e for e in report["examples"]["value_differs"])
    one_owner = verifier.run(VerifyOptions(owner=b"o2", settle_s=0.2))
    assert one_owner.keys_checked == 1 and one_owner.drift[DriftKind.EXTRA] == 1 and len(one_owner.drifted_keys) == 1
    assert metrics.VERIFY_DRIFT_KEYS.labels(kind="extra_in_dynamodb")._value.get() == 1  # the last run's figure

    with Running(config) as run:
        run.start_applier()  # no listener: only the repair events can fix DynamoDB
        repaired = run_cli("verify", "--config", str(path), "--repair", "--settle-seconds", "0.2")
        assert repaired.returncode == 1 and "re-published 6 drifted key(s) as REPAIR events" in repaired.stdout
        eventually(lambda: fully_committed(config), 30, message="repair events applied")
    after = run_cli("verify", "--config", str(path), "--settle-seconds", "0.2")
    assert after.returncode == 0, after.stdout
    assert after.stdout.startswith(f"verified {5 + 2 + 5} key(s)") and "no drift" in after.stdout.splitlines()[0]
    assert_converged(r, client, config)


@pytest.mark.parametrize("appliers", ["caught_up", "lagging"])
def test_live_writes_are_not_drift(stack, uid, appliers):
    """Live writes are never drift, also when the appliers lag by more than the settle interval (a slow table).

    DynamoDB Local answers fast whatever the load, so the slow table is 25 ms added before every request the
    applier sends: its backlog then grows to seconds while the writes go on. Without the verifier's wait for the
    applier group (the watermark), this finds a dozen false drifts.
    """
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()
        workload = Workload(r, owners=15, seed=9)
        workload.seed(opponents=5)
        assert_converged(r, client, config)
        offsets = pipeline.group_offsets(run.ctx)
        backlog = [0]
        if appliers == "lagging":
            run.applier._sink.writer.client.meta.events.register("before-send.dynamodb", lambda **_: time.sleep(0.025))
        with writing(stack, owners=15, seed=9) as steps:
            eventually(lambda: steps[0] > 200, 30, message="writes under way")
            verifier = _verifier(run.ctx, stack)
            reports = []
            for _ in range(2):
                backlog[0] = max(backlog[0], Watermark(offsets.end()).remaining(offsets.committed()))
                reports.append(verifier.run(VerifyOptions(settle_s=0.5, rechecks=5)))
        offsets.close()
        assert steps[0] > 300
        if appliers == "lagging":
            assert backlog[0] > 100, f"the appliers were only {backlog[0]} events behind"
        for report in reports:
            assert report.keys_checked > 15 and not report.has_drift, report.format()
        assert_converged(r, client, config)
        sample = verifier.run(VerifyOptions(sample=10, settle_s=0.5))
        assert sample.keys_checked == 10 and not sample.has_drift
