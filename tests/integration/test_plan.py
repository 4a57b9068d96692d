"""plan predicts, from Redis alone, the items the replicator will write: count exactly, sizes within 10%."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from replicator.tools.plan import Planner
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    config_file,
    ddb,
    messaging_config,
    messaging_table,
    run_cli,
    scan_all,
)


def _generate(r):
    """40 owners with 1-7 opponents, side keys on some of them (same item) and some not (own item), 25 others."""
    pairs = set()
    for owner in range(40):
        members = {f"opponent-{owner}-{m}": 1_700_000_000_000 + owner * 1000 + m for m in range(owner % 7 + 1)}
        r.zadd(f"opponents:user{owner}", members)
        pairs |= {(f"user{owner}", m) for m in members}
        if owner % 3 == 0:
            r.set(f"meta:user{owner}:opponent-{owner}-0", "x" * (10 + owner))  # an attribute of a zset item
            r.set(f"meta:user{owner}:lonely", f"no match yet {owner}")  # an item of its own
            pairs.add((f"user{owner}", "lonely"))
    for n in range(25):
        r.set(f"session:{n}", "s" * (5 * n + 1))
    return len(pairs)


def _dynamodb_size(item: dict) -> int:
    """DynamoDB's sizing rules, written independently of replicator.tools.plan."""
    size = 0
    for name, value in item.items():
        ((kind, raw),) = value.items()
        size += len(name.encode())
        if kind == "S":
            size += len(raw.encode())
        elif kind == "B":
            size += len(bytes(raw))
        elif kind == "N":
            size += math.ceil(len(Decimal(raw).normalize().as_tuple().digits) / 2) + 1
        else:
            raise AssertionError(f"unexpected type {kind}")
    return size


def test_plan_predicts_items_exactly_and_sizes_within_ten_percent(stack, uid, tmp_path):
    r, client = clean_redis(stack), ddb(stack)
    messaging_items = _generate(r)
    config = messaging_config(stack, uid)
    table, mirror = messaging_table(config), config.default.table

    result = run_cli("plan", "--config", str(config_file(stack, uid, tmp_path)), "--json", "--write-rate", "2000")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["redis"]["exact"] and plan["redis"]["keys"] == r.dbsize()
    assert plan["tables"][table]["items"] == messaging_items
    assert plan["tables"][mirror]["items"] == 25
    assert plan["tables"][table]["lsi_items"] == messaging_items - len(range(0, 40, 3))  # lonely items: no score

    with Running(config) as run:
        run.start_applier().start_listener()  # the start re-snapshot replicates everything
        assert_converged(r, client, config)
    for name in (table, mirror):
        actual = [_dynamodb_size(item) for item in scan_all(client, name)]
        predicted = plan["tables"][name]
        assert len(actual) == predicted["items"]
        assert abs(predicted["bytes"] - sum(actual)) <= 0.10 * sum(actual), (name, predicted, sum(actual))
        assert abs(predicted["max_item_bytes"] - max(actual)) <= 0.10 * max(actual)
    # An item write costs 1 WCU (items < 1 KB), again in the LSI for scored items, plus a collection's head.
    assert 1.0 < plan["live"]["wcu_per_event"] < 3.0
    assert plan["live"]["wcu"] == pytest.approx(2000 * plan["live"]["wcu_per_event"], rel=0.01)
    units = sum(t["backfill_write_units"] for t in plan["tables"].values()) + plan["state_table_items"]
    assert plan["backfill"]["write_units"] == units and plan["state_table_items"] == 40  # a head per zset
    assert plan["backfill"]["wcu"] == pytest.approx(units / (24 * 3600), abs=0.001)


def test_a_sampled_plan_extrapolates_and_hot_owners_are_named(stack, uid):
    r = clean_redis(stack)
    _generate(r)
    config = messaging_config(stack, uid)
    planner = Planner(r, config.rule_set)
    sampled = planner.plan(sample=30)
    assert not sampled.exact and sampled.sampled_keys == 30 and sampled.redis_keys == r.dbsize()
    hot = planner.plan(owner_rates={b"user1": 5000.0, b"user2": 10.0})
    assert [o["owner"] for o in hot.hot_owners] == ["user1"]
    assert "WCU/s on one partition key, above 1,000" in hot.format()
