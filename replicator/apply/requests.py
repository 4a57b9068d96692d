"""DynamoDB request parameters for planned writes. Pure: no client, no I/O.

Every write is conditional on the rule's version attribute (``attribute_not_exists(v) OR v <= :v``): an event older
than what is stored changes nothing, so replays, duplicates and late snapshot reads are harmless. Equal versions are
re-applied: a version is a read instant, and the later event for it in the log is the later read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from replicator.mapping import ItemWrite, RuleSet, to_attribute_value, to_item
from replicator.sizes import attribute_size

_NEWER_OR_EQUAL = "attribute_not_exists(#v) OR #v <= :v"

#: DynamoDB's limits for one TransactWriteItems: actions, and bytes of all items together.
TRANSACTION_ITEMS = 100
TRANSACTION_BYTES = 4 * 1024 * 1024
#: Version, deletion marker, TTL and expression names a write adds to its data (an upper bound).
_WRITE_OVERHEAD = 128


def _names(names: dict[str, str], attr: str) -> str:
    placeholder = f"#n{len(names)}"
    names[placeholder] = attr
    return placeholder


def expires_with_tombstone(write: ItemWrite, rules: RuleSet) -> bool:
    """A tombstone on a table only its own rule writes can carry its TTL at once: no other group can be live."""
    return write.is_tombstone and rules.tables[write.table].groups == (write.rule.name,)


def update_request(write: ItemWrite, rules: RuleSet, expire_at_s: int | None = None) -> dict[str, Any]:
    """UpdateItem for one attribute group: set its data (upsert) or remove it and mark it deleted (tombstone).

    ``expire_at_s`` sets the tombstone's TTL in the same write, when :func:`expires_with_tombstone` allows it.
    """
    rule = write.rule
    values: dict[str, Any] = {":v": {"N": str(write.version)}}
    if write.attributes is not None:
        present = tuple(attr for attr, _typed in write.attributes)
        expression, names = _upsert_shape(rule.version_attr, rule.deleted_attr, rules.ttl_attribute,
                                          rule.data_attrs, present)
        for i, (_attr, typed) in enumerate(write.attributes):
            values[f":a{i}"] = to_attribute_value(typed)
    else:
        expires = expire_at_s is not None and expires_with_tombstone(write, rules)
        expression, names = _tombstone_shape(rule.version_attr, rule.deleted_attr, rules.ttl_attribute,
                                             rule.data_attrs, expires)
        if expires:
            values[":exp"] = {"N": str(expire_at_s)}
    return {
        "TableName": write.table,
        "Key": to_item(write.key),
        "UpdateExpression": expression,
        "ConditionExpression": _NEWER_OR_EQUAL,
        "ExpressionAttributeNames": dict(names),
        "ExpressionAttributeValues": values,
    }


@lru_cache(maxsize=4096)
def _upsert_shape(version: str, deleted: str, ttl: str, data_attrs: tuple[str, ...],
                  present: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The update expression and its names for a group's upsert: the same for every write with these attributes
    (built once, not per item: it is a tenth of a write's client time)."""
    names = {"#v": version, "#d": deleted, "#ttl": ttl}
    sets = ["#v = :v"]
    removes = ["#d", "#ttl"]  # a live group un-deletes the item
    for i, attr in enumerate(present):
        sets.append(f"{_names(names, attr)} = :a{i}")
    removes += [_names(names, attr) for attr in data_attrs if attr not in present]
    return f"SET {', '.join(sets)} REMOVE {', '.join(removes)}", names


@lru_cache(maxsize=1024)
def _tombstone_shape(version: str, deleted: str, ttl: str, data_attrs: tuple[str, ...],
                     expires: bool) -> tuple[str, dict[str, str]]:
    names = {"#v": version, "#d": deleted}
    removes = [_names(names, attr) for attr in data_attrs]
    sets = "SET #v = :v, #d = :v"
    if expires:
        names["#ttl"] = ttl
        sets += ", #ttl = :exp"
    return f"{sets} REMOVE {', '.join(removes)}", names


def expire_tombstone_request(write: ItemWrite, rules: RuleSet, expire_at_s: int) -> dict[str, Any]:
    """Sets the item's TTL once every attribute group on it is deleted or absent.

    Only then: a DynamoDB TTL deletes the whole item, and another rule's live data may share it. The condition also
    checks that this tombstone is still the current state of its group.
    """
    rule = write.rule
    names = {"#ttl": rules.ttl_attribute, "#d": rule.deleted_attr}
    conditions = ["#d = :v"]
    for i, group in enumerate(g for g in rules.tables[write.table].groups if g != rule.name):
        names[f"#gv{i}"] = f"_v_{group}"
        names[f"#gd{i}"] = f"_deleted_{group}"
        conditions.append(f"(attribute_not_exists(#gv{i}) OR attribute_exists(#gd{i}))")
    return {
        "TableName": write.table,
        "Key": to_item(write.key),
        "UpdateExpression": "SET #ttl = :exp",
        "ConditionExpression": " AND ".join(conditions),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": {":v": {"N": str(write.version)}, ":exp": {"N": str(expire_at_s)}},
    }


def head_key(rule_name: str, key: bytes) -> dict[str, Any]:
    return {"k": {"B": rule_name.encode() + b"\x00" + key}}


def head_request(state_table: str, rule_name: str, key: bytes, version: int, deleted: bool, ttl_attribute: str,
                 expire_at_s: int) -> dict[str, Any]:
    """The collection key's head version; a deleted key's head expires with its tombstones."""
    names = {"#v": "v", "#ttl": ttl_attribute}
    values: dict[str, Any] = {":v": {"N": str(version)}}
    if deleted:
        expression = "SET #v = :v, #ttl = :exp"
        values[":exp"] = {"N": str(expire_at_s)}
    else:
        expression = "SET #v = :v REMOVE #ttl"
    return {
        "TableName": state_table,
        "Key": head_key(rule_name, key),
        "UpdateExpression": expression,
        "ConditionExpression": _NEWER_OR_EQUAL,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def write_size(write: ItemWrite) -> int:
    """Bytes ``write`` may count towards a transaction's size limit: an upper bound, cheap enough for every write."""
    size = _WRITE_OVERHEAD
    for attr, (kind, raw) in (*write.key, *(write.attributes or ())):
        size += len(attr) + (len(raw) * (4 if kind == "S" else 1) if kind in ("B", "S") else 64 if kind == "N"
                             else attribute_size("", (kind, raw)))
    return size


def transactions(writes: Sequence[ItemWrite], max_items: int = TRANSACTION_ITEMS,
                 max_bytes: int = TRANSACTION_BYTES) -> list[list[list[int]]]:
    """Pack ``writes`` (of any keys) into rounds of transactions, as indexes into ``writes``.

    Within a round every item is distinct: a transaction may not touch one item twice, and two transactions
    running at once on one item cancel each other (TransactionConflict). So a round's transactions can run in
    parallel, and an item written by several keys (two rules filling one item) is written again in the next round.
    """
    rounds: list[list[list[int]]] = []
    sizes: list[int] = []  # of each round's last transaction
    seen: Counter[tuple[str, Any]] = Counter()
    for i, write in enumerate(writes):
        item = (write.table, write.key)
        number = seen[item]
        seen[item] += 1
        if number == len(rounds):
            rounds.append([[]])
            sizes.append(0)
        size = write_size(write)
        current = rounds[number][-1]
        if current and (len(current) >= max_items or sizes[number] + size > max_bytes):
            current = []
            rounds[number].append(current)
            sizes[number] = 0
        current.append(i)
        sizes[number] += size
    return rounds
