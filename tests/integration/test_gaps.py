"""Gaps healed whatever the appliers' lag: deletions while no listener ran, flushes, swaps, a restarted Redis.

Each test builds a backlog the appliers have not applied (appliers stopped, slowed or killed) before the gap, so
that the reconcile can only be right if it waits for the gap's watermark. Both stores are then compared completely:
every member, score and metadata of the rule table, every mirrored key's type, value and expiry.
"""

from __future__ import annotations

import pytest
import redis

from replicator.local.demo import Workload
from replicator.local.stack import free_port
from tests.support import (
    Running,
    answers,
    assert_converged,
    clean_redis,
    committed_and_end,
    config_file,
    ddb,
    eventually,
    fully_committed,
    messaging_config,
    metric_sum,
    run_cli,
    scrape,
    writing,
)

#: Owners with unicode, spaces and ':' in their names, as users have them.
ODD_OWNERS = ["jürgen müller", "a:b", "名前", "with space"]


def _mixed_dataset(r: redis.Redis, owners: int) -> None:
    """Rule keys (zsets and side keys) for many owners, and mirrored keys of every type, some expiring."""
    Workload(r, owners=owners).seed(opponents=8)
    pipe = r.pipeline(transaction=False)
    for owner in ODD_OWNERS:
        pipe.zadd(f"opponents:{owner}", {"p1": 1, "p2": 2.5})
        pipe.set(f"meta:{owner}:p1", f"side of {owner}")
    for i in range(40):
        pipe.set(f"str:{i}", f"value {i}")
        pipe.hset(f"hash:{i}", mapping={"f1": i, "f2": "x" * i})
        pipe.rpush(f"list:{i}", *[f"e{j}" for j in range(i % 5 + 1)])
        pipe.sadd(f"set:{i}", *[f"m{j}" for j in range(i % 4 + 1)])
        pipe.zadd(f"zset:{i}", {f"m{j}": j * 1.5 for j in range(i % 3 + 1)})
        pipe.set(f"ttl:{i}", "expiring", ex=3600)
    pipe.set(b"bin:\xff\xfe\x00key", b"\x00\x01\xff")
    pipe.execute()


def _delete_during_gap(r: redis.Redis, owners: int) -> None:
    """Deletions of every kind while no listener runs: no notification will ever announce them."""
    pipe = r.pipeline(transaction=False)
    for i in range(0, owners, 3):
        pipe.delete(f"opponents:user{i:04d}")  # whole zsets
    for i in range(1, owners, 3):
        pipe.zrem(f"opponents:user{i:04d}", "peer000", "peer001")  # members
        pipe.delete(f"meta:user{i:04d}:peer002")  # side keys of live items
    pipe.delete(f"opponents:{ODD_OWNERS[0]}", f"meta:{ODD_OWNERS[1]}:p1")
    for i in range(0, 40, 2):
        pipe.delete(f"str:{i}", f"hash:{i}", f"list:{i}", f"set:{i}", f"zset:{i}")
        pipe.pexpire(f"ttl:{i}", 1)  # expires
    pipe.delete(b"bin:\xff\xfe\x00key")
    pipe.execute()
    eventually(lambda: not any(r.exists(f"ttl:{i}") for i in range(0, 40, 2)), 10, message="keys expired")
    r.zadd("opponents:new-in-gap", {"p9": 9})  # and a key created in the gap, for the re-snapshot


def _backlog(config) -> int:
    committed, end = committed_and_end(config)
    return sum(end.values()) - sum(c or 0 for c in committed.values())


