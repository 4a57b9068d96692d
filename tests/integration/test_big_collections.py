"""Big collections: read in pages, published in chunks of one version, applied whole."""

from __future__ import annotations

import pytest
import redis

from replicator.core.avro import EventCodec
from replicator.core.config import parse_config
from replicator.local.demo import dynamodb_view
from tests.support import Running, clean_redis, ddb, eventually, fully_committed, messaging_config_data, topic_records

#: Big enough for several chunks of the broker's 1 MB message limit and several 1 MB Query pages; 200k took 11
#: minutes on a slow day of the 2-core machine, most of it DynamoDB Local counting.
MEMBERS = 100_000


def _leaderboard_config(stack, uid):
    data = messaging_config_data(stack, uid)
    data["tables"]["leaderboards"] = {"name": f"leaderboards_{uid}", "partition_key": "board", "sort_key": "player"}
    data["rules"] = [{"match": "board:{board}", "type": "zset", "table": "leaderboards",
                      "item": {"board": "{board}", "player": "{member}", "points": "{score}"}}, *data["rules"]]
    # 100-item transactions: ~5x fewer requests than one UpdateItem per member on DynamoDB Local.
    data["apply"] = {**data["apply"], "write_mode": "transaction", "max_batch": 20}
    data["capture"] = {**data["capture"], "max_inline_members": 10_000, "chunk_bytes": 256 * 1024}
    return parse_config(data)


def _live_players(client, table, board):
    players = {}
    for page in client.get_paginator("query").paginate(
        TableName=table, KeyConditionExpression="board = :b", FilterExpression="attribute_exists(points)",
        ExpressionAttributeValues={":b": {"S": board}}, ConsistentRead=True,
    ):
        for item in page["Items"]:
            players[item["player"]["S"]] = item["points"]["N"]
    return players


def _live_count(client, table, board):
    """Counted by DynamoDB: cheaper to poll than reading every item back each time."""
    total = 0
    for page in client.get_paginator("query").paginate(
        TableName=table, KeyConditionExpression="board = :b", FilterExpression="attribute_exists(points)",
        ExpressionAttributeValues={":b": {"S": board}}, ConsistentRead=True, Select="COUNT",
    ):
        total += page["Count"]
    return total


@pytest.mark.slow
def test_a_100k_member_zset_replicates_completely_and_shrinking_it_deletes_the_rest(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = _leaderboard_config(stack, uid)
    table = f"leaderboards_{uid}"
    with Running(config) as run:
        run.start_applier().start_listener()
        # Built in another database (not captured: the mirror would take every step of it) and moved in whole:
        # one notification for the whole set.
        build = redis.Redis.from_url(stack.redis_url.rsplit("/", 1)[0] + "/1")
        build.delete("board:global")
        pipe = build.pipeline(transaction=False)
        for i in range(MEMBERS):
            pipe.zadd("board:global", {f"player{i:06d}": i})
            if i % 20_000 == 19_999:
                pipe.execute()
        pipe.execute()
        assert build.move("board:global", 0)

        # Polled every 10 s: each count makes DynamoDB Local read the whole partition, on the applier's core.
        eventually(lambda: _live_count(client, table, "global") == MEMBERS, 600, interval=10,
                   message=f"{MEMBERS} members in DynamoDB")
        players = _live_players(client, table, "global")
        assert players["player000000"] == "0" and players[f"player{MEMBERS - 1:06d}"] == str(MEMBERS - 1)

        r.zremrangebyrank("board:global", 0, MEMBERS - 11)  # keep the top 10
        eventually(lambda: _live_count(client, table, "global") == 10, 600, interval=10,
                   message="only 10 members left")
        eventually(lambda: fully_committed(config), 60, message="everything committed")
    assert _live_players(client, table, "global") == {f"player{i:06d}": str(i) for i in range(MEMBERS - 10, MEMBERS)}

    chunks = [EventCodec().decode(rec.value) for rec in topic_records(config) if b"board:global" in rec.value[:200]]
    big = [e for e in chunks if e.chunk is not None]
    assert big and len({e.version for e in big}) == 1 and {e.chunk.count for e in big} == {len(big)}
    assert max(len(rec.value) for rec in topic_records(config)) < 1_000_000  # never above the broker's max


def test_offsets_wait_for_the_last_chunk_and_an_abandoned_state_does_not_pin_them(stack, uid):
    from replicator.adapters.kafka.producer import EventPublisher
    from replicator.core.events import ChangeEvent, Chunk, KeyType, Op, Origin
    from tests.support import committed_and_end, messaging_config

    client = ddb(stack)
    config = messaging_config(stack, uid)
    table = config.table_name("messaging")

    def chunk(version, index, count, members):
        return ChangeEvent(b"opponents:zoe", KeyType.ZSET, Op.UPSERT, Origin.LIVE, version, version, b"zoe",
                           tuple((m.encode(), s) for m, s in members), chunk=Chunk(index, count))

    def partition_state():
        committed, end = committed_and_end(config)
        (partition,) = [p for p, e in end.items() if e]
        return committed[partition] or 0, end[partition]

    def live(owner):
        return {opponent for (o, opponent) in dynamodb_view(client, table) if o == owner}

    with Running(config) as run:
        run.start_applier()
        publisher = EventPublisher(config.kafka)
        publisher.publish(chunk(100, 0, 3, [("a", 1)]))
        publisher.publish(chunk(100, 1, 3, [("b", 2)]))
        publisher.flush()
        # Two of three chunks: nothing applied, and the commit stays at the first chunk (offset 0).
        # A later event of the same owner (same partition): applied, but it cannot move the commit.
        publisher.publish(ChangeEvent(b"meta:zoe:other", KeyType.STRING, Op.UPSERT, Origin.LIVE, 150, 150, b"zoe",
                                      b"x"))
        publisher.flush()
        eventually(lambda: "other" in live("zoe"), 60, message="the later event applied")
        assert partition_state()[0] == 0 and live("zoe") == {"other"}

        publisher.publish(chunk(100, 2, 3, [("c", 3)]))
        publisher.flush()
        eventually(lambda: live("zoe") == {"a", "b", "c", "other"}, 60, message="the whole state applied")
        eventually(lambda: partition_state()[0] == partition_state()[1], 30, message="commit released")

        # A state abandoned mid-publish (its producer died) is superseded by a newer complete one.
        publisher.publish(chunk(200, 0, 2, [("x", 1)]))
        publisher.publish(ChangeEvent(b"opponents:zoe", KeyType.ZSET, Op.UPSERT, Origin.SNAPSHOT, 300, 300, b"zoe",
                                      ((b"a", 1.0),)))
        publisher.close()
        eventually(lambda: live("zoe") == {"a", "other"}, 60, message="the newer complete state applied")
        eventually(lambda: partition_state()[0] == partition_state()[1], 30, message="nothing pins the commit")
