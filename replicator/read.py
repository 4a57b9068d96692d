"""Redis-shaped reads served from DynamoDB, and shadow reads that compare the two before cutover.

The application asked Redis ``ZREVRANGE opponents:42 0 9 WITHSCORES``; after cutover it asks
``DynamoRead.zrevrange(b"opponents:42", 0, 9)`` and gets the same list, answered through the mapping rules (the
LSI on the score attribute when the table has one). :class:`ShadowReads` runs both, returns Redis' answer and
counts mismatches (``replicator_shadow_reads_total{query,result}``): the step between dual-running and cutover.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from replicator import metrics
from replicator.adapters.dynamodb.errors import translate
from replicator.adapters.dynamodb.store import DynamoStore
from replicator.adapters.redis.client import Node
from replicator.core.errors import ReplicatorError
from replicator.core.mapping import Rule, RuleSet, render_attr
from replicator.core.values import from_attribute_value, to_attribute_value

log = logging.getLogger(__name__)
T = TypeVar("T")


class WrongRule(ReplicatorError):
    """The key is not mapped by a rule that can answer this query (like Redis' WRONGTYPE)."""


class DynamoRead:
    """Answers Redis queries from DynamoDB. Reads are strongly consistent (the item's partition is local)."""

    def __init__(self, client: Any, rules: RuleSet) -> None:
        self._store = DynamoStore(client)
        self._rules = rules

    # -- sorted sets ---------------------------------------------------------------------------------------------

    def zrevrange(self, key: bytes, start: int = 0, stop: int = -1) -> list[tuple[bytes, float]]:
        """``ZREVRANGE key start stop WITHSCORES``: members by score, highest first; ties by member, descending."""
        rule, variables = self._rule(key, "zset")
        member_attr, score_attr = _attr_of(rule, "member"), _attr_of(rule, "score")
        if score_attr is None:
            raise WrongRule(f"rule {rule.name!r} keeps no attribute that is exactly {{score}}; cannot order by score")
        index = next((name for name, (attr, _t) in self._rules.tables[rule.table].lsi.items()
                      if attr == score_attr), None)
        want = None if start < 0 or stop < 0 else stop + 1
        entries = self._scored(rule, key, variables, member_attr, score_attr, index, want)
        entries.sort(key=lambda e: (e[1], e[0]), reverse=True)
        n = len(entries)
        first, last = (start + n if start < 0 else start), (stop + n if stop < 0 else stop)
        return entries[max(0, first): last + 1] if first <= last else []

    def zscore(self, key: bytes, member: bytes) -> float | None:
        rule, variables = self._rule(key, "zset")
        score_attr = _attr_of(rule, "score")
        item = self._get(rule, {**variables, "key": key, "member": member, "score": b"0"}, key)
        if item is None or score_attr is None or score_attr not in item:
            return None
        return float(Decimal(from_attribute_value(item[score_attr]).value))

    def zcard(self, key: bytes) -> int:
        rule, variables = self._rule(key, "zset")
        try:
            return len(self._store.live_items(rule, key, variables))
        except Exception as exc:
            raise translate(exc, f"ZCARD {key!r}") from None

    # -- strings -------------------------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """``GET key`` for a key a string rule (or the mirror rule) maps."""
        matched = self._rules.match(key)
        if matched is None:
            raise WrongRule(f"no rule maps {key!r}")
        rule, variables = matched
        if rule.is_mirror:
            item = self._get(rule, {"key": key}, key)
            if item is None or item.get("type", {}).get("S") != "string":
                return None
            value = self._store.mirror_value(rule.table, item)
            return None if value is None else bytes(value.value)
        if rule.type != "string":
            raise WrongRule(f"{key!r} is mapped by {rule.type} rule {rule.name!r}, not a string rule")
        value_attr = next((a for a in rule.data_attrs if "value" in rule.item[a].placeholders), None)
        item = self._get(rule, {**variables, "key": key, "value": b""}, key)
        if item is None or value_attr is None or value_attr not in item:
            return None
        found = rule.unrender(value_attr, from_attribute_value(item[value_attr]))
        return None if found is None else found["value"]

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _rule(self, key: bytes, rule_type: str) -> tuple[Rule, dict[str, bytes]]:
        matched = self._rules.match(key)
        if matched is None or matched[0].type != rule_type:
            raise WrongRule(f"{key!r} is not mapped by a {rule_type} rule")
        return matched

    def _get(self, rule: Rule, values: dict[str, bytes], key: bytes) -> dict[str, Any] | None:
        item_key = {a: to_attribute_value(render_attr(rule, a, values, key)) for a in rule.key_attrs}
        item = self._store.get(rule.table, item_key, f"reading {key!r}")
        if item is None or rule.deleted_attr in item:
            return None
        return item

    def _scored(self, rule: Rule, key: bytes, variables: dict[str, bytes], member_attr: str | None,
                score_attr: str, index: str | None, want: int | None) -> list[tuple[bytes, float]]:
        """(member, score) of the key's live members; with ``want``, stop paging once the top ``want`` are known."""
        pk = render_attr(rule, rule.partition_key, {**variables, "key": key}, key)
        params: dict[str, Any] = {
            "TableName": rule.table, "KeyConditionExpression": "#pk = :pk",
            "FilterExpression": "attribute_not_exists(#d) AND attribute_exists(#s)",
            "ExpressionAttributeNames": {"#pk": rule.partition_key, "#d": rule.deleted_attr, "#s": score_attr},
            "ExpressionAttributeValues": {":pk": to_attribute_value(pk)}, "ConsistentRead": True,
        }
        if index is not None:  # newest first straight from the LSI: stop after the first page(s)
            # The index is sparse on the score attribute (a key of the index, so it cannot be filtered on).
            params.update(IndexName=index, ScanIndexForward=False, FilterExpression="attribute_not_exists(#d)")
            params["ExpressionAttributeNames"].pop("#s")
        entries: list[tuple[bytes, float]] = []
        for page in self._store.pages("query", f"ZREVRANGE {key!r}", **params):
            for raw in page:
                item_key = tuple(sorted((a, from_attribute_value(raw[a])) for a in rule.key_attrs))
                if not rule.owns(item_key, variables):
                    continue
                member = _member(rule, member_attr, raw)
                if member is not None:
                    entries.append((member, float(Decimal(raw[score_attr]["N"]))))
            if index is not None and want is not None and len(entries) > want:
                # Sorted by score already: done once the score after the wanted ones is lower (ties must all be in).
                scores = sorted((s for _m, s in entries), reverse=True)
                if scores[want] < scores[want - 1]:
                    return entries
        return entries


def _attr_of(rule: Rule, placeholder: str) -> str | None:
    """The attribute whose template is exactly ``{placeholder}`` (else the first one using it)."""
    exact = [a for a, t in rule.item.items() if t.single == placeholder]
    using = [a for a, t in rule.item.items() if placeholder in t.placeholders]
    return (exact or using or [None])[0]


def _member(rule: Rule, member_attr: str | None, raw: dict[str, Any]) -> bytes | None:
    if member_attr is None or member_attr not in raw:
        return None
    found = rule.unrender(member_attr, from_attribute_value(raw[member_attr]))
    return None if found is None else found["member"]


class ShadowReads:
    """Answer from Redis, compare with DynamoDB, count and log mismatches; DynamoDB failures never reach callers."""

    def __init__(self, client: Node, dynamo: DynamoRead) -> None:
        self._redis = client
        self._dynamo = dynamo

    def zrevrange(self, key: bytes, start: int = 0, stop: int = -1) -> list[tuple[bytes, float]]:
        answer = [(bytes(m), float(s)) for m, s in self._redis.zrevrange(key, start, stop, withscores=True)]
        return self._compare("zrevrange", key, answer, lambda: self._dynamo.zrevrange(key, start, stop))

    def zscore(self, key: bytes, member: bytes) -> float | None:
        answer = self._redis.zscore(key, member)
        return self._compare("zscore", key, answer, lambda: self._dynamo.zscore(key, member))

    def zcard(self, key: bytes) -> int:
        return self._compare("zcard", key, self._redis.zcard(key), lambda: self._dynamo.zcard(key))

    def get(self, key: bytes) -> bytes | None:
        return self._compare("get", key, self._redis.get(key), lambda: self._dynamo.get(key))

    def _compare(self, query: str, key: bytes, answer: T, shadow: Callable[[], Any]) -> T:
        try:
            result = "match" if shadow() == answer else "mismatch"
        except Exception as exc:
            result = "error"
            log.warning("shadow read failed", extra={"kv": {"query": query, "error": str(exc)[:200]}})
        if result == "mismatch":
            # The key names the entity; values may be personal data and stay out of the logs.
            shown = key[:100].decode("utf-8", "replace")
            log.info("shadow read mismatch", extra={"kv": {"query": query, "key": shown}})
        metrics.SHADOW_READS.labels(command=query, result=result).inc()
        return answer
