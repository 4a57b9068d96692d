"""Replaying the whole topic into DynamoDB changes nothing: versions make re-application harmless."""

from __future__ import annotations

from replicator import metrics
from replicator.local.demo import Workload
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    committed_and_end,
    config_file,
    ddb,
    eventually,
    fully_committed,
    messaging_config,
    messaging_table,
    reset_to_earliest,
    run_cli,
    scan_all,
)


def _state(client, table):
    # A replay re-applies the newest tombstones and so refreshes their retention (_expires); all else must be equal.
    return sorted(
        (tuple(sorted((k, repr(v)) for k, v in item.items() if k != "_expires")) for item in scan_all(client, table)),
    )


def _replicated(stack, uid, owners, seed, opponents, steps):
    """Run listener and applier over a workload until DynamoDB equals Redis and every offset is committed."""
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()
        workload = Workload(r, owners=owners, seed=seed)
        workload.seed(opponents=opponents)
        for _ in range(steps):
            workload.step()
        # Keys with a short TTL expire later and produce more events: let them, then let the applier drain.
        # (Sessions live for 10 minutes or more: they will not expire during the test.)
        eventually(lambda: all(r.pttl(k) < 0 or r.pttl(k) > 300_000 for k in r.scan_iter()), 30,
                   message="no key left to expire soon")
        assert_converged(r, client, config)
        eventually(lambda: fully_committed(config), 30, message="everything applied and committed")
    return client, config, run


def test_replaying_the_topic_from_offset_zero_leaves_dynamodb_unchanged(stack, uid):
    client, config, _run = _replicated(stack, uid, owners=10, seed=11, opponents=6, steps=400)
    table = messaging_table(config)
    before = _state(client, table)
    assert fully_committed(config), "offsets must be committed up to the end once everything is applied"
    end = committed_and_end(config)[1]

    reset = reset_to_earliest(config.kafka, config.kafka.group_id, config.kafka.topic)
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


def test_replay_command_moves_a_stopped_group_and_the_reapplied_state_is_unchanged(stack, uid, tmp_path):
    client, config, _run = _replicated(stack, uid, owners=8, seed=5, opponents=4, steps=100)
    path = config_file(stack, uid, tmp_path)
    with Running(config) as applying:
        applying.start_applier()
        eventually(applying.applier.assigned.is_set, 30, message="the applier joined the group")
        # While an applier is a member of the group its commits would undo the move: refused, nothing moved.
        refused = run_cli("replay", "--config", str(path), "--to-earliest")
        assert refused.returncode == 1
        assert "has 1 active member(s)" in refused.stderr and "stop the appliers first" in refused.stderr
    before, (committed, end) = _state(client, messaging_table(config)), committed_and_end(config)
    assert {p: c or 0 for p, c in committed.items()} == end

    dry = run_cli("replay", "--config", str(path), "--to-earliest", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1] == (
        f"would move group {config.kafka.group_id!r} on {config.kafka.topic!r} to earliest: "
        f"{sum(end.values())} record(s) to re-apply (dry run: nothing committed)")
    assert committed_and_end(config)[0] == committed

    by_offset = run_cli("replay", "--config", str(path), "--to-offset", "2", "--partitions", "1,3")
    assert by_offset.returncode == 0, by_offset.stderr
    assert committed_and_end(config)[0] == {**committed, 1: min(2, end[1]), 3: min(2, end[3])}
    rows = {int(line.split()[0]): line.split() for line in by_offset.stdout.splitlines()[1:-1]}
    assert sorted(rows) == [1, 3] and rows[1][1:3] == [str(committed[1]), str(min(2, end[1]))]

    before_any = run_cli("replay", "--config", str(path), "--to-timestamp", "2026-11-23T08:00:00Z", "--dry-run")
    assert before_any.returncode == 0, before_any.stderr  # every record is younger: the earliest offsets
    assert before_any.stdout.splitlines()[-1].endswith(f"{sum(end.values())} record(s) to re-apply (dry run: "
                                                       "nothing committed)")

    earliest = run_cli("replay", "--config", str(path), "--to-earliest")
    assert earliest.returncode == 0, earliest.stderr
    assert committed_and_end(config)[0] == dict.fromkeys(end, 0)
    behind = run_cli("status", "--config", str(path))
    assert behind.returncode == 0, behind.stderr
    assert f"total lag {sum(end.values())} record(s); dead letters: 0" in behind.stdout

    with Running(config) as run:
        run.start_applier()
        eventually(lambda: fully_committed(config), 90, message="replay committed to the end")
    assert _state(client, messaging_table(config)) == before
    caught_up = run_cli("status", "--config", str(path))
    assert "total lag 0 record(s)" in caught_up.stdout
    assert len(caught_up.stdout.splitlines()) == 2 + stack.kafka_partitions + 2
    assert caught_up.stdout.splitlines()[-1] == "reconciles: none pending"


def test_replay_to_a_timestamp(stack, uid, tmp_path):
    client, config, _run = _replicated(stack, uid, owners=4, seed=3, opponents=3, steps=20)
    path = config_file(stack, uid, tmp_path)
    before, (_committed, end) = _state(client, messaging_table(config)), committed_and_end(config)
    result = run_cli("replay", "--config", str(path), "--by-duration", "1h")
    assert result.returncode == 0, result.stderr
    assert committed_and_end(config)[0] == dict.fromkeys(end, 0)  # every record is younger than an hour
    future = run_cli("replay", "--config", str(path), "--to-timestamp", "2999-01-01T00:00:00Z")
    assert future.returncode == 0 and committed_and_end(config)[0] == end
    with Running(config) as run:
        run.start_applier()
        eventually(lambda: fully_committed(config), 60, message="caught up")
    assert _state(client, messaging_table(config)) == before
