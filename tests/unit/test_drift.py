"""Drift between expected and actual items, and DynamoDB item sizing: pure functions."""

from __future__ import annotations

import pytest

from replicator.core.drift import DriftKind, compare_items, same_differences
from replicator.core.sizes import attribute_size, number_size
from replicator.core.values import B, N, S

K1 = (("owner_id", S("o")), ("opponent_id", S("a")))
K2 = (("owner_id", S("o")), ("opponent_id", S("b")))
K3 = (("owner_id", S("o")), ("opponent_id", S("c")))


def test_each_kind_is_named_once_per_item():
    expected = {K1: (("timestamp", N("1")),), K2: (("timestamp", N("2")),)}
    actual = {K2: (("timestamp", N("3")),), K3: (("timestamp", N("4")),)}
    found = {(d.kind, d.item_key) for d in compare_items(expected, actual)}
    assert found == {(DriftKind.MISSING, K1), (DriftKind.VALUE, K2), (DriftKind.EXTRA, K3)}
    assert compare_items(expected, dict(expected)) == []


def test_expiries_within_two_ms_are_equal_and_a_lost_ttl_is_ttl_drift():
    def mirror(expire):
        attrs = [("type", S("string")), ("value", B(b"v"))]
        return tuple(attrs + ([("expire_at", N(str(expire)))] if expire else []))

    assert compare_items({K1: mirror(1000)}, {K1: mirror(1002)}) == []
    (late,) = compare_items({K1: mirror(1000)}, {K1: mirror(1003)})
    (lost,) = compare_items({K1: mirror(1000)}, {K1: mirror(None)})
    assert late.kind is lost.kind is DriftKind.TTL
    (changed,) = compare_items({K1: mirror(1000)}, {K1: (("type", S("string")), ("value", B(b"w")),
                                                         ("expire_at", N("1000")))})
    assert changed.kind is DriftKind.VALUE
    assert "value_differs [owner_id=o, opponent_id=a]: redis {type=string, value=b'v', expire_at=1000}" \
        in changed.describe()


def test_a_ttl_drift_read_twice_is_the_same_drift_though_redis_expiry_moved_by_a_ms():
    """The verifier counts drift only when two rechecks find the same differences; Redis' expiry instant is TIME +
    PTTL of each read, so an unchanged key's can move by a millisecond between them (a CI run reported a TTL-only
    drift as none, the key never looking still)."""
    def mirror(expire):
        return (("type", S("string")), ("value", B(b"v")), ("expire_at", N(str(expire))))

    first = compare_items({K1: mirror(5_000)}, {K1: mirror(1_000)})
    again = compare_items({K1: mirror(5_001)}, {K1: mirror(1_000)})
    assert first != again and same_differences(first, again)
    assert not same_differences(first, compare_items({K1: mirror(5_003)}, {K1: mirror(1_000)}))  # Redis changed it
    assert not same_differences(first, compare_items({K1: mirror(5_000)}, {K1: mirror(1_001)}), "")  # no TTL rule
    assert not same_differences(first, [])


@pytest.mark.parametrize(("number", "size"), [("0", 2), ("7", 2), ("12", 2), ("123", 3), ("1700000000", 2),
                                              ("1700000000123", 8), ("-1.5", 2), ("9999999999999999", 9)])
def test_numbers_take_a_byte_per_two_significant_digits_plus_one(number, size):
    assert number_size(number) == size


def test_attribute_sizes_count_the_name_and_the_value():
    assert attribute_size("owner_id", S("héllo")) == 8 + 6
    assert attribute_size("k", B(b"\x00\x01")) == 1 + 2
    assert attribute_size("t", N("1700000000123")) == 1 + 8
