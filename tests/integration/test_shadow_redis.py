"""ShadowRedis: Redis answers, DynamoDB is compared, and lag is not a mismatch.

The appliers are stopped while thousands of changes go through Redis (they lag by all of them); the shadow reads
made meanwhile differ from DynamoDB, and all of them turn out to be lag once the appliers are back and have
committed past the Redis state each was read at: 0 mismatches. A difference planted in DynamoDB (nothing on its way
to fix it) is then reported once, as a mismatch.
"""

from __future__ import annotations

from replicator import metrics
from replicator.adapters.kafka.offsets import GroupOffsets
from replicator.dynamo_redis import DynamoRedis, ShadowRedis
from tests.support import Running, assert_converged, clean_redis, ddb, eventually, messaging_config, messaging_table


def _count(command: str, result: str) -> float:
    return metrics.SHADOW_READS.labels(command=command, result=result)._value.get()


def test_lagging_appliers_are_not_mismatches_and_a_planted_difference_is(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    owners = [f"o{i}" for i in range(40)]
    for owner in owners:
        r.zadd(f"opponents:{owner}", {f"p{j}": j for j in range(5)})
    r.set("m1", "v")
    with Running(config) as run:
        run.start_applier().start_listener()
        assert_converged(r, client, config)
    before = {result: _count("zrevrange", result) + _count("zscore", result) + _count("get", result)
              for result in ("match", "mismatch", "lag", "unsettled", "error")}

    shadow = ShadowRedis(r, DynamoRedis.from_config(config),
                         GroupOffsets(config.kafka, config.kafka.topic, config.kafka.group_id), catch_up_s=120)
    with Running(config) as run:
        run.start_listener()  # no applier: DynamoDB falls behind by every change below
        for step in range(3000):
            owner = owners[step % len(owners)]
            r.zadd(f"opponents:{owner}", {f"p{step % 7}": 1000 + step})
        answers = [shadow.zrevrange(f"opponents:{owner}", 0, 2, withscores=True) for owner in owners]
        shadow.zscore("opponents:o1", "p6")
        assert answers[0] == r.zrevrange("opponents:o0", 0, 2, withscores=True)  # Redis' answers, unchanged
        counts = {res: _count("zrevrange", res) for res in ("match", "mismatch", "lag", "unsettled", "error")}
        assert shadow.pending() > 0, counts  # differences: DynamoDB is behind
        run.start_applier()
        eventually(lambda: shadow.pending() == 0, 150, message="every difference settled")

    after = {result: _count("zrevrange", result) + _count("zscore", result) + _count("get", result)
             for result in before}
    assert after["mismatch"] == before["mismatch"]
    assert after["lag"] - before["lag"] >= len(owners)
    assert after["error"] == before["error"] and after["unsettled"] == before["unsettled"]

    # A planted difference: DynamoDB changed behind everyone's back, nothing in Kafka will fix it.
    client.update_item(TableName=messaging_table(config), Key={"owner_id": {"S": "o3"}, "opponent_id": {"S": "p0"}},
                       UpdateExpression="SET #t = :t", ExpressionAttributeNames={"#t": "timestamp"},
                       ExpressionAttributeValues={":t": {"N": "-5"}})
    assert shadow.zscore("opponents:o3", "p0") == r.zscore("opponents:o3", "p0")
    eventually(lambda: shadow.pending() == 0, 60, message="the planted difference settled")
    assert (_count("zrevrange", "mismatch") + _count("zscore", "mismatch") + _count("get", "mismatch")
            == before["mismatch"] + 1)
    shadow.close()
