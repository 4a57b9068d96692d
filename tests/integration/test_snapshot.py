"""The snapshot loader backfills through the same path, also while live writes continue."""

from __future__ import annotations

import threading

from replicator.local.demo import Workload, lsi_newest_first, zrevrange
from tests.support import Running, assert_converged, clean_redis, ddb, messaging_config, messaging_table


def test_data_written_before_any_listener_is_backfilled_by_snapshot(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    workload = Workload(r, owners=40, seed=3)
    workload.seed(opponents=12)
    with Running(config) as run:
        run.start_applier()
        report = run.snapshot()
        assert report.keys_scanned == r.dbsize()
        assert report.events_published == r.dbsize()
        assert_converged(r, client, config)
    owner = workload.owners[7]
    assert lsi_newest_first(client, owner, messaging_table(config)) == zrevrange(r, owner)


def test_snapshot_while_live_writes_continue_ends_equal(stack, uid):
    """Only the snapshot can bring the seeded keys over: the listener's own start re-snapshot is off, so a snapshot
    that published nothing would leave them missing."""
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid, capture={"resnapshot_on_gap": False})
    Workload(r, owners=40, seed=5).seed(opponents=10)
    # The writer changes owners user0000-user0029 only: user0030-user0039 (10 sorted sets, 100 metadata keys) and
    # the feature flags are there for every SCAN from start to end, so each snapshot must read and publish them.
    untouched = 10 * (1 + 10) + 1
    stop_writing = threading.Event()

    def write() -> None:
        writer = Workload(r.__class__.from_url(stack.redis_url), owners=30, seed=9)
        writer._clock = 1_800_000_000_000  # newer than the seed
        while not stop_writing.is_set():
            writer.step()

    with Running(config) as run:
        run.start_applier().start_listener()
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            reports = [run.snapshot(), run.snapshot()]  # twice: the second pass races the writer at other points
        finally:
            stop_writing.set()
            writer.join(10)
        for report in reports:
            assert report.keys_scanned >= untouched and report.events_published >= untouched, report
        assert_converged(r, client, config)
    owner = "user0035"  # never written after the seed: in DynamoDB through the snapshot alone
    assert lsi_newest_first(client, owner, messaging_table(config)) == zrevrange(r, owner) != []
