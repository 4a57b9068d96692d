"""A verify run's record (what a checkpoint keeps), the merge of shards, and the cost stated before a run."""

from __future__ import annotations

import pytest

from replicator.cli import _shard, build_parser
from replicator.core.drift import Difference, DriftKind
from replicator.core.errors import ConfigError
from replicator.core.values import S
from replicator.core.verification import KEPT_KEYS, RCU_BYTES, ShardRecord, VerifyReport, merge_shards, verify_cost


def _drifted(report: VerifyReport, key: bytes, kind: DriftKind) -> None:
    report.add_drifted(key, "rule", [Difference(kind, (("k", S(key.hex())),), None, None)], examples=5)


def test_a_record_keeps_every_count_and_the_kept_keys_through_json():
    report = VerifyReport(keys_checked=1234, repaired=2, skipped=7, skipped_what="of switched owners", rcu=55.5,
                          complete=False, seconds=12.5)
    _drifted(report, b"\x00binary\xff", DriftKind.MISSING)
    _drifted(report, b"plain:1", DriftKind.TTL)
    report.add_unsettled(b"moving")
    report.add_error("b'huge': too long")
    record = ShardRecord(2, 3, 4, {"redis:n": {"glob": 1, "cursor": 99}, "dynamodb:(heads):2/12": "done"}, report,
                         100.0, 200.0)

    again = ShardRecord.from_json(record.to_json())

    assert again.positions == record.positions and (again.shard, again.shards, again.segments) == (2, 3, 4)
    assert again.report.to_json() == report.to_json()
    assert again.report.drifted_keys == [b"\x00binary\xff", b"plain:1"]
    assert again.report.unsettled_keys == [b"moving"] and again.report.skipped_what == "of switched owners"


def test_drifted_keys_are_counted_exactly_but_kept_up_to_a_bound():
    report = VerifyReport()
    for i in range(KEPT_KEYS + 5):
        _drifted(report, f"k{i}".encode(), DriftKind.VALUE)
    assert report.drift_keys == KEPT_KEYS + 5 and report.drift[DriftKind.VALUE] == KEPT_KEYS + 5
    assert len(report.drifted_keys) == KEPT_KEYS and len(report.examples[DriftKind.VALUE]) == 5


def test_shards_merge_into_one_report_that_is_complete_only_when_every_shard_finished():
    def shard(i: int, done: bool, kinds: list[DriftKind]) -> ShardRecord:
        report = VerifyReport(keys_checked=100 * (i + 1), seconds=10.0 * (i + 1), rcu=1.5)
        for n, kind in enumerate(kinds):
            _drifted(report, f"s{i}k{n}".encode(), kind)
        return ShardRecord(i, 3, 4, {}, report, 0.0, 0.0, done=done)

    records = [shard(0, True, [DriftKind.MISSING]), shard(1, True, []), shard(2, True, [DriftKind.EXTRA,
                                                                                         DriftKind.MISSING])]
    merged = merge_shards(records)
    assert (merged.keys_checked, merged.drift_keys, merged.complete) == (600, 3, True)
    assert merged.drift[DriftKind.MISSING] == 2 and merged.drift[DriftKind.EXTRA] == 1
    assert merged.seconds == 30.0 and merged.rcu == 4.5 and merged.shards == "3/3 shards complete"

    records[1] = shard(1, False, [])
    assert not merge_shards(records).complete
    assert not merge_shards([records[0], None, records[2]]).complete
    assert "INCOMPLETE" in merge_shards([records[0], None, records[2]]).format()


def test_the_cost_counts_consistent_reads_per_started_4k_and_the_scan_at_half():
    cost = verify_cost(keys=1_000_000, single_units=700_000, collection_keys=400_000,
                       collection_bytes=400_000 * 5000, dynamodb_keys=1_000_000, scanned_bytes=10 * RCU_BYTES,
                       keys_per_second=2_000, shards=4)
    # singles as planned; collections: a head and two units of items each (5 KB); the scan: 10 x 4 KB at half
    assert cost.rcu == 700_000 + 400_000 * 3 + 5
    assert cost.redis_reads == 2_000_000 and cost.seconds == 1_000_000 / 2_000 / 4
    capped = verify_cost(1_000_000, 700_000, 400_000, 400_000 * 5000, 1_000_000, 0, 2_000, 4, max_rcu=100)
    assert capped.seconds == capped.rcu / 100 / 4
    assert "read capacity units" in capped.format() and "4 shards" in capped.format()


@pytest.mark.parametrize("text", ["3/3", "x/2", "1", "2/-1"])
def test_a_shard_must_be_i_of_n(text):
    args = build_parser().parse_args(["verify", "--config", "c.yaml", "--shard", text])
    with pytest.raises(ConfigError, match="--shard"):
        _shard(args)


def test_a_shard_is_parsed():
    assert _shard(build_parser().parse_args(["verify", "--config", "c.yaml", "--shard", "2/5"])) == (2, 5)
    assert _shard(build_parser().parse_args(["verify", "--config", "c.yaml"])) == (0, 1)


def test_a_record_stays_within_one_dynamodb_item_whatever_the_keys():
    """A checkpoint is one state-table item (at most 400 KB): huge keys, many of them, and errors naming them."""
    report = VerifyReport()
    for i in range(KEPT_KEYS):
        _drifted(report, b"k" * 1024 + str(i).encode(), DriftKind.VALUE)
        report.add_unsettled(b"u" * 1024 + str(i).encode())
    for i in range(200):
        report.add_error(f"{b'e' * 3000!r}{i}: DynamoDB ValidationException: key too long")
    text = ShardRecord(0, 1, 4, {}, report, 0.0, 0.0).to_json()
    assert len(text.encode()) < 200 * 1024
    again = ShardRecord.from_json(text).report
    assert (again.drift_keys, again.unsettled, again.error_count) == (KEPT_KEYS, KEPT_KEYS, 200)
    assert 0 < len(again.drifted_keys) < KEPT_KEYS and all(len(e) <= 300 for e in again.errors)


def test_only_shards_of_one_run_merge():
    def shard(i: int, run: str, started: float) -> ShardRecord:
        return ShardRecord(i, 2, 4, {}, VerifyReport(keys_checked=10), started, started + 1, done=True, run=run)

    old_and_new = [shard(0, "job-2", 200.0), shard(1, "job-1", 100.0)]
    assert not merge_shards(old_and_new).complete  # the newest run is job-2, and its shard 1 has not reported
    assert merge_shards([shard(0, "job-2", 200.0), shard(1, "job-2", 210.0)]).complete
    assert merge_shards(old_and_new, run="job-1").keys_checked == 10
