"""DynamoDB request shapes: version conditions, tombstones, and when a tombstone may expire."""

from __future__ import annotations

from replicator.core.mapping import EMPTY_STATE, ItemWrite, plan_writes
from replicator.core.statements import (
    TRANSACTION_BYTES,
    expire_tombstone_request,
    head_request,
    transactions,
    update_request,
    write_size,
)
from replicator.core.values import B, N, S
from tests.unit.rules import messaging, zset_event


def _writes():
    rules = messaging()
    rule, variables = rules.match(b"opponents:alice")
    applied = plan_writes(rule, variables, zset_event("alice", {"bob": 1}, 10), EMPTY_STATE)
    removed = plan_writes(rule, variables, zset_event("alice", {}, 11), applied.state)
    return rules, applied.writes[0], removed.writes[0]


def test_every_write_is_conditional_on_the_version():
    rules, upsert, tombstone = _writes()
    for write in (upsert, tombstone):
        request = update_request(write, rules)
        assert request["ConditionExpression"] == "attribute_not_exists(#v) OR #v <= :v"
        assert request["ExpressionAttributeNames"]["#v"] == "_v_opponents"
        used = request["UpdateExpression"] + request["ConditionExpression"]
        assert all(name in used for name in request["ExpressionAttributeNames"])  # DynamoDB rejects unused names


def test_an_upsert_revives_the_group_and_clears_the_expiry():
    rules, upsert, _ = _writes()
    request = update_request(upsert, rules)
    assert request["UpdateExpression"].startswith("SET #v = :v, #n")
    assert "REMOVE #d, #ttl" in request["UpdateExpression"]
    assert request["ExpressionAttributeNames"]["#ttl"] == "_expires"


def test_a_tombstone_removes_the_data_and_keeps_the_version():
    rules, _, tombstone = _writes()
    request = update_request(tombstone, rules)
    assert request["UpdateExpression"] == "SET #v = :v, #d = :v REMOVE #n2"
    assert request["ExpressionAttributeNames"]["#n2"] == "timestamp"


def test_a_tombstone_expires_only_when_every_other_group_on_the_item_is_gone():
    rules, _, tombstone = _writes()
    request = expire_tombstone_request(tombstone, rules, expire_at_s=1234)
    assert request["ConditionExpression"] == "#d = :v AND (attribute_not_exists(#gv0) OR attribute_exists(#gd0))"
    assert request["ExpressionAttributeNames"]["#gv0"] == "_v_meta"


def test_a_deleted_collection_head_expires_with_its_tombstones():
    live = head_request("state", "opponents", b"opponents:alice", 5, False, "_expires", 99)
    deleted = head_request("state", "opponents", b"opponents:alice", 6, True, "_expires", 99)
    assert live["UpdateExpression"] == "SET #v = :v REMOVE #ttl"
    assert deleted["UpdateExpression"] == "SET #v = :v, #ttl = :exp"
    assert live["Key"] == {"k": {"B": b"opponents\x00opponents:alice"}}


def _item_write(owner: str, opponent: str, size: int = 10) -> ItemWrite:
    (rule,) = [r for r in messaging().rules if r.name == "opponents"]
    key = (("opponent_id", S(opponent)), ("owner_id", S(owner)))
    return ItemWrite(rule.table, key, rule, 1, (("timestamp", N("1")), ("blob", B(b"x" * size))))


def test_transactions_pack_writes_of_many_keys_up_to_the_item_limit():
    writes = [_item_write(f"o{i}", "x") for i in range(250)]
    (only_round,) = transactions(writes)
    assert [len(t) for t in only_round] == [100, 100, 50]
    assert sorted(i for t in only_round for i in t) == list(range(250))


def test_an_item_written_twice_goes_to_the_next_round():
    # Two keys filling one item: one transaction may not touch it twice, two parallel ones would conflict.
    writes = [_item_write("a", "x"), _item_write("b", "x"), _item_write("a", "x"), _item_write("a", "x")]
    assert transactions(writes) == [[[0, 1]], [[2]], [[3]]]


def test_transactions_stay_under_the_size_limit():
    writes = [_item_write(f"o{i}", "x", size=300_000) for i in range(30)]
    rounds = transactions(writes)
    assert all(sum(write_size(writes[i]) for i in t) <= TRANSACTION_BYTES for t in rounds[0])
    assert len(rounds[0]) == 3