@pytest.mark.slow
@pytest.mark.parametrize("appliers", ["stopped", "behind", "killed"])
def test_deletions_while_the_listener_is_down_and_the_appliers_lag_are_replicated(
        stack, uid, tmp_path, processes, appliers):
    """The bug this guards against: the reconcile scanned DynamoDB before the backlog's UPSERTs were applied, so
    keys deleted while the listener was down stayed live in DynamoDB forever."""
    r, client = clean_redis(stack), ddb(stack)
    owners = 150
    port = free_port()
    # One small batch at a time, one request in flight: thousands of events take a while to drain ("killed": the
    # applier is behind when it dies).
    slow = {"max_batch": 20, "write_concurrency": 1, "poll_timeout_ms": 100} if appliers != "stopped" else {}
    path = config_file(stack, uid, tmp_path, metrics={"port": port})
    apply_path = config_file(stack, uid, tmp_path, apply=slow)
    config = messaging_config(stack, uid)
    listener = processes("listen", path, tmp_path)
    eventually(lambda: "re-snapshot done" in listener.output(), 60, message="listener subscribed")
    applier = processes("apply", apply_path, tmp_path) if appliers != "stopped" else None
    _mixed_dataset(r, owners)
    with writing(stack, owners=owners) as written:
        eventually(lambda: written[0] > 3000, 120, message="a stream of live writes")
    eventually(lambda: sum(committed_and_end(config)[1].values()) > 3000, 60, message="thousands of events")
    if appliers == "killed":
        applier.kill()
    if applier is not None:
        assert _backlog(config) > 500, "the appliers should be behind when the listener dies"
    listener.kill()
    _delete_during_gap(r, owners)
    listener = processes("listen", path, tmp_path)
    eventually(lambda: "re-snapshot done" in listener.output(), 60, message="restarted listener re-snapshotted")
    if appliers != "behind":
        # Nothing applies yet: the reconcile must wait (and say so) rather than scan a DynamoDB that lags.
        # The pending gauge is set when the gap is noted, the waiting count once the group's offsets are read.
        eventually(lambda: metric_sum(scrape(port), "replicator_reconcile_pending") == 1
                   and metric_sum(scrape(port), "replicator_reconcile_waiting_events") > 0, 30,
                   message="reconcile pending, waiting for events to be committed")
        shown = run_cli("status", "--config", str(path))
        assert shown.returncode == 0, shown.stderr
        assert "reconcile pending on 127.0.0.1:" in shown.stdout and "(gap: start" in shown.stdout, shown.stdout
        assert "more event(s)" in shown.stdout
        applier = processes("apply", apply_path, tmp_path)
    assert_converged(r, client, config, timeout=240)
    eventually(lambda: "reconcile done" in listener.output(), 120, message="reconcile done")
    assert metric_sum(scrape(port), "replicator_reconcile_pending") == 0
    eventually(lambda: fully_committed(config), 60, message="everything committed")
    assert_converged(r, client, config, timeout=30)  # and nothing the backlog held brought anything back
    assert "reconciles: none pending" in run_cli("status", "--config", str(path)).stdout


def _gap_count(port: int, reason: str) -> float:
    return metric_sum(scrape(port), "replicator_notifications_gaps_total", reason=reason)


@pytest.mark.parametrize("command", ["flushdb", "flushall", "swapdb", "resetstat"])
def test_a_flush_swap_or_counter_reset_no_notification_announces_is_healed(stack, uid, tmp_path, processes, command):
    r, client = clean_redis(stack), ddb(stack)
    other = redis.Redis.from_url(stack.redis_url, db=1)
    other.flushdb()
    port = free_port()
    path = config_file(stack, uid, tmp_path, metrics={"port": port}, capture={"watch_interval_s": 0.2})
    config = messaging_config(stack, uid)
    listener = processes("listen", path, tmp_path)
    eventually(lambda: "re-snapshot done" in listener.output(), 60, message="listener subscribed")
    _mixed_dataset(r, 30)
    other.zadd("opponents:from-db1", {"p1": 1})
    other.set("str:db1", "in db 1")
    with Running(config) as run:
        run.start_applier()
        assert_converged(r, client, config, timeout=120)
        with writing(stack, owners=30, seed=5):  # live writes go on around the flush
            if command == "swapdb":
                r.swapdb(0, 1)
            elif command == "resetstat":  # zeroes the counters a flush would show in: a gap in itself
                r.config_resetstat()
            else:
                getattr(r, command)()
            eventually(lambda: _gap_count(port, command) >= 1, 30, message=f"{command} seen as a gap")
        assert_converged(r, client, config, timeout=120)
        eventually(lambda: "reconcile done" in listener.output().split(f'"gap": "{command}"', 1)[-1], 60,
                   message="the flush's reconcile")
        assert_converged(r, client, config, timeout=30)


def test_redis_restarted_empty_is_replicated(stack, uid, tmp_path, processes):
    """redis-server restarted without its data (the RDB gone): a new run_id, so every key it lost is tombstoned."""
    if stack.origins["redis"] != "process":
        pytest.skip("REDIS_URL names the redis-server; only the stack's own process can be restarted")
    r, client = clean_redis(stack), ddb(stack)
    port = free_port()
    path = config_file(stack, uid, tmp_path, metrics={"port": port},
                       capture={"watch_interval_s": 0.2, "reconnect_backoff_s": [0.2, 1.0]})
    config = messaging_config(stack, uid)
    listener = processes("listen", path, tmp_path)
    eventually(lambda: "re-snapshot done" in listener.output(), 60, message="listener subscribed")
    with Running(config) as run:
        run.start_applier()
        _mixed_dataset(r, 20)
        assert_converged(r, client, config, timeout=120)
        with stack.stopped("redis"):  # saves nothing (--save ""): it comes back empty, on the same port
            pass
        r = redis.Redis.from_url(stack.redis_url)
        eventually(lambda: answers(r), 30, message="redis-server back")
        r.zadd("opponents:after-restart", {"p1": 1})
        eventually(lambda: _gap_count(port, "restart") >= 1, 60, message="the restart seen as a gap")
        assert_converged(r, client, config, timeout=120)
