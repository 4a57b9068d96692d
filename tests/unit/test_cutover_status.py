"""`cutover status`: what it shows and the one-line verdict that says whether the next step may be taken."""

from __future__ import annotations

from replicator.core.cutover import WHOLE_KEYSPACE, Heartbeat, Plan, VerifyRecord
from replicator.tools.cutover import Status

NOW = 1_800_000_000.0
SHADOWED = Plan().with_shadow(100)
CLIENT = Heartbeat("app-1", SHADOWED.epoch, NOW - 1, NOW + 14, (("zrange", "match", 98), ("zrange", "lag", 2)))


def status(plan: Plan = SHADOWED, verified: VerifyRecord | None = None, **extras: int) -> Status:
    return Status(plan, [CLIENT], NOW, lag=0, dead_letters=extras.get("dead", 0),
                  reconciles=extras.get("reconciles", 0), verified=verified)


def test_a_clean_verify_of_every_key_makes_a_shadowed_share_ready_to_switch():
    ok = status(verified=VerifyRecord(NOW - 600, WHOLE_KEYSPACE, 12_345, 0))
    assert ok.verdict() == "ready to switch up to 100% (`cutover switch --share P`)"
    assert "verify: 10 min ago over every key: 12345 key(s), 0 drifted" in ok.lines()
    assert "  zrange             100 read(s), 100.00% equal, 2 lag, 98 match" in ok.lines()


def test_without_a_verify_of_every_key_the_verdict_says_to_run_one():
    for verified in (None, VerifyRecord(NOW - 5, "a sample of 1000 keys", 1000, 0)):
        verdict = status(verified=verified).verdict()
        assert verdict.endswith("(no verify of every key on record: run one first)"), verdict
    assert "verify: none on record" in status().lines()


def test_drift_the_last_verify_did_not_repair_blocks_a_switch_and_a_repair_lifts_it():
    drifted = status(verified=VerifyRecord(NOW - 30, WHOLE_KEYSPACE, 500, 3))
    assert drifted.verdict() == ("the last verify found 3 drifted key(s) it did not repair: `replicator verify "
                                 "--repair`, then verify again before switching")
    repaired = status(verified=VerifyRecord(NOW - 30, WHOLE_KEYSPACE, 500, 3, repaired=3))
    assert repaired.verdict().startswith("ready to switch up to 100%")
    assert "verify: 30s ago over every key: 500 key(s), 3 drifted, 3 repaired" in repaired.lines()


def test_a_pending_gap_reconcile_blocks_a_switch_before_anything_verify_says():
    clean = VerifyRecord(NOW - 30, WHOLE_KEYSPACE, 500, 0)
    assert status(verified=clean, reconciles=1).verdict().startswith("a gap's reconcile is pending")


def test_a_verify_record_survives_its_json():
    record = VerifyRecord(NOW, "owner alice", 7, 1, 1)
    assert VerifyRecord.from_json(record.to_json()) == record
    assert not record.whole and VerifyRecord(NOW, WHOLE_KEYSPACE, 0, 0).whole
