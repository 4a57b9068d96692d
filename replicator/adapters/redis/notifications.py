"""Keyspace-notification settings: which ``notify-keyspace-events`` flags the rules need, and checking them."""

from __future__ import annotations

import logging

import redis

from replicator.core.errors import SourceError
from replicator.core.mapping import RuleSet

log = logging.getLogger(__name__)

#: 'A' is Redis' alias for all event classes.
_ALL_CLASSES = "g$lshzxetd"
_CLASS_FOR_TYPE = {"string": "$", "hash": "h", "list": "l", "set": "s", "zset": "z"}
_ORDER = "AKEg$lshzxetdmn"


def required_flags(rules: RuleSet) -> str:
    """K (keyspace channel), g (DEL, RENAME, EXPIRE...), x (expired), e (evicted) and one class per captured type."""
    flags = {"K", "g", "x", "e"} | {_CLASS_FOR_TYPE[t] for t in rules.key_types()}
    return "".join(sorted(flags, key=_ORDER.index))


def _expand(flags: str) -> set[str]:
    found = set(flags)
    if "A" in found:
        found |= set(_ALL_CLASSES)
        found.discard("A")
    return found


def missing_flags(current: str, rules: RuleSet) -> str:
    return "".join(f for f in required_flags(rules) if f not in _expand(current))


def flags_to_set(current: str, rules: RuleSet) -> str:
    """The ``notify-keyspace-events`` value that keeps what is set and adds what the rules miss."""
    return "".join(sorted(_expand(current) | set(missing_flags(current, rules)), key=_ORDER.index))


def ensure_notifications(client: redis.Redis, rules: RuleSet, configure: bool) -> str:
    """Check ``notify-keyspace-events``; set it when allowed, else fail naming the exact flags. Returns the setting."""
    try:
        current = client.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
    except redis.ResponseError as exc:
        current = None
        reason = str(exc)
    if isinstance(current, bytes):
        current = current.decode()
    if current is None:
        raise SourceError(
            f"cannot read notify-keyspace-events ({reason}); make sure it includes {required_flags(rules)!r} "
            "(on ElastiCache: in the cluster's parameter group)"
        )
    missing = missing_flags(current, rules)
    if not missing:
        return current
    wanted = flags_to_set(current, rules)
    if not configure:
        raise SourceError(
            f"Redis notify-keyspace-events is {current!r} but the rules need {required_flags(rules)!r} "
            f"(missing {missing!r}); run CONFIG SET notify-keyspace-events {wanted} (on ElastiCache set it in the "
            "parameter group), or set redis.configure_notifications: true"
        )
    try:
        client.config_set("notify-keyspace-events", wanted)
    except redis.ResponseError as exc:
        raise SourceError(
            f"CONFIG SET notify-keyspace-events {wanted} was refused ({exc}); set it on the server "
            "(ElastiCache: parameter group) and turn redis.configure_notifications off"
        ) from None
    log.info("enabled keyspace notifications", extra={"kv": {"was": current, "now": wanted}})
    return wanted
