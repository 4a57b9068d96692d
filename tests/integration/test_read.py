"""The read adapter answers Redis' queries from DynamoDB exactly as Redis does; shadow reads count the differences."""

from __future__ import annotations

from replicator import metrics
from replicator.read import DynamoRead, ShadowReads
from tests.support import Running, assert_converged, clean_redis, ddb, messaging_config, messaging_table


def _shadow_count(query, result):
    return metrics.SHADOW_READS.labels(command=query, result=result)._value.get()


def test_dynamodb_answers_like_redis_including_ties_limits_and_a_tombstoned_member(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()
        # Ties in score are ordered by member, descending, in ZREVRANGE: the adapter must do the same.
        r.zadd("opponents:alice", {"bob": 30, "carol": 20, "dave": 20, "erin": 20, "frank": 10, "gina": 5.5})
        r.zadd("opponents:zoe", {"yann": 1})
        r.set("meta:alice:bob", "first match")
        r.set("plain", b"\x00\xffbinary")
        assert_converged(r, client, config)
        r.zrem("opponents:alice", "frank")  # a tombstone in DynamoDB, out of the LSI
        r.zadd("opponents:alice", {"carol": 40})
        assert_converged(r, client, config)
    tombstone = client.get_item(TableName=messaging_table(config),
                                Key={"owner_id": {"S": "alice"}, "opponent_id": {"S": "frank"}})["Item"]
    assert "_deleted_opponents" in tombstone  # really a tombstone, not a missing item

    dynamo = DynamoRead(client, run.ctx.rules)
    for start, stop in [(0, -1), (0, 0), (0, 2), (1, 3), (2, 4), (-2, -1), (3, 100), (5, 2), (10, 20)]:
        want = [(m, s) for m, s in r.zrevrange("opponents:alice", start, stop, withscores=True)]
        assert dynamo.zrevrange(b"opponents:alice", start, stop) == want, (start, stop)
    assert dynamo.zrevrange(b"opponents:nobody") == [] == r.zrevrange("opponents:nobody", 0, -1)
    assert dynamo.zscore(b"opponents:alice", b"carol") == 40.0 == r.zscore("opponents:alice", "carol")
    assert dynamo.zscore(b"opponents:alice", b"frank") is None is r.zscore("opponents:alice", "frank")
    assert dynamo.zcard(b"opponents:alice") == 5 == r.zcard("opponents:alice")
    assert dynamo.get(b"meta:alice:bob") == b"first match" == r.get("meta:alice:bob")
    assert dynamo.get(b"meta:alice:frank") is None
    assert dynamo.get(b"plain") == b"\x00\xffbinary"  # the mirror rule, binary-safe

    shadow = ShadowReads(r, dynamo)
    matches = _shadow_count("zrevrange", "match")
    assert shadow.zrevrange(b"opponents:alice", 0, 2) == r.zrevrange("opponents:alice", 0, 2, withscores=True)
    assert shadow.zcard(b"opponents:zoe") == 1 and shadow.get(b"meta:alice:bob") == b"first match"
    assert _shadow_count("zrevrange", "match") == matches + 1
    # DynamoDB changed behind the replicator's back: the caller still gets Redis' answer; the mismatch is counted.
    client.update_item(TableName=messaging_table(config), Key={"owner_id": {"S": "alice"}, "opponent_id": {"S": "bob"}},
                       UpdateExpression="SET #t = :t", ExpressionAttributeNames={"#t": "timestamp"},
                       ExpressionAttributeValues={":t": {"N": "99"}})
    mismatches = _shadow_count("zrevrange", "mismatch")
    assert shadow.zrevrange(b"opponents:alice") == r.zrevrange("opponents:alice", 0, -1, withscores=True)
    assert _shadow_count("zrevrange", "mismatch") == mismatches + 1
