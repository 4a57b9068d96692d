"""Finding deletions that happened during a gap.

A re-snapshot SCANs what exists, so a key deleted while nobody listened is invisible to it. Reconciling goes the
other way: every Redis key that DynamoDB still holds live data for is read again through the same atomic reader.
A key that is gone reads as a DELETE with a fresh version; one that was re-created reads as its current state. Either
way the event goes through Kafka like any other, so ordering and versions stay intact.

Source keys are recovered without guessing: collection keys are the live head versions in the state table, and
single-item rules are reversible because every variable of their pattern is in the item key (checked at config load).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from replicator.mapping import Rule, RuleSet, from_attribute_value


def live_source_keys(client: Any, rules: RuleSet, state_table: str) -> Iterator[bytes]:
    """Every Redis key whose data DynamoDB holds live (not tombstoned). May repeat a key; never misses one."""
    names = {"#ttl": rules.ttl_attribute}
    for page in client.get_paginator("scan").paginate(
        TableName=state_table, FilterExpression="attribute_not_exists(#ttl)", ExpressionAttributeNames=names,
        ProjectionExpression="k",
    ):
        for item in page["Items"]:
            rule, _, key = bytes(item["k"]["B"]).partition(b"\x00")
            if rule:  # an empty rule name is one of the replicator's own items (snapshot checkpoints)
                yield key
    singles = [r for r in rules.rules if not r.is_collection]
    if rules.mirror is not None:
        singles.append(rules.mirror)
    for rule in singles:
        yield from _live_keys_of(client, rule)


def _live_keys_of(client: Any, rule: Rule) -> Iterator[bytes]:
    names = {"#v": rule.version_attr, "#d": rule.deleted_attr}
    projection = []
    for i, attr in enumerate(rule.key_attrs):
        names[f"#k{i}"] = attr
        projection.append(f"#k{i}")
    for page in client.get_paginator("scan").paginate(
        TableName=rule.table, FilterExpression="attribute_exists(#v) AND attribute_not_exists(#d)",
        ExpressionAttributeNames=names, ProjectionExpression=", ".join(projection),
    ):
        for item in page["Items"]:
            key = source_key(rule, {a: from_attribute_value(item[a]) for a in rule.key_attrs})
            if key is not None:
                yield key


def source_key(rule: Rule, item_key: dict[str, tuple[str, Any]]) -> bytes | None:
    """The Redis key a single-item rule's item came from (the inverse of rendering its key attributes)."""
    variables: dict[str, bytes] = {}
    for attr, (_type, value) in item_key.items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        found = rule.item[attr].match(raw)
        if found is None:
            return None
        variables.update(found)
    if "key" in variables:
        return variables["key"]
    return rule.pattern.render(variables)
