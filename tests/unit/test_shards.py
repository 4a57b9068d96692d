"""Capture shards: every owner is captured by exactly one shard, all of an owner's keys by the same one."""

from __future__ import annotations

from replicator.core.config import parse_config
from replicator.core.shards import in_shard


def test_every_owner_falls_in_exactly_one_shard_and_shards_share_the_load():
    owners = [f"player-{i}".encode() for i in range(3000)]
    for shards in (1, 2, 3, 7):
        counts = [sum(in_shard(o, shard, shards) for o in owners) for shard in range(shards)]
        assert all(sum(in_shard(o, s, shards) for s in range(shards)) == 1 for o in owners)
        assert min(counts) > 0.8 * len(owners) / shards


def test_all_keys_of_an_owner_go_to_its_shard():
    config = parse_config({
        "tables": {"opponents": {"partition_key": "player", "sort_key": "opponent"}},
        "rules": [
            {"name": "opponents", "match": "opponents:{owner}", "type": "zset", "table": "opponents",
             "item": {"player": "{owner}", "opponent": "{member}", "score": "{score}"}},
            {"name": "meta", "match": "meta:{owner}:{opponent}", "type": "string", "table": "opponents",
             "item": {"player": "{owner}", "opponent": "{opponent}", "note": "{value}"}},
        ],
    })
    rules = config.rule_set
    for i in range(200):
        owner = f"p{i}".encode()
        keys = [b"opponents:" + owner, b"meta:" + owner + b":x", b"meta:" + owner + b":y"]
        assert {rules.owner_of(k) for k in keys} == {owner}
        assert len({next(s for s in range(4) if in_shard(rules.owner_of(k), s, 4)) for k in keys}) == 1
    assert rules.owner_of(b"unrelated") is None
