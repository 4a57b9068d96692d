"""Replaying the whole topic into DynamoDB changes nothing: versions make re-application harmless."""

from __future__ import annotations

from replicator import metrics, replay
from replicator.demo import Workload
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    committed_and_end,
    ddb,
    eventually,
    fully_committed,
    messaging_config,
    messaging_table,
    scan_all,
)


def _state(client, table):
    # A replay re-applies the newest tombstones and so refreshes their retention (_expires); all else must be equal.
    return sorted(
        (tuple(sorted((k, repr(v)) for k, v in item.items() if k != "_expires")) for item in scan_all(client, table)),
    )


def test_replaying_the_topic_from_offset_zero_leaves_dynamodb_unchanged(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    table = messaging_table(config)
    with Running(config) as run:
        run.start_applier().start_listener()
        workload = Workload(r, owners=10, seed=11)
        workload.seed(opponents=6)
        for _ in range(400):
            workload.step()
        # Keys with a short TTL expire later and produce more events: let them, then let the applier drain.
        # (Sessions live for 10 minutes or more: they will not expire during the test.)
        eventually(lambda: all(r.pttl(k) < 0 or r.pttl(k) > 300_000 for k in r.scan_iter()), 30,
                   message="no key left to expire soon")
        assert_converged(r, client, config)
        eventually(lambda: fully_committed(config), 30, message="everything applied and committed")
    before = _state(client, table)
    assert fully_committed(config), "offsets must be committed up to the end once everything is applied"
    end = committed_and_end(config)[1]

    reset = replay.reset_to_earliest(config.kafka, run.ctx.caps, config.kafka.group_id, config.kafka.topic)
    assert set(reset.values()) == {0}
    assert committed_and_end(config)[0] == dict.fromkeys(end, 0)
    stale = metrics.EVENTS_APPLIED.labels(table=table, result="stale")._value.get()

    # Small batches, so old states are really applied one after another rather than superseded within a batch.
    replaying = messaging_config(stack, uid, apply={"max_batch": 7})
    with Running(replaying) as run:
        run.start_applier()
        eventually(lambda: fully_committed(config), 90, message="replay committed to the end")
    assert _state(client, table) == before
    assert metrics.EVENTS_APPLIED.labels(table=table, result="stale")._value.get() > stale
