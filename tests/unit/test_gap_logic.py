"""The pure parts of gap healing: which INFO changes are gaps, when a watermark is passed, mirror parts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.capture.watch import ServerMarks, unannounced_change
from replicator.core import mirror
from replicator.core.values import B, L, M, N, S
from replicator.core.watermark import Watermark

BASE = ServerMarks("run-a", "repl-a", 1000, {"flushall": 1, "flushdb": 2, "swapdb": 0, "debug": 0})


def _marks(**changes):
    fields = {"run_id": BASE.run_id, "replication_id": BASE.replication_id,
              "commands_processed": BASE.commands_processed, "calls": dict(BASE.calls)}
    calls = changes.pop("calls", {})
    fields.update(changes)
    fields["calls"].update(calls)
    return ServerMarks(**fields)


@pytest.mark.parametrize(("after", "reason"), [
    (_marks(commands_processed=1500), None),  # ordinary traffic
    (_marks(run_id="run-b", commands_processed=3), "restart"),
    (_marks(replication_id="repl-b"), "failover"),
    (_marks(commands_processed=10, calls={"flushdb": 0}), "resetstat"),
    (_marks(commands_processed=1010, calls={"flushdb": 3}), "flushdb"),
    (_marks(commands_processed=1010, calls={"flushall": 2}), "flushall"),
    (_marks(commands_processed=1010, calls={"swapdb": 1}), "swapdb"),
    (_marks(commands_processed=1010, calls={"debug": 1}), "debug"),
])
def test_unannounced_changes_are_gaps_with_their_reason(after, reason):
    assert unannounced_change(BASE, after) == reason


def test_the_first_reading_is_no_gap_of_its_own():
    assert unannounced_change(None, BASE) is None


def test_a_watermark_is_passed_once_every_partition_is_committed_past_it():
    watermark = Watermark({0: 10, 1: 0, 2: 5})
    assert watermark.remaining({0: None, 1: None, 2: None}) == 15
    assert watermark.remaining({0: 7, 1: None, 2: 5}) == 3
    assert watermark.remaining({0: 12, 1: 4, 2: 5}) == 0  # committed beyond it: later events, not owed
    assert Watermark.from_json(watermark.to_json()) == watermark


typed_values = st.recursive(
    st.one_of(st.binary(max_size=50).map(B), st.text(max_size=20).map(S),
              st.integers().map(lambda n: N(str(n)))),
    lambda inner: st.one_of(st.lists(inner, max_size=6).map(lambda v: L(tuple(v))),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4).map(
                                lambda d: M(tuple(sorted(d.items()))))),
    max_leaves=30)


@given(typed_values, st.integers(min_value=1, max_value=64))
def test_a_mirror_value_split_into_parts_reads_back_whole(value, part_bytes):
    parts = mirror.split(value, part_bytes)
    assert all(len(p) <= part_bytes for p in parts)
    assert mirror.decode(b"".join(parts)) == value


def test_only_values_above_the_inline_limit_go_to_parts():
    assert not mirror.needs_parts(B(b"x" * 1000))
    assert mirror.needs_parts(B(b"x" * (mirror.INLINE_BYTES + 1)))
    assert mirror.needs_parts(L(tuple(B(b"y" * 100) for _ in range(4000))))


def test_part_names_sort_by_version_then_index():
    names = [mirror.part_name(v, i) for v, i in [(1, 2), (10, 0), (2, 11), (2, 3), (10**15, 0)]]
    assert sorted(names) == [mirror.part_name(*p) for p in [(1, 2), (2, 3), (2, 11), (10, 0), (10**15, 0)]]


class _Progress:
    """The applier group committing a little more on each look, with Kafka away once."""

    def __init__(self) -> None:
        self.looks = 0

    def end(self) -> dict[int, int]:
        return {0: 30, 1: 3}

    def committed(self) -> dict[int, int | None]:
        from replicator.core.errors import BrokerError

        self.looks += 1
        if self.looks == 2:
            raise BrokerError("coordinator not available", retryable=True)
        return {0: min(30, self.looks * 10), 1: None if self.looks < 3 else 3}


def test_the_reconcile_waits_until_the_group_is_past_the_watermark_through_a_kafka_hiccup():
    from replicator.capture.reconcile import Reconciler

    progress = _Progress()
    reconciler = Reconciler(lambda: iter(()), progress, None, poll_s=0)
    watermark = reconciler.note("node", "restart")
    assert reconciler.wait("node", watermark, cancelled=lambda: False, pause=lambda s: False)
    assert progress.looks == 3


def test_a_newer_gap_cancels_the_wait():
    from replicator.capture.reconcile import Reconciler

    reconciler = Reconciler(lambda: iter(()), _Progress(), None, poll_s=0)
    watermark = reconciler.note("node", "flushdb")
    assert not reconciler.wait("node", watermark, cancelled=lambda: False, pause=lambda s: True)
