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

from replicator.core.mapping import ItemWrite, RuleSet
from replicator.core.native import Cas
from replicator.core.sizes import attribute_size
from replicator.core.values import to_item

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


def update_request(write: ItemWrite, rules: RuleSet, expire_at_s: int | None = None,
                   cas: Cas | None = None) -> dict[str, Any]:
    """UpdateItem for one attribute group: set its data (upsert) or remove it and mark it deleted (tombstone).

    ``expire_at_s`` sets the tombstone's TTL in the same write, when :func:`expires_with_tombstone` allows it.
    ``cas`` makes the condition compare-and-set on the version a native writer read, instead of the applier's
    newer-or-equal (see :mod:`replicator.core.native`).
    """
    rule = write.rule
    values: dict[str, Any] = {":v": {"N": str(write.version)}}
    if write.attributes is not None:
        present = tuple(attr for attr, _typed in write.attributes)
        expression, names = _upsert_shape(rule.version_attr, rule.deleted_attr, rules.ttl_attribute,
                                          rule.data_attrs, present)
        for i, (_attr, typed) in enumerate(write.attributes):
            values[f":a{i}"] = typed.wire()
    else:
        expires = expire_at_s is not None and expires_with_tombstone(write, rules)
        expression, names = _tombstone_shape(rule.version_attr, rule.deleted_attr, rules.ttl_attribute,
                                             rule.data_attrs, expires)
        if expires:
            values[":exp"] = {"N": str(expire_at_s)}
    condition = _NEWER_OR_EQUAL
    if cas is not None:
        condition = "attribute_not_exists(#v)" if cas.version is None else "#v = :read"
        if cas.version is not None:
            values[":read"] = {"N": str(cas.version)}
    return {
        "TableName": write.table,
        "Key": to_item(write.key),
        "UpdateExpression": expression,
        "ConditionExpression": condition,
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
    for attr, typed in (*write.key, *(write.attributes or ())):
        kind = typed.kind
        size += len(attr) + (len(typed.value) * (4 if kind == "S" else 1) if kind in ("B", "S") else 64 if kind == "N"
                             else attribute_size("", typed))
    return size


def transactions(writes: Sequence[ItemWrite], max_items: int = TRANSACTION_ITEMS,
                 max_bytes: int = TRANSACTION_BYTES) -> list[list[list[int]]]:
    """Pack ``writes`` (of any keys) into rounds of transactions, as indexes into ``writes``.

    Within a round every item is distinct: a transaction may not touch one item twice, and two transactions
    running at once on one item cancel each other (TransactionConflict). So a round's transactions can run in
    parallel, and an item written by several keys (two rules filling one item) is written again in the next round.
    """
    return batches_of_distinct_items([(w.table, w.key) for w in writes], [write_size(w) for w in writes],
                                     max_items, max_bytes)


# --- PartiQL statements for BatchExecuteStatement ------------------------------------------------------------------
#
# BatchExecuteStatement runs up to 25 statements per call, each with its own condition and its own outcome, billed
# as single writes (1 WCU per item up to 1 KB): the batched, conditional write that BatchWriteItem (unconditional)
# and TransactWriteItems (2 WCU per item, all or nothing) are not. What DynamoDB does with them (checked on
# DynamoDB Local and documented for the service):
#
# - UPDATE never creates an item: on a missing one it fails with ConditionalCheckFailed, and with
#   ReturnValuesOnConditionCheckFailure=ALL_OLD the error carries the item only when it exists. So a failed UPDATE
#   tells "missing" (send an INSERT) from "newer version stored" (stale) in one round trip.
# - INSERT fails with DuplicateItem on an existing item (send the UPDATE).
# - One call may not name an item twice (the whole call is a ValidationException), nor hold more than 25.
# - Per-statement errors: ValidationError (the item is too big, say), throttling, conflicts; the others still apply.

#: Statements per BatchExecuteStatement.
STATEMENTS_PER_BATCH = 25


def _quoted(name: str) -> str:
    """A PartiQL identifier: double quotes, an inner double quote doubled. Names come from the rules, never data."""
    return '"' + name.replace('"', '""') + '"'


def _literal(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def _statement(text: str, parameters: list[dict[str, Any]], all_old: bool = False) -> dict[str, Any]:
    statement: dict[str, Any] = {"Statement": text, "Parameters": parameters}
    if all_old:
        statement["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return statement


def update_statement(write: ItemWrite, rules: RuleSet, expire_at_s: int | None = None) -> dict[str, Any]:
    """The write as a conditional PartiQL UPDATE: what :func:`update_request` does, for an item that exists.

    A mirror value in parts is not written here: the UPDATE also requires that the value it replaces is not in
    parts (it cannot return the old value), so such a write fails and goes the single-item way, which cleans up.
    """
    rule = write.rule
    key = tuple(attr for attr, _typed in write.key)
    values: list[dict[str, Any]] = [{"N": str(write.version)}]
    if write.attributes is not None:
        present = tuple(attr for attr, _typed in write.attributes)
        values += [typed.wire() for _attr, typed in write.attributes]
        text = _update_upsert_text(write.table, key, rule.version_attr, rule.deleted_attr, rules.ttl_attribute,
                                   rule.data_attrs, present, rule.is_mirror)
    else:
        expires = expire_at_s is not None and expires_with_tombstone(write, rules)
        values.append({"N": str(write.version)})
        if expires:
            values.append({"N": str(expire_at_s)})
        text = _update_tombstone_text(write.table, key, rule.version_attr, rule.deleted_attr, rules.ttl_attribute,
                                      rule.data_attrs, expires)
    values += [typed.wire() for _attr, typed in write.key]
    values.append({"N": str(write.version)})
    return _statement(text, values, all_old=True)


@lru_cache(maxsize=4096)
def _update_upsert_text(table: str, key: tuple[str, ...], version: str, deleted: str, ttl: str,
                        data_attrs: tuple[str, ...], present: tuple[str, ...], mirror: bool) -> str:
    sets = " ".join(f"SET {_quoted(a)}=?" for a in (version, *present))
    removes = " ".join(f"REMOVE {_quoted(a)}" for a in (deleted, ttl, *(a for a in data_attrs if a not in present)))
    return f"UPDATE {_quoted(table)} {sets} {removes} WHERE {_where(key, version, mirror)}"


@lru_cache(maxsize=1024)
def _update_tombstone_text(table: str, key: tuple[str, ...], version: str, deleted: str, ttl: str,
                           data_attrs: tuple[str, ...], expires: bool) -> str:
    sets = " ".join(f"SET {_quoted(a)}=?" for a in (version, deleted, *((ttl,) if expires else ())))
    removes = " ".join(f"REMOVE {_quoted(a)}" for a in data_attrs)
    return " ".join(p for p in (f"UPDATE {_quoted(table)}", sets, removes, "WHERE", _where(key, version, False)) if p)


def _where(key: tuple[str, ...], version: str, no_parts: bool) -> str:
    v = _quoted(version)
    where = " AND ".join(f"{_quoted(a)}=?" for a in key) + f" AND ({v} IS MISSING OR {v} <= ?)"
    return where + (' AND "parts" IS MISSING' if no_parts else "")


def insert_statement(write: ItemWrite, rules: RuleSet, expire_at_s: int | None = None) -> dict[str, Any]:
    """The write as a PartiQL INSERT: what :func:`update_request` leaves on an item that did not exist."""
    rule = write.rule
    pairs: list[tuple[str, dict[str, Any]]] = [(a, t.wire()) for a, t in write.key]
    pairs.append((rule.version_attr, {"N": str(write.version)}))
    if write.attributes is not None:
        pairs += [(a, t.wire()) for a, t in write.attributes]
    else:
        pairs.append((rule.deleted_attr, {"N": str(write.version)}))
        if expire_at_s is not None and expires_with_tombstone(write, rules):
            pairs.append((rules.ttl_attribute, {"N": str(expire_at_s)}))
    return _statement(_insert_text(write.table, tuple(a for a, _v in pairs)), [v for _a, v in pairs])


@lru_cache(maxsize=4096)
def _insert_text(table: str, attrs: tuple[str, ...]) -> str:
    return f"INSERT INTO {_quoted(table)} VALUE {{{', '.join(f'{_literal(a)}: ?' for a in attrs)}}}"


def expire_tombstone_statement(write: ItemWrite, rules: RuleSet, expire_at_s: int) -> dict[str, Any]:
    """:func:`expire_tombstone_request` as a PartiQL UPDATE (the item exists: the tombstone was just written)."""
    others = [g for g in rules.tables[write.table].groups if g != write.rule.name]
    key = tuple(attr for attr, _typed in write.key)
    values = [{"N": str(expire_at_s)}, *(t.wire() for _a, t in write.key), {"N": str(write.version)}]
    return _statement(_expire_text(write.table, key, rules.ttl_attribute, write.rule.deleted_attr, tuple(others)),
                      values)


@lru_cache(maxsize=1024)
def _expire_text(table: str, key: tuple[str, ...], ttl: str, deleted: str, others: tuple[str, ...]) -> str:
    conditions = [*(f"{_quoted(a)}=?" for a in key), f"{_quoted(deleted)} = ?"]
    conditions += [f"({_quoted('_v_' + g)} IS MISSING OR {_quoted('_deleted_' + g)} IS NOT MISSING)" for g in others]
    return f"UPDATE {_quoted(table)} SET {_quoted(ttl)}=? WHERE {' AND '.join(conditions)}"


def head_statement(state_table: str, rule_name: str, key: bytes, version: int, deleted: bool, ttl_attribute: str,
                   expire_at_s: int, insert: bool) -> dict[str, Any]:
    """:func:`head_request` as a PartiQL UPDATE (``insert``: an INSERT, for a key whose head does not exist)."""
    k = head_key(rule_name, key)["k"]
    if insert:
        attrs = ("k", "v", *((ttl_attribute,) if deleted else ()))
        values = [k, {"N": str(version)}, *([{"N": str(expire_at_s)}] if deleted else [])]
        return _statement(_insert_text(state_table, attrs), values)
    values = [{"N": str(version)}, *([{"N": str(expire_at_s)}] if deleted else []), k, {"N": str(version)}]
    return _statement(_head_update_text(state_table, ttl_attribute, deleted), values, all_old=True)


@lru_cache(maxsize=64)
def _head_update_text(state_table: str, ttl_attribute: str, deleted: bool) -> str:
    ttl = _quoted(ttl_attribute)
    change = f"SET {ttl}=?" if deleted else f"REMOVE {ttl}"
    return f'UPDATE {_quoted(state_table)} SET "v"=? {change} WHERE "k"=? AND ("v" IS MISSING OR "v" <= ?)'


def batches_of_distinct_items(items: Sequence[tuple[str, Any]], sizes: Sequence[int], max_items: int,
                              max_bytes: int) -> list[list[list[int]]]:
    """Pack items (table, key) into rounds of requests (indexes): one item at most once per round, so a round's
    requests run in parallel without conflicting; an item named several times goes again in the next round."""
    rounds: list[list[list[int]]] = []
    filled: list[int] = []  # bytes in each round's last request
    seen: Counter[tuple[str, Any]] = Counter()
    for i, item in enumerate(items):
        number = seen[item]
        seen[item] += 1
        if number == len(rounds):
            rounds.append([[]])
            filled.append(0)
        current = rounds[number][-1]
        if current and (len(current) >= max_items or filled[number] + sizes[i] > max_bytes):
            current = []
            rounds[number].append(current)
            filled[number] = 0
        current.append(i)
        filled[number] += sizes[i]
    return rounds
