"""verify at scale: drift of every kind planted in a keyspace of a few thousand keys is found exactly by a run that
was stopped and resumed, by one killed with SIGKILL and resumed, and by three shards merged into one report.

"Exactly": the same drifted keys, kind by kind, and every key counted once, never by a sample or a total alone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import botocore.exceptions
import pytest
import redis

from replicator import pipeline
from replicator.adapters.dynamodb import store
from replicator.core.drift import DriftKind
from replicator.local.stack import free_port
from replicator.tools.verify import Verifier, VerifyCheckpoints, VerifyOptions
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
)

OWNERS, PLAIN, BIG = 400, 1200, 700 * 1024  # BIG: a mirror value kept in parts

#: What _plant does, key by key: the drift a verify must report, nothing more.
PLANTED = {
    b"plain:0": {DriftKind.MISSING},        # its mirror item deleted
    b"plain:new": {DriftKind.MISSING},      # written while nothing listened
    b"opponents:o1": {DriftKind.MISSING},   # one member's item deleted (under a rule)
    b"plain:1": {DriftKind.EXTRA},          # deleted from Redis only
    b"opponents:o2": {DriftKind.EXTRA},     # an item nobody wrote, in its partition
    b"meta:o5:p1": {DriftKind.EXTRA},       # a single-item rule's key deleted from Redis only
    b"opponents:o3": {DriftKind.VALUE},     # a timestamp changed in DynamoDB
    b"plain:2": {DriftKind.VALUE},          # changed in Redis only
    b"big:0": {DriftKind.VALUE},            # a value kept in parts, changed in Redis only
    b"plain:3": {DriftKind.TTL},            # an expiry set in Redis only
}


@pytest.fixture(scope="module")
def planted(stack, request):
    """A keyspace replicated by the real pipeline, then drift of every kind planted while nothing runs."""
    uid = f"vs{os.getpid()}"
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()
        pipe = r.pipeline(transaction=False)
        for owner in range(OWNERS):
            pipe.zadd(f"opponents:o{owner}", {f"p{m}": 1_700_000_000 + m for m in range(3)})
            if owner < 100:
                pipe.set(f"meta:o{owner}:p1", f"note {owner}")
        for n in range(PLAIN):
            pipe.set(f"plain:{n}", f"value {n}")
        pipe.set("big:0", b"b" * BIG)
        pipe.execute()
        assert_converged(r, client, config, timeout=120)
        eventually(lambda: fully_committed(config), 60, message="everything committed")
    table, mirror = messaging_table(config), config.default.table
    client.delete_item(TableName=mirror, Key={"key": {"B": b"plain:0"}})
    r.set("plain:new", "created while nobody listened")
    client.delete_item(TableName=table, Key={"owner_id": {"S": "o1"}, "opponent_id": {"S": "p0"}})
    r.delete("plain:1", "meta:o5:p1")
    client.put_item(TableName=table, Item={"owner_id": {"S": "o2"}, "opponent_id": {"S": "ghost"},
                                           "timestamp": {"N": "1"}})
    client.update_item(TableName=table, Key={"owner_id": {"S": "o3"}, "opponent_id": {"S": "p2"}},
                       UpdateExpression="SET #t = :t", ExpressionAttributeNames={"#t": "timestamp"},
                       ExpressionAttributeValues={":t": {"N": "5"}})
    r.set("plain:2", "changed in Redis only")
    r.setrange("big:0", BIG // 2, "X")
    r.expire("plain:3", 3600)
    keys = OWNERS + 100 - 1 + PLAIN - 1 + 1 + 1 + 2  # in Redis now, plus the two only DynamoDB holds
    return config, keys, uid


def _expected() -> dict[str, int]:
    return {kind.value: sum(kind in kinds for kinds in PLANTED.values()) for kind in DriftKind}


def _verifier(config, stack) -> Verifier:
    ctx = pipeline.context(config)
    client, node, db = pipeline.redis_client(config)
    return Verifier(client, ddb(stack), ctx.rules, config.dynamodb.state_table, node=node, db=db)


class _StopAfter(VerifyCheckpoints):
    """Checkpoints that stop the run once one has saved ``keys`` checked keys: a run interrupted partway."""

    def __init__(self, client, table, keys: int, stop: threading.Event) -> None:
        super().__init__(client, table)
        self.saves, self._keys, self._stop = [], keys, stop

    def save(self, record) -> None:
        super().save(record)
        self.saves.append(record.report.keys_checked)
        if record.report.keys_checked >= self._keys:
            self._stop.set()


def test_a_stopped_run_resumes_where_it_saved_and_finds_every_planted_drift_exactly(stack, planted):
    config, keys, _uid = planted
    verifier = _verifier(config, stack)
    options = VerifyOptions(settle_s=0.1, rechecks=2, checkpoint_s=0.0, segments=3)
    stop = threading.Event()
    interrupted = _StopAfter(ddb(stack), config.dynamodb.state_table, 500, stop)

    first = verifier.run(options, stop, checkpoints=interrupted)
    assert not first.complete and 0 < interrupted.saves[-1] < keys

    checked_again = []
    resumed = verifier.run(options, progress=lambda done, _note: checked_again.append(done),
                           checkpoints=VerifyCheckpoints(ddb(stack), config.dynamodb.state_table), resume=True)
    assert resumed.complete and resumed.keys_checked == keys
    assert min(checked_again) > interrupted.saves[-1], "the resumed run started over"
    assert {k.value: n for k, n in resumed.drift.items()} == _expected()
    assert sorted(resumed.drifted_keys) == sorted(PLANTED) and resumed.drift_keys == len(PLANTED)

    # --resume continues only an unfinished run of the same run id: a finished one is verified again (a Job run
    # after a repair must read, not reprint), and another run's record is not continued.
    read_again = []
    again = verifier.run(options, progress=lambda done, _note: read_again.append(done),
                         checkpoints=VerifyCheckpoints(ddb(stack), config.dynamodb.state_table), resume=True)
    assert min(read_again) < 200 and again.keys_checked == keys and again.drift_keys == len(PLANTED)

    stop.clear()
    other = _StopAfter(ddb(stack), config.dynamodb.state_table, 500, stop)
    verifier.run(replace(options, run="job-1"), stop, checkpoints=other)
    read_again.clear()
    verifier.run(replace(options, run="job-2"), progress=lambda done, _note: read_again.append(done),
                 checkpoints=VerifyCheckpoints(ddb(stack), config.dynamodb.state_table), resume=True)
    assert min(read_again) < 200, "job-2 continued job-1's record"


def test_a_run_killed_with_sigkill_resumes_from_its_checkpoint(stack, planted, tmp_path):
    config, keys, uid = planted
    path = config_file(stack, uid, tmp_path)
    checkpoints = VerifyCheckpoints(ddb(stack), config.dynamodb.state_table)
    launched = time.time()
    slow = subprocess.Popen([sys.executable, "-m", "replicator", "verify", "--config", str(path), "--json",
                             "--settle-seconds", "0.1", "--checkpoint-seconds", "0", "--max-keys-per-second", "250"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        eventually(lambda: (r := checkpoints.load(0, 1)) is not None and r.started >= launched
                   and r.report.keys_checked >= 400, 60, message="this run's checkpoint past 400 keys")
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.communicate(timeout=30)
    saved = checkpoints.load(0, 1)
    assert saved is not None and not saved.done and saved.report.keys_checked < keys

    resumed = run_cli("verify", "--config", str(path), "--json", "--settle-seconds", "0.1", "--resume")
    assert resumed.returncode == 1, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["drift"] == _expected() and report["drift_keys"] == len(PLANTED)
    assert report["keys_checked"] == keys and report["complete"] is True
    assert report["read_capacity_units"] > 0


def test_three_shards_side_by_side_merge_into_the_whole_report(stack, planted, tmp_path):
    _config, keys, uid = planted
    path = config_file(stack, uid, tmp_path)
    shards = [subprocess.Popen([sys.executable, "-m", "replicator", "verify", "--config", str(path), "--json",
                                "--settle-seconds", "0.1", "--shard", f"{i}/3"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for i in range(3)]
    outputs = [shard.communicate(timeout=300) for shard in shards]
    reports = [json.loads(out) for out, _err in outputs]
    assert all(shard.returncode in (0, 1) for shard in shards), [err for _out, err in outputs]
    assert sum(r["keys_checked"] for r in reports) == keys
    assert all(r["keys_checked"] < keys for r in reports)  # each did its share, not the whole

    merged = run_cli("verify", "--config", str(path), "--report", "--shards", "3", "--json")
    assert merged.returncode == 1, merged.stderr
    report = json.loads(merged.stdout)
    assert report["drift"] == _expected() and report["drift_keys"] == len(PLANTED)
    assert report["keys_checked"] == keys and report["complete"] is True and report["shards"] == "3/3 shards complete"

    missing = run_cli("verify", "--config", str(path), "--report", "--shards", "4", "--json")
    assert missing.returncode == 3 and json.loads(missing.stdout)["complete"] is False


def test_the_dry_run_states_the_cost_before_reading_everything(stack, planted, tmp_path):
    _config, keys, uid = planted
    path = config_file(stack, uid, tmp_path)
    dry = run_cli("verify", "--config", str(path), "--dry-run", "--json", "--max-rcu", "400", "--shard", "0/2")
    assert dry.returncode == 0, dry.stderr
    cost = json.loads(dry.stdout)
    assert cost["keys"] == keys - 2 and cost["shards"] == 2  # DBSIZE: the two only DynamoDB holds are not in it
    # every key needs at least one unit read consistently; the big value's parts take many more
    assert cost["read_capacity_units"] >= keys - 2 + BIG // 4096
    assert cost["seconds"] >= cost["read_capacity_units"] / 400 / 2 - 1


def test_a_key_dynamodb_cannot_hold_is_a_one_line_error_and_every_other_key_is_still_checked(stack, planted,
                                                                                              tmp_path):
    """An owner of 3,000 bytes renders a partition key longer than DynamoDB takes (2,048 bytes): its batch of reads
    is refused as a whole, so the keys of that batch are read one by one and only that key reports an error."""
    _config, keys, uid = planted
    r = redis.Redis.from_url(stack.redis_url)
    huge = b"opponents:" + b"o" * 3000
    r.zadd(huge, {"p1": 1})
    try:
        found = run_cli("verify", "--config", str(config_file(stack, uid, tmp_path)), "--json",
                        "--settle-seconds", "0.1")
    finally:
        r.delete(huge)
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert report["error_count"] == 1 and repr(huge)[:40] in report["errors"][0]
    assert report["drift"] == _expected() and report["keys_checked"] == keys + 1


def test_without_partiql_select_granted_verify_reads_collections_by_query_and_says_so_once(stack, planted, caplog):
    """An IAM policy from before verify read with PartiQL denies ExecuteStatement. DynamoDB Local has no IAM, so the
    denial is injected at the botocore level; the run must still find exactly the planted drift."""
    config, keys, _uid = planted
    client = ddb(stack)
    calls = {"ExecuteStatement": 0, "Query": 0}

    def deny(model, **_kwargs):
        calls[model.name] = calls.get(model.name, 0) + 1
        if model.name == "ExecuteStatement":
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "not authorized: dynamodb:PartiQLSelect"}},
                "ExecuteStatement")

    client.meta.events.register("before-call.dynamodb", deny)
    store._warned.clear()  # said once per process: this test wants to see it said
    ctx = pipeline.context(config)
    redis_client, node, db = pipeline.redis_client(config)
    verifier = Verifier(redis_client, client, ctx.rules, config.dynamodb.state_table, node=node, db=db)
    with caplog.at_level(logging.WARNING, logger="replicator.adapters.dynamodb.store"):
        report = verifier.run(VerifyOptions(settle_s=0.1, rechecks=2))
    assert {k.value: n for k, n in report.drift.items()} == _expected() and report.keys_checked == keys
    assert calls["ExecuteStatement"] > 0 and calls["Query"] >= OWNERS  # every sorted set read by its own Query
    assert sum("PartiQL SELECT refused" in r.getMessage() for r in caplog.records) == 1


def test_a_run_that_cannot_reach_a_store_exits_4_for_a_retry_not_1_for_drift(stack, planted, tmp_path):
    _config, _keys, uid = planted
    closed = free_port()  # nothing listens there
    path = config_file(stack, uid, tmp_path, dynamodb={"endpoint_url": f"http://127.0.0.1:{closed}"})
    failed = run_cli("verify", "--config", str(path), "--json")
    assert failed.returncode == 4, (failed.returncode, failed.stderr)
    assert "verify failed" in failed.stderr and failed.stdout == ""
