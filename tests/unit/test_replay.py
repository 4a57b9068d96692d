"""Pure parts of `replicator replay` and `status`: targets, clamping, durations, timestamps, tables."""

from __future__ import annotations

from datetime import timedelta

import pytest

from replicator.core.errors import ConfigError
from replicator.tools.replay import Move, Target, format_moves, parse_duration, parse_timestamp, plan_moves
from replicator.tools.status import GroupStatus, PartitionStatus, format_status

OFFSETS = {0: (50, 10, 100), 1: (None, 0, 40), 2: (7, 7, 7)}  # partition: (committed, earliest, latest)


def test_targets_move_every_partition_and_clamp_into_the_log():
    assert [m.after for m in plan_moves(OFFSETS, Target("earliest"))] == [10, 0, 7]
    assert [m.after for m in plan_moves(OFFSETS, Target("latest"))] == [100, 40, 7]
    # Below the log start the records are gone; past the end they do not exist yet.
    assert [m.after for m in plan_moves(OFFSETS, Target("offset", 5))] == [10, 5, 7]
    assert [m.after for m in plan_moves(OFFSETS, Target("offset", 60))] == [60, 40, 7]
    assert plan_moves(OFFSETS, Target("earliest"))[1] == Move(1, None, 0, 0, 40)


def test_a_time_after_the_last_record_moves_to_the_end():
    moves = plan_moves(OFFSETS, Target("timestamp", 1), by_time={0: 30, 1: None, 2: None})
    assert [m.after for m in moves] == [30, 40, 7]
    assert [m.lag_after for m in moves] == [70, 0, 0]


@pytest.mark.parametrize(("text", "expected"), [
    ("2h", timedelta(hours=2)), ("90m", timedelta(minutes=90)), ("1h30m", timedelta(minutes=90)),
    ("7d", timedelta(days=7)), ("500ms", timedelta(milliseconds=500)), ("1.5h", timedelta(minutes=90)),
])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "h", "2 hours", "-1h", "2h!"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(ConfigError, match=r"write it like 2h, 90m, 1h30m or 7d"):
        parse_duration(text)


def test_timestamps_are_utc_unless_they_say_otherwise():
    assert parse_timestamp("2026-11-23T08:00:00Z") == 1_795_420_800_000
    assert parse_timestamp("2026-11-23T08:00:00") == 1_795_420_800_000
    assert parse_timestamp("2026-11-23T09:00:00+01:00") == 1_795_420_800_000
    with pytest.raises(ConfigError, match="not ISO 8601; write it like 2026-11-23T08:00:00Z"):
        parse_timestamp("yesterday")


def test_the_moves_table_says_what_will_be_reapplied():
    text = format_moves(plan_moves(OFFSETS, Target("earliest")), "g", "t", Target("earliest"), dry_run=True)
    lines = text.splitlines()
    assert lines[0].split() == ["partition", "before", "after", "earliest", "latest", "lag", "after"]
    assert lines[1].split() == ["0", "50", "10", "10", "100", "90"]
    assert lines[2].split() == ["1", "-", "0", "0", "40", "40"]
    assert lines[-1] == ("would move group 'g' on 't' to earliest: 130 record(s) to re-apply "
                         "(dry run: nothing committed)")


def test_status_screen():
    now = 1_795_420_800_000_000
    status = GroupStatus("g", "t", "Empty", 0, [
        PartitionStatus(0, 90, 0, 100, now - 5_000_000, now - 65_000_000),
        PartitionStatus(1, None, 3, 3, None, None),
    ], dead_letters=2)
    text = format_status(status, now_us=now)
    assert text.splitlines()[0] == "group 'g' on topic 't': Empty, 0 member(s)"
    assert "2026-11-23T07:59:55Z (5.0s ago)" in text and "(1.1m ago)" in text
    assert text.splitlines()[-1] == "total lag 10 record(s); dead letters: 2 in t.dlq"
