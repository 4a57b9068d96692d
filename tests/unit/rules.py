"""The messaging rules used across unit tests, compiled without any service."""

from __future__ import annotations

from replicator.core.config import parse_config
from replicator.core.events import ChangeEvent, KeyType, Op, Origin
from replicator.core.mapping import RuleSet, compile_rules
from replicator.local.demo import MESSAGING_RULES


def messaging() -> RuleSet:
    return compile_rules(parse_config(MESSAGING_RULES))


def zset_event(owner: str, members: dict[str, float], version: int, op: Op = Op.UPSERT) -> ChangeEvent:
    value = tuple((m.encode(), s) for m, s in members.items()) if op is Op.UPSERT else None
    key_type = KeyType.ZSET if op is Op.UPSERT else KeyType.NONE
    key = f"opponents:{owner}".encode()
    return ChangeEvent(key, key_type, op, Origin.LIVE, version, version, owner.encode(), value)


def string_event(key: bytes, value: bytes | None, version: int, owner: bytes = b"o") -> ChangeEvent:
    if value is None:
        return ChangeEvent(key, KeyType.NONE, Op.DELETE, Origin.LIVE, version, version, owner, None)
    return ChangeEvent(key, KeyType.STRING, Op.UPSERT, Origin.LIVE, version, version, owner, value)
