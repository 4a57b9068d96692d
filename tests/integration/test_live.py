"""Live replication on the real local stack: Redis writes → listener → Kafka → applier → DynamoDB."""

from __future__ import annotations

from replicator.local.demo import Workload, lsi_newest_first, zrevrange
from replicator.metrics import END_TO_END_LATENCY
from tests.support import Running, assert_converged, clean_redis, ddb, messaging_config, messaging_table


def test_live_writes_replicate_exactly_and_lsi_order_matches_zrevrange(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    latency_before = END_TO_END_LATENCY._sum.get()
    with Running(config) as run:
        run.start_applier().start_listener()
        workload = Workload(r, owners=25)
        workload.seed(opponents=10)
        for _ in range(300):
            workload.step()
        assert_converged(r, client, config)
        run.check()
    for owner in workload.owners:
        assert lsi_newest_first(client, owner, messaging_table(config)) == zrevrange(r, owner)
    assert END_TO_END_LATENCY._sum.get() > latency_before


def test_keys_no_rule_matches_are_mirrored_with_type_value_and_expiry(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()
        r.hset("profile:42", mapping={"name": "Ada", "lang": "en"})
        r.set("session:9", "token", ex=3600)
        mirror = f"mirror_{uid}"

        def mirrored():
            items = {i["key"]["B"]: i for i in client.scan(TableName=mirror, ConsistentRead=True)["Items"]
                     if "value" in i}
            return items if {b"profile:42", b"session:9"} <= set(items) else None

        from tests.support import eventually

        items = eventually(mirrored, 60, message="mirror items")
    profile = items[b"profile:42"]
    assert profile["type"] == {"S": "hash"}
    fields = {pair["L"][0]["B"]: pair["L"][1]["B"] for pair in profile["value"]["L"]}
    assert fields == {b"name": b"Ada", b"lang": b"en"}
    session = items[b"session:9"]
    assert session["value"] == {"B": b"token"}
    expire_at_ms = int(session["expire_at"]["N"])
    assert abs(expire_at_ms / 1000 - (r.time()[0] + r.ttl("session:9"))) < 5
