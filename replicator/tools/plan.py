"""``replicator plan``: what the migration will cost in DynamoDB, predicted from a sample of Redis through the rules.

Keys are read with the listener's reader and mapped with the applier's mapping, so the predicted items are the ones
the replicator will write, with its version and tombstone attributes. Item sizes follow DynamoDB's sizing rules
(attribute names + values; numbers take one byte per two significant digits plus one). A keyspace no bigger than the
sample is read whole and the item count is exact; a bigger one is sampled with RANDOMKEY and extrapolated.

Capacity: a write of an item costs ceil(size / 1 KB) WCU, again for every LSI that projects the item, plus one
write of the key's head in the state table for collection rules. A partition key takes at most 1,000 WCU/s and
3,000 RCU/s, and with an LSI its item collection at most 10 GB: owners that would break a limit are listed.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from replicator.adapters.redis.client import Client
from replicator.adapters.redis.cluster import dbsize, state_reader
from replicator.adapters.redis.reader import to_event
from replicator.core.batching import batches
from replicator.core.events import Origin
from replicator.core.keyspace import captured_keys, sample_keys
from replicator.core.mapping import RuleSet, desired_items
from replicator.core.sizes import attribute_size
from replicator.core.values import ItemKey, N, TypedValue

#: DynamoDB limits a plan checks against.
PARTITION_WCU = 1000
ITEM_LIMIT_BYTES = 400 * 1024
LSI_COLLECTION_LIMIT_BYTES = 10 * 1024**3
#: A version attribute holds µs since the epoch: 16 significant digits.
VERSION_DIGITS = 16


@dataclass
class TablePlan:
    table: str
    items: int = 0
    bytes: int = 0
    max_item_bytes: int = 0
    lsi_items: int = 0
    write_units: int = 0  # WCU to write every item once (backfill), LSIs included
    read_units: int = 0  # RCU to read every item once, strongly consistent (verify's cost)

    @property
    def avg_item_bytes(self) -> float:
        return self.bytes / self.items if self.items else 0.0


@dataclass
class MigrationPlan:
    redis_keys: int
    sampled_keys: int
    exact: bool
    redis_memory_bytes: int
    tables: dict[str, TablePlan]
    state_items: int
    backfill_hours: float
    write_rate: float | None  # Redis writes/s, given or measured
    wcu_per_event: float
    hot_owners: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def backfill_write_units(self) -> int:
        return sum(t.write_units for t in self.tables.values()) + self.state_items

    @property
    def backfill_wcu(self) -> float:
        return self.backfill_write_units / (self.backfill_hours * 3600)

    @property
    def live_wcu(self) -> float | None:
        return None if self.write_rate is None else self.write_rate * self.wcu_per_event

    def to_json(self) -> dict[str, Any]:
        return {
            "redis": {"keys": self.redis_keys, "sampled_keys": self.sampled_keys, "exact": self.exact,
                      "memory_bytes": self.redis_memory_bytes},
            "tables": {name: {"items": t.items, "bytes": t.bytes, "avg_item_bytes": round(t.avg_item_bytes, 1),
                              "max_item_bytes": t.max_item_bytes, "lsi_items": t.lsi_items,
                              "backfill_write_units": t.write_units} for name, t in self.tables.items()},
            "state_table_items": self.state_items,
            "backfill": {"hours": self.backfill_hours, "write_units": self.backfill_write_units,
                         "wcu": round(self.backfill_wcu, 3)},
            "live": {"writes_per_second": self.write_rate, "wcu_per_event": round(self.wcu_per_event, 2),
                     "wcu": None if self.live_wcu is None else round(self.live_wcu, 1)},
            "hot_owners": self.hot_owners,
            "warnings": self.warnings,
        }

    def format(self) -> str:
        scope = "all keys (exact)" if self.exact else f"a sample of {self.sampled_keys:,} keys (extrapolated)"
        lines = [f"Redis: {self.redis_keys:,} keys, {self.redis_memory_bytes / 1024**2:,.1f} MiB; read {scope}", "",
                 f"{'table':24} {'items':>14} {'avg item':>10} {'max item':>10} {'total':>12} {'in LSIs':>12}"]
        for t in self.tables.values():
            lines.append(f"{t.table:24} {t.items:>14,} {t.avg_item_bytes:>9,.0f}B {t.max_item_bytes:>9,}B "
                         f"{t.bytes / 1024**2:>10,.1f}Mi {t.lsi_items:>12,}")
        lines.append(f"{'(state table)':24} {self.state_items:>14,}")
        lines += ["", f"backfill in {self.backfill_hours:g}h: {self.backfill_write_units:,} write units = "
                          f"{self.backfill_wcu:,.1f} WCU/s sustained"]
        if self.live_wcu is not None:
            lines.append(f"live: {self.write_rate:,.0f} Redis writes/s x {self.wcu_per_event:.2f} WCU/event = "
                         f"{self.live_wcu:,.0f} WCU/s")
        else:
            lines.append(f"live: {self.wcu_per_event:.2f} WCU per Redis write (give --write-rate or "
                         "--measure-seconds for a rate)")
        lines.append("(WCU for apply.write_mode batch or item; transaction mode is billed twice these)")
        for owner in self.hot_owners:
            lines.append(f"HOT owner {owner['owner']!r}: {owner['why']}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class Planner:
    def __init__(self, client: Client, rules: RuleSet, max_inline_members: int = 10_000) -> None:
        self._redis = client
        self._rules = rules
        self._reader = state_reader(client, max_inline_members)

    def keys(self, sample: int) -> tuple[list[bytes], bool]:
        """(keys, exact): every captured key when the keyspace is no bigger than ``sample``, else a random sample."""
        if dbsize(self._redis) <= sample:
            return list(dict.fromkeys(captured_keys(self._redis, self._rules))), True
        return sample_keys(self._redis, self._rules, sample), False

    def measure(self, seconds: float) -> tuple[float, dict[bytes, float]]:
        """Writes/s from two INFO commandstats readings ``seconds`` apart, and keyspace events/s per owner.

        Per-owner rates come from keyspace notifications (if the server sends them) counted for ``seconds``: the only
        way to see which partition keys are hot before DynamoDB does.
        """
        first = _write_calls(self._redis.info("commandstats"))
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        db = int(self._redis.connection_pool.connection_kwargs.get("db", 0) or 0)
        prefix = b"__keyspace@%d__:" % db
        pubsub.psubscribe(*[prefix + g for g in self._rules.globs()])
        per_owner: Counter[bytes] = Counter()
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=min(1.0, left))
                if message and message["type"] == "pmessage":
                    key = message["channel"][len(prefix):]
                    matched = self._rules.match(key)
                    if matched is not None:
                        per_owner[self._rules.owner(matched[0], key, matched[1])] += 1
        finally:
            pubsub.close()
        total = (_write_calls(self._redis.info("commandstats")) - first) / seconds
        return total, {owner: n / seconds for owner, n in per_owner.items()}

    def plan(self, sample: int = 100_000, backfill_hours: float = 24.0, write_rate: float | None = None,
             owner_rates: dict[bytes, float] | None = None) -> MigrationPlan:
        keys, exact = self.keys(sample)
        total_keys = dbsize(self._redis)
        scale = 1.0 if exact or not keys else total_keys / len(keys)
        items: dict[tuple[str, ItemKey], dict[str, TypedValue]] = {}
        owner_bytes: Counter[tuple[str, bytes]] = Counter()
        memory = 0
        collection_keys = 0
        events = 0
        now_us = time.time_ns() // 1000
        for batch in batches(keys, 200):
            pipe = self._redis.pipeline(transaction=False)
            for key in batch:
                pipe.memory_usage(key, samples=0)
            memory += sum(m or 0 for m in pipe.execute())
            for state in self._reader.read(batch):
                event = to_event(state, self._rules, Origin.SNAPSHOT, "plan", 0, now_us)
                matched = self._rules.match(state.key)
                if event is None or matched is None:
                    continue
                rule, variables = matched
                events += 1
                collection_keys += rule.is_collection
                for item_key, attrs in desired_items(rule, variables, event).items():
                    item = items.setdefault((rule.table, item_key), dict(item_key))
                    item.update(attrs)
                    item[rule.version_attr] = N("9" * VERSION_DIGITS)
        tables = {name: TablePlan(name) for name in self._rules.tables}
        sizes: dict[str, list[int]] = defaultdict(list)
        for (table, item_key), attrs in items.items():
            size = sum(attribute_size(a, v) for a, v in attrs.items())
            spec = self._rules.tables[table]
            in_lsi = sum(1 for attr, _t in spec.lsi.values() if attr in attrs)
            plan = tables[table]
            plan.items += 1
            plan.bytes += size
            plan.max_item_bytes = max(plan.max_item_bytes, size)
            plan.lsi_items += in_lsi
            plan.write_units += math.ceil(size / 1024) * (1 + in_lsi)
            plan.read_units += math.ceil(size / 4096)
            owner = dict(item_key)[spec.partition_key[0]]
            owner_bytes[(table, owner.as_bytes())] += size
            sizes[table].append(size)
        for plan in tables.values():
            plan.items, plan.bytes = round(plan.items * scale), round(plan.bytes * scale)
            plan.lsi_items, plan.write_units = round(plan.lsi_items * scale), round(plan.write_units * scale)
            plan.read_units = round(plan.read_units * scale)
        all_items = sum(t.items for t in tables.values())
        per_event = 0.0
        if all_items:
            # A live change rewrites about one item (only changed members are written) plus a collection's head.
            weighted = sum(t.write_units for t in tables.values()) / all_items
            per_event = weighted + (collection_keys / events if events else 0.0)
        result = MigrationPlan(total_keys, len(keys), exact, round(memory * scale), tables,
                               round(collection_keys * scale), backfill_hours, write_rate, per_event)
        self._flag(result, items, owner_bytes, owner_rates or {})
        return result

    def _flag(self, plan: MigrationPlan, items: dict, owner_bytes: Counter, owner_rates: dict[bytes, float]) -> None:
        for (table, item_key), attrs in items.items():
            size = sum(attribute_size(a, v) for a, v in attrs.items())
            if size > ITEM_LIMIT_BYTES:
                plan.warnings.append(f"an item of {table} would be {size:,} bytes, above DynamoDB's 400 KB: "
                                     f"{dict(item_key)} (it will be dead-lettered)")
        for (table, owner), size in owner_bytes.most_common():
            if not self._rules.tables[table].lsi or size < LSI_COLLECTION_LIMIT_BYTES * 0.8:
                break
            plan.hot_owners.append({"owner": owner.decode("utf-8", "replace"), "table": table,
                                    "why": f"item collection of {size / 1024**3:.1f} GB in {table}: an LSI caps it "
                                           "at 10 GB"})
        for owner, rate in sorted(owner_rates.items(), key=lambda kv: -kv[1]):
            wcu = rate * plan.wcu_per_event
            if wcu <= PARTITION_WCU:
                break
            plan.hot_owners.append({"owner": owner.decode("utf-8", "replace"), "writes_per_second": round(rate, 1),
                                    "why": f"{rate:,.0f} writes/s = {wcu:,.0f} WCU/s on one partition key, "
                                           f"above {PARTITION_WCU:,}"})


#: Redis commands that write (what INFO commandstats counts per command).
_WRITE_COMMANDS = frozenset({
    "set", "setex", "psetex", "setnx", "mset", "msetnx", "getset", "getdel", "getex", "append", "incr", "incrby",
    "incrbyfloat", "decr", "decrby", "setrange", "del", "unlink", "expire", "pexpire", "expireat", "pexpireat",
    "persist", "rename", "renamenx", "hset", "hsetnx", "hmset", "hdel", "hincrby", "hincrbyfloat", "sadd", "srem",
    "spop", "smove", "sinterstore", "sunionstore", "sdiffstore", "zadd", "zrem", "zincrby", "zpopmin", "zpopmax",
    "zremrangebyscore", "zremrangebyrank", "zremrangebylex", "zunionstore", "zinterstore", "zrangestore", "lpush",
    "rpush", "lpushx", "rpushx", "lpop", "rpop", "lset", "lrem", "ltrim", "linsert", "lmove", "rpoplpush", "copy",
    "restore", "xadd", "xdel", "xtrim",
})


def _write_calls(stats: dict[str, Any]) -> int:
    return sum(int(v.get("calls", 0)) for k, v in stats.items()
               if k.removeprefix("cmdstat_").split("|")[0] in _WRITE_COMMANDS)


def plan_json(plan: MigrationPlan) -> str:
    return json.dumps(plan.to_json(), indent=2, sort_keys=True)
