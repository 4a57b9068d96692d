"""Updates and deletions of every kind reach DynamoDB, and deleted data stays deleted."""

from __future__ import annotations

from replicator.local.demo import Workload, lsi_newest_first, zrevrange
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    ddb,
    eventually,
    messaging_config,
    messaging_table,
    scan_all,
)


def _item(client, table, owner, opponent):
    return client.get_item(TableName=table, Key={"owner_id": {"S": owner}, "opponent_id": {"S": opponent}},
                           ConsistentRead=True).get("Item")


def test_score_update_zrem_del_and_expiry_are_followed(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    table = messaging_table(config)
    with Running(config) as run:
        run.start_applier().start_listener()
        workload = Workload(r, owners=5)
        workload.seed(opponents=4)
        assert_converged(r, client, config)

        r.zadd("opponents:user0000", {"peer001": 1_800_000_000_000})  # new score: moves to the top
        r.zrem("opponents:user0001", "peer002")  # member gone, its meta stays
        r.delete("meta:user0002:peer003")  # meta gone, the member stays
        r.delete("opponents:user0003")  # the whole list gone
        r.set("meta:user0004:peer000", "short-lived", px=300)
        r.pexpire("opponents:user0004", 300)
        eventually(lambda: not r.exists("meta:user0004:peer000", "opponents:user0004"), 30,
                   message="Redis expired the keys")
        assert_converged(r, client, config)

    assert lsi_newest_first(client, "user0000", table)[0] == ("peer001", "1800000000000")
    assert lsi_newest_first(client, "user0000", table) == zrevrange(r, "user0000")
    gone_member = _item(client, table, "user0001", "peer002")
    assert "timestamp" not in gone_member and "metadata" in gone_member
    gone_meta = _item(client, table, "user0002", "peer003")
    assert "metadata" not in gone_meta and "timestamp" in gone_meta
    assert lsi_newest_first(client, "user0003", table) == []
    expired = _item(client, table, "user0004", "peer000")
    assert "metadata" not in expired and "timestamp" not in expired
    # The tombstone keeps the version, so a late older event cannot bring the data back, and it will expire.
    assert "_v_meta" in expired and "_deleted_meta" in expired and "_expires" in expired


def test_tombstone_ttl_is_set_only_when_no_other_rule_has_live_data_on_the_item(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    table = messaging_table(config)
    with Running(config) as run:
        run.start_applier().start_listener()
        r.zadd("opponents:u1", {"p1": 1, "p2": 2})
        r.set("meta:u1:p1", "m1")
        assert_converged(r, client, config)
        r.zrem("opponents:u1", "p1", "p2")  # p1 keeps its meta: no TTL; p2 has nothing left: TTL
        assert_converged(r, client, config)
    items = {i["opponent_id"]["S"]: i for i in scan_all(client, table)}
    assert "_expires" not in items["p1"] and items["p1"]["metadata"] == {"S": "m1"}
    assert "_expires" in items["p2"]
