"""Capture shards: each listener publishes only its owners' keys; together they replicate everything."""

from __future__ import annotations

from replicator import pipeline
from replicator.core.avro import EventCodec
from replicator.core.shards import in_shard
from replicator.local.demo import Workload
from tests.support import Running, assert_converged, clean_redis, ddb, eventually, messaging_config, topic_records


def test_listener_shards_split_the_owners_and_together_replicate_everything(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    shards = [messaging_config(stack, uid, capture={"coalesce_ms": 2, "shards": 2, "shard": s}) for s in (0, 1)]
    rules, codec = pipeline.context(shards[0]).rules, EventCodec()

    def owners_published() -> set[bytes]:
        return {codec.decode(record.value).owner for record in topic_records(shards[0])}

    with Running(shards[0]) as first:
        first.start_applier().start_listener()
        workload = Workload(r, owners=30)
        workload.seed(opponents=4)
        for _ in range(100):
            workload.step()
        owners = {rules.owner_of(key) for key in r.scan_iter()}
        first_shard = {owner for owner in owners if in_shard(owner, 0, 2)}
        assert first_shard and first_shard != owners
        assert eventually(lambda: first_shard <= owners_published() and owners_published()) == first_shard

        with Running(shards[1]) as second:
            second.start_listener()  # its start is a gap: its re-snapshot publishes the other shard's keys
            assert_converged(r, client, shards[0])
            assert owners_published() == owners
