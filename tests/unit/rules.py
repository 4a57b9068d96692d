"""The messaging rules used across unit tests, compiled without any service."""

from __future__ import annotations

from typing import Any

from replicator.core.config import parse_config
from replicator.core.events import ChangeEvent, KeyType, Op, Origin
from replicator.core.mapping import RuleSet

#: The rules of a messaging app (the demo's too): a zset of opponents per owner and a side key per opponent, one item
#: per (owner, opponent); every other key mirrored.
MESSAGING_RULES: dict[str, Any] = {
    "tables": {
        "messaging": {"partition_key": "owner_id", "sort_key": "opponent_id", "lsi": {"by_timestamp": "timestamp"}},
    },
    "rules": [
        {"match": "opponents:{owner}", "type": "zset", "table": "messaging",
         "item": {"owner_id": "{owner}", "opponent_id": "{member}", "timestamp": "{score}"}},
        {"match": "meta:{owner}:{opponent}", "type": "string", "table": "messaging",
         "item": {"owner_id": "{owner}", "opponent_id": "{opponent}", "metadata": "{value}"}},
    ],
    "default": {"table": "redis_mirror"},
}


def messaging() -> RuleSet:
    return parse_config(MESSAGING_RULES).rule_set


def zset_event(owner: str, members: dict[str, float], version: int, op: Op = Op.UPSERT) -> ChangeEvent:
    value = tuple((m.encode(), s) for m, s in members.items()) if op is Op.UPSERT else None
    key_type = KeyType.ZSET if op is Op.UPSERT else KeyType.NONE
    key = f"opponents:{owner}".encode()
    return ChangeEvent(key, key_type, op, Origin.LIVE, version, version, owner.encode(), value)


def string_event(key: bytes, value: bytes | None, version: int, owner: bytes = b"o") -> ChangeEvent:
    if value is None:
        return ChangeEvent(key, KeyType.NONE, Op.DELETE, Origin.LIVE, version, version, owner, None)
    return ChangeEvent(key, KeyType.STRING, Op.UPSERT, Origin.LIVE, version, version, owner, value)
