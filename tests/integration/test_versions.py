"""Versions decide, not arrival order: late stale states and bursts."""

from __future__ import annotations

from replicator import metrics
from replicator.adapters.kafka.producer import EventPublisher
from replicator.core.avro import EventCodec
from replicator.core.events import ChangeEvent, KeyType, Op, Origin
from replicator.local.demo import dynamodb_view
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    ddb,
    eventually,
    fully_committed,
    messaging_config,
    messaging_table,
    topic_records,
)


def test_an_older_state_arriving_after_a_delete_never_resurrects_the_item(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    table = messaging_table(config)
    with Running(config) as run:
        run.start_applier().start_listener()
        r.zadd("opponents:ann", {"p1": 1, "p2": 2})
        r.set("meta:ann:p1", "hello")
        assert_converged(r, client, config)
        item = client.get_item(TableName=table, Key={"owner_id": {"S": "ann"}, "opponent_id": {"S": "p1"}},
                               ConsistentRead=True)["Item"]
        zset_version, meta_version = int(item["_v_opponents"]["N"]), int(item["_v_meta"]["N"])
        r.delete("opponents:ann", "meta:ann:p1")
        assert_converged(r, client, config)
        stale_before = metrics.EVENTS_APPLIED.labels(table=table, result="stale")._value.get()

        # What a slow snapshot read from before the delete would publish now.
        late = EventPublisher(config.kafka)
        late.publish(ChangeEvent(b"opponents:ann", KeyType.ZSET, Op.UPSERT, Origin.SNAPSHOT, zset_version,
                                 zset_version, b"ann", ((b"p1", 1.0), (b"p2", 2.0), (b"p3", 3.0))))
        late.publish(ChangeEvent(b"meta:ann:p1", KeyType.STRING, Op.UPSERT, Origin.SNAPSHOT, meta_version,
                                 meta_version, b"ann", b"hello"))
        late.close()
        eventually(lambda: fully_committed(config), 60, message="the late events consumed")
    assert {k: v for k, v in dynamodb_view(client, table).items() if k[0] == "ann"} == {}
    assert metrics.EVENTS_APPLIED.labels(table=table, result="stale")._value.get() >= stale_before + 1


def test_a_burst_of_notifications_on_one_key_costs_one_read_and_one_event(stack, uid):
    r = clean_redis(stack)
    config = messaging_config(stack, uid, capture={"coalesce_ms": 500})
    with Running(config) as run:
        run.start_listener()
        pipe = r.pipeline(transaction=False)
        for i in range(200):
            pipe.set("meta:burst:x", i)
        pipe.execute()  # 200 notifications within a few milliseconds
        r.set("meta:burst:sentinel", "after")  # same owner, same partition: once it is there, so is the burst

        def burst_events():
            records = topic_records(config)
            if not any(rec.key == b"burst" and b"sentinel" in rec.value for rec in records):
                return None
            return [rec for rec in records if b"meta:burst:x" in rec.value]

        events = eventually(burst_events, 30, message="the sentinel event")
    assert len(events) == 1
    assert EventCodec().decode(events[0].value).value == b"199"  # the one read saw the last state
