"""The DynamoDB edge: the one place that reads and writes the replicator's items.

:class:`DynamoStore` reads (head versions, a key's live items, single items, mirror values kept in parts, every
Query and Scan through boto3's paginators) for apply, verify, the Redis-shaped reads and the reconcile alike, so
"live", "applied state" and "the Redis key an item came from" mean the same everywhere. :class:`DynamoWriter` adds
the writes. Errors are translated to SinkError by :mod:`.errors`, which holds every code. Table creation is in
``tables.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import botocore.exceptions

from replicator import metrics
from replicator.adapters.dynamodb.batch import Parallel, StatementBatches, serial
from replicator.adapters.dynamodb.calls import DynamoCalls, frozen_key, projection_of
from replicator.adapters.dynamodb.errors import (
    CONDITION_FAILED,
    SELECT_REFUSED,
    Kind,
    bisect,
    code_of,
    exception_name,
    kind,
    retried_cancellation,
    translate,
)
from replicator.core import mirror, statements
from replicator.core.config import TombstoneConfig
from replicator.core.errors import SinkError
from replicator.core.events import ChangeEvent
from replicator.core.mapping import EMPTY_STATE, ItemWrite, KeyState, Rule, RuleSet, render_attr
from replicator.core.native import Cas
from replicator.core.values import Attrs, ItemKey, TypedValue, from_attribute_value, to_attribute_value

log = logging.getLogger(__name__)

#: A page of a Scan for source keys: the Redis keys, and DynamoDB's key to start after it (None: the end).
KeysPage = tuple[list[bytes], dict[str, Any] | None]

#: Partition keys per PartiQL SELECT ... IN [...]: the statement stays far below DynamoDB's 8 KB; an endpoint that
#: refuses it gets a Query per key instead (DynamoStore.live_items_many).
PARTITIONS_PER_SELECT = 50

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


class DynamoStore(DynamoCalls):
    """Strongly consistent reads of the rule tables and the state table. Thread-safe (boto3 clients are).

    ``state_table`` may be left empty by a reader that never reads heads (the Redis-shaped reads).
    """

    def __init__(self, client: Any, state_table: str = "") -> None:
        super().__init__(client)
        self.state_table = state_table

    def head_version(self, rule: Rule, key: bytes) -> int:
        """A collection key's head version in the state table, -1 when it has none (see also head_versions)."""
        head = self.get(self.state_table, statements.head_key(rule.name, key),
                        f"state table {self.state_table} head of {key!r}")
        return int(head["v"]["N"]) if head else EMPTY_STATE.version

    def head_versions(self, keys: Sequence[tuple[str, bytes]]) -> list[int]:
        """The head versions of distinct (rule name, key)s (strongly consistent; one BatchGetItem per 100), -1
        where there is none. Raises a SinkError: retryable, or not when DynamoDB refused a key (too long, say)."""
        table = self.state_table
        wanted = [(table, statements.head_key(name, key)) for name, key in keys]
        found = self.batch_get(wanted, f"state table {table}: head versions", attrs=("k", "v"))
        return [int(item["v"]["N"]) if (item := found.get((table, frozen_key(k)))) else EMPTY_STATE.version
                for _table, k in wanted]

    # -- a Redis key's applied state -----------------------------------------------------------------------------

    def load_state(self, rule: Rule, key: bytes, variables: Mapping[str, bytes],
                   version: int | None = None) -> KeyState:
        """The applied state of a Redis key as DynamoDB holds it.

        A collection key: its head version (unless given, read by :meth:`head_versions`) and its live
        items. A single-item key: the item's own version and, when live, its data, a mirror value kept in parts
        put together (it is compared as the whole value it is).
        """
        where = f"loading state of {key!r} from {rule.table}"
        try:
            if rule.is_collection:
                if version is None:
                    version = self.head_version(rule, key)
                return KeyState(version, self.live_items(rule, key, variables))
            item_key, wire = self._item_key(rule, key, variables)
            return self._item_state(rule, item_key, self.get(rule.table, wire, where) or {})
        except Exception as exc:
            raise translate(exc, where) from None

    def load_states(self, wanted: Sequence[tuple[Rule, bytes, Mapping[str, bytes]]]) -> list[KeyState]:
        """The applied states of many keys (rule, key, variables), in order: what :meth:`load_state` reads, in far
        fewer requests. Single-item keys' items and collection keys' heads come together by BatchGetItem (100 keys
        per request, whatever tables they are in); the live items of collection keys by :meth:`live_items_many`.
        The verifier reads a keyspace this way."""
        where = f"loading the states of {len(wanted)} keys"
        item_keys = [None if rule.is_collection else self._item_key(rule, key, variables)
                     for rule, key, variables in wanted]
        reads = [(rule.table, item_key[1]) if item_key is not None
                 else (self.state_table, statements.head_key(rule.name, key))
                 for (rule, key, _variables), item_key in zip(wanted, item_keys, strict=True)]
        try:
            found = self.batch_get(reads, where) if reads else {}
            by_rule: dict[str, list[tuple[bytes, Mapping[str, bytes]]]] = {}
            for rule, key, variables in wanted:
                if rule.is_collection:
                    by_rule.setdefault(rule.name, []).append((key, variables))
            rules = {rule.name: rule for rule, _key, _variables in wanted}
            items = {name: iter(self.live_items_many(rules[name], keys)) for name, keys in by_rule.items()}
            states = []
            for (rule, _key, _variables), item_key, (table, wire) in zip(wanted, item_keys, reads, strict=True):
                item = found.get((table, frozen_key(wire)))
                if item_key is None:
                    version = int(item["v"]["N"]) if item else EMPTY_STATE.version
                    states.append(KeyState(version, next(items[rule.name])))
                else:
                    states.append(self._item_state(rule, item_key[0], item or {}))
            return states
        except Exception as exc:
            raise translate(exc, where) from None

    @staticmethod
    def _item_key(rule: Rule, key: bytes, variables: Mapping[str, bytes]) -> tuple[ItemKey, dict[str, Any]]:
        """A single-item key's item key, typed and on the wire."""
        values = {**variables, "key": key}
        item_key = tuple(sorted((a, render_attr(rule, a, values, key)) for a in rule.key_attrs))
        return item_key, {a: to_attribute_value(v) for a, v in item_key}

    def _item_state(self, rule: Rule, item_key: ItemKey, raw: dict[str, Any]) -> KeyState:
        """A single item's applied state: its own version and, when live, its data (a mirror value kept in parts
        put together: it is compared as the whole value it is)."""
        version = int(raw[rule.version_attr]["N"]) if rule.version_attr in raw else EMPTY_STATE.version
        if rule.is_mirror and "parts" in raw:
            value = read_mirror_value(self.client, rule.table, raw)
            raw = {**{a: v for a, v in raw.items() if a != "parts"}, "value": to_attribute_value(value)}
        data = tuple((a, from_attribute_value(raw[a])) for a in rule.data_attrs if a in raw)
        live = rule.deleted_attr not in raw and (rule.version_attr in raw or bool(data))
        return KeyState(version, {item_key: data} if live else {})

    def live_items(self, rule: Rule, key: bytes, variables: Mapping[str, bytes]) -> dict[ItemKey, Attrs]:
        """The items of a collection key that hold this rule's live data (strongly consistent query of its
        partition).

        Live means not tombstoned and holding the group's version *or any of its data attributes*: an item written
        around the replicator (by hand, by an old migration script) is live data too, so the verifier reports it
        and a repair tombstones it.
        """
        pk_typed = render_attr(rule, rule.partition_key, {**variables, "key": key}, key)
        live, names = live_filter(rule)
        projection = projection_of((*rule.key_attrs, *rule.data_attrs), names)
        items = {}
        for raw in self.items("query", f"live items of {key!r} in {rule.table}",
                              TableName=rule.table, KeyConditionExpression="#pk = :pk", FilterExpression=live,
                              ProjectionExpression=projection,
                              ExpressionAttributeNames={**names, "#pk": rule.partition_key},
                              ExpressionAttributeValues={":pk": to_attribute_value(pk_typed)}, ConsistentRead=True):
            item_key, data = _parsed_item(rule, raw)
            if rule.owns(item_key, variables):
                items[item_key] = data
        return items

    def live_items_many(self, rule: Rule, keys: Sequence[tuple[bytes, Mapping[str, bytes]]],
                        ) -> list[dict[ItemKey, Attrs]]:
        """:meth:`live_items` of many collection keys of one rule, in order: one PartiQL ``SELECT ... WHERE pk IN
        [...]`` (strongly consistent) per PARTITIONS_PER_SELECT partitions instead of a Query each. A SELECT on
        partition keys is a query of each, never a scan; it saves a request (its HTTP round trip, signing and
        parsing) per key, which is most of what reading a small collection costs. Liveness is decided here, as
        :func:`live_filter` does on the server for a Query."""
        partitions: dict[Any, list[int]] = {}
        for i, (key, variables) in enumerate(keys):
            pk = render_attr(rule, rule.partition_key, {**variables, "key": key}, key)
            partitions.setdefault(pk, []).append(i)
        found: list[dict[ItemKey, Attrs]] = [{} for _ in keys]
        attrs = (*rule.key_attrs, *rule.data_attrs, rule.version_attr, rule.deleted_attr)
        projection = ", ".join(_quoted(a) for a in dict.fromkeys(attrs))
        values = list(partitions)
        for start in range(0, len(values), PARTITIONS_PER_SELECT):
            chunk = values[start:start + PARTITIONS_PER_SELECT]
            statement = (f"SELECT {projection} FROM {_quoted(rule.table)} WHERE {_quoted(rule.partition_key)} IN "
                         f"[{', '.join('?' for _ in chunk)}]")
            params: dict[str, Any] = {"Statement": statement, "Parameters": [to_attribute_value(v) for v in chunk],
                                      "ConsistentRead": True}
            while True:
                try:
                    page = self.client.execute_statement(**params)
                except Exception as exc:
                    code = code_of(exc) or ""
                    if code not in SELECT_REFUSED:
                        raise translate(exc, f"live items of {len(chunk)} keys in {rule.table}") from None
                    # Refused (no dynamodb:PartiQLSelect granted, an endpoint without PartiQL, a key DynamoDB
                    # cannot take): a Query per key, as before; each key then fails or answers on its own.
                    _warn_once(f"PartiQL SELECT refused ({code}); reading collections with a Query per key")
                    for pk in chunk:
                        for i in partitions[pk]:
                            found[i] = self.live_items(rule, *keys[i])
                    break
                for raw in page.get("Items", ()):
                    if rule.deleted_attr in raw or not (rule.version_attr in raw
                                                        or any(a in raw for a in rule.data_attrs)):
                        continue
                    item_key, data = _parsed_item(rule, raw)
                    for i in partitions.get(from_attribute_value(raw[rule.partition_key]), ()):
                        if rule.owns(item_key, keys[i][1]):
                            found[i][item_key] = data
                if not page.get("NextToken"):
                    break
                params["NextToken"] = page["NextToken"]
        return found

    def mirror_value(self, table: str, item: Mapping[str, Any]) -> TypedValue | None:
        """The value a mirror item holds (see :func:`read_mirror_value`)."""
        return read_mirror_value(self.client, table, item)

    # -- which Redis keys DynamoDB holds -------------------------------------------------------------------------

    def live_source_keys(self, rules: RuleSet) -> Iterator[bytes]:
        """Every Redis key whose data DynamoDB holds live (not tombstoned). May repeat a key; never misses one.

        Collection keys are the live heads of the state table; single-item rules' keys are recovered from their
        items (:meth:`Rule.source_key`).
        """
        for source in source_tables(rules):
            for keys, _after in self.live_source_key_pages(rules, source):
                yield from keys

    def live_source_key_pages(self, rules: RuleSet, source: Rule | None, segment: int = 0, segments: int = 1,
                              start: dict[str, Any] | None = None) -> Iterator[KeysPage]:
        """Segment ``segment`` of ``segments`` of a parallel Scan of one source of live keys (``source`` None: the
        state table's live heads; a single-item rule: its table's live items), a page at a time: the Redis keys in
        it and the key to start after it (None once the segment is done), so a caller can resume. Eventually
        consistent: half the read capacity, and what it finds is read again, consistently, before it counts."""
        if source is None:
            where, names = f"state table {self.state_table}: live heads", {"#ttl": rules.ttl_attribute}
            params: dict[str, Any] = {"TableName": self.state_table, "FilterExpression": "attribute_not_exists(#ttl)",
                                      "ProjectionExpression": "k"}
        else:
            where, names = f"live keys of {source.table}", {"#v": source.version_attr, "#d": source.deleted_attr}
            params = {"TableName": source.table, "ProjectionExpression": projection_of(source.key_attrs, names),
                      "FilterExpression": "attribute_exists(#v) AND attribute_not_exists(#d)"}
        params["ExpressionAttributeNames"] = names
        if segments > 1:
            params |= {"Segment": segment, "TotalSegments": segments}
        while True:
            try:
                page = self.client.scan(**params, **({"ExclusiveStartKey": start} if start else {}))
            except Exception as exc:
                raise translate(exc, where) from None
            start = page.get("LastEvaluatedKey")
            yield [key for item in page["Items"] if (key := _source_key(source, item)) is not None], start
            if not start:
                return

    def partition_source_keys(self, rule: Rule, values: Mapping[str, bytes]) -> Iterator[bytes]:
        """The Redis keys of a single-item rule whose live items are in the partition ``values`` render."""
        pk = render_attr(rule, rule.partition_key, values, b"")
        live, names = live_filter(rule)
        for item in self.items("query", f"live keys in a partition of {rule.table}", TableName=rule.table,
                               KeyConditionExpression="#pk = :pk", FilterExpression=live,
                               ExpressionAttributeNames={**names, "#pk": rule.partition_key},
                               ExpressionAttributeValues={":pk": to_attribute_value(pk)}, ConsistentRead=True):
            if rule.key_attrs[-1] in item:
                key = rule.source_key((a, from_attribute_value(item[a])) for a in rule.key_attrs)
                if key is not None:
                    yield key


def _parsed_item(rule: Rule, raw: Mapping[str, Any]) -> tuple[ItemKey, Attrs]:
    """An item of a collection rule as read: its key (sorted, typed) and the rule's data attributes it holds."""
    item_key = tuple(sorted((a, from_attribute_value(raw[a])) for a in rule.key_attrs))
    return item_key, tuple((a, from_attribute_value(raw[a])) for a in rule.data_attrs if a in raw)


def source_tables(rules: RuleSet) -> list[Rule | None]:
    """Where DynamoDB keeps which Redis keys it holds: the state table's heads (None) and each single-item rule."""
    singles: list[Rule | None] = [r for r in rules.rules if not r.is_collection]
    return [None, *singles, *([rules.mirror] if rules.mirror is not None else [])]


def _source_key(source: Rule | None, item: Mapping[str, Any]) -> bytes | None:
    """The Redis key a scanned item holds: a head's (not one of the replicator's own items, whose rule name is
    empty), or a single item's."""
    if source is None:
        rule_name, _, key = bytes(item["k"]["B"]).partition(b"\x00")
        return key if rule_name else None
    return source.source_key((a, from_attribute_value(item[a])) for a in source.key_attrs)


def _quoted(name: str) -> str:
    """A table or attribute name in a PartiQL statement (any name is safe quoted, reserved words included)."""
    return '"' + name.replace('"', '""') + '"'


class DynamoWriter(DynamoStore):
    """Executes :class:`ItemWrite` s and keeps collection heads in the state table. Thread-safe (boto3 clients are)."""

    def __init__(self, client: Any, rules: RuleSet, tombstones: TombstoneConfig, state_table: str) -> None:
        super().__init__(client, state_table)
        self.rules = rules
        self._retention = tombstones.retention_seconds
        self.ttl_attribute = tombstones.ttl_attribute

    def expire_at(self) -> int:
        return int(time.time()) + self._retention

    def statement_batches(self, parallel: Parallel = serial, known_items: int = 100_000) -> StatementBatches:
        """The BatchExecuteStatement engine over this writer's client (see :mod:`.batch`)."""
        return StatementBatches(self.client, parallel, known_items)

    def write(self, write: ItemWrite, cas: Cas | None = None) -> bool:
        """Apply one group write. True if applied, False if stale (DynamoDB holds a newer version; with ``cas``:
        the version is no longer the one read).

        A mirror write also keeps the parts table in step: its value's parts go first, and parts no item points at
        any more (older versions, or this write's own when it was stale) are deleted after.
        """
        where = f"table {write.table} item {_describe(write)}"
        mirrored = write.rule.is_mirror
        if write.parts:
            self._put_parts(write, where)
        request = statements.update_request(write, self.rules, self.expire_at(), cas)
        if mirrored:
            request["ReturnValues"] = "UPDATED_OLD"  # did the value it replaces have parts?
        try:
            old = self.client.update_item(**request).get("Attributes", {})
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                metrics.ITEM_WRITES.labels(table=write.table, result="stale").inc()
                if write.parts:
                    self._delete_parts(write, self._parts_of(write, write.version, write.version), where)
                return False
            raise translate(exc, where) from None
        except Exception as exc:
            raise translate(exc, where) from None
        metrics.ITEM_WRITES.labels(table=write.table, result="applied").inc()
        if mirrored and "parts" in old:
            self._delete_parts(write, self._parts_of(write, 0, write.version - 1), where)
        if write.is_tombstone and not statements.expires_with_tombstone(write, self.rules):
            self._expire_tombstone(write, where)
        return True

    def _put_parts(self, write: ItemWrite, where: str) -> None:
        table, key = mirror.parts_table(write.table), _mirror_key(write)
        try:
            for index, data in enumerate(write.parts):
                # Immutable (key, version, index): writing one again writes the same bytes.
                self.client.put_item(TableName=table, Item={**mirror.part_key(key, write.version, index),
                                                             "data": {"B": data}})
        except Exception as exc:
            raise translate(exc, f"{where} part") from None

    def _parts_of(self, write: ItemWrite, low: int, high: int) -> list[dict[str, Any]]:
        """Keys of the parts of versions ``low`` to ``high`` of the write's key."""
        return [{"key": p["key"], "part": p["part"]}
                for p in _query_parts(self.client, write.table, _mirror_key(write), low, high, keys_only=True)]

    def _delete_parts(self, write: ItemWrite, keys: list[dict[str, Any]], where: str) -> None:
        try:
            for key in keys:
                self.client.delete_item(TableName=mirror.parts_table(write.table), Key=key)
        except Exception as exc:
            raise translate(exc, f"{where} old parts") from None

    def write_transaction(self, writes: list[ItemWrite]) -> list[bool | SinkError]:
        """Apply up to 100 writes of distinct items (of any keys) in one TransactWriteItems, each still conditional
        on its own version.

        One failing item cancels the whole transaction, so a cancelled one is re-sent without the items that made
        it fail: stale ones (condition failed) and poison ones (rejected by validation, returned as a SinkError for
        that write alone). Returns, per write: True (applied), False (stale) or the SinkError. Throttling and
        conflicts raise a retryable SinkError for the whole transaction.
        """
        outcome: dict[int, bool | SinkError] = {}
        expire_at = self.expire_at()
        # Some item is invalid (too big, say) and DynamoDB does not always say which: the transaction is halved
        # until the invalid write is alone, then it takes the single-item path and is poison on its own.
        bisect(range(len(writes)),
               lambda chunk: self._transact(writes, [i for i in chunk if i not in outcome], outcome, expire_at))
        return [outcome[i] for i in range(len(writes))]

    def _transact(self, writes: list[ItemWrite], pending: list[int], outcome: dict[int, bool | SinkError],
                  expire_at: int) -> None:
        """Send ``pending`` as one transaction, again without the writes that cancelled it, until it commits.
        Raises a ValidationException untranslated: :meth:`write_transaction` halves the transaction."""
        if not pending:
            return
        where = f"transaction on table {writes[pending[0]].table}"
        while pending:
            if len(pending) == 1:  # a transaction of one costs twice an UpdateItem
                outcome[pending[0]] = self._write_or_poison(writes[pending[0]])
                return
            items = [{"Update": _transactional(statements.update_request(writes[i], self.rules, expire_at), writes[i])}
                     for i in pending]
            try:
                # botocore would fill the idempotency token with uuid4(), one os.urandom read per transaction.
                self.client.transact_write_items(TransactItems=items, ClientRequestToken=ChangeEvent.new_id())
            except botocore.exceptions.ClientError as exc:
                code = code_of(exc)
                if code == "ValidationException":
                    raise
                if code != "TransactionCanceledException":
                    raise translate(exc, where) from None
                reasons = exc.response.get("CancellationReasons", [])
                failed = _cancellation_outcomes(pending, reasons, writes, where)
                if not failed:
                    codes = sorted({r.get("Code", "None") for r in reasons} - {"None"})
                    raise SinkError(f"{where}: DynamoDB TransactionCanceledException: {', '.join(codes)}",
                                    retryable=True) from None
                for i, result in failed.items():
                    if result is False and writes[i].rule.is_mirror:
                        # Stale, or the value it replaces is in parts: the item path tells which (and cleans up).
                        outcome[i] = self._write_or_poison(writes[i])
                    else:
                        outcome[i] = result
                        if result is False:
                            metrics.ITEM_WRITES.labels(table=writes[i].table, result="stale").inc()
                pending = [i for i in pending if i not in outcome]
                continue
            except Exception as exc:
                raise translate(exc, where) from None
            for i in pending:
                outcome[i] = True
                metrics.ITEM_WRITES.labels(table=writes[i].table, result="applied").inc()
                if writes[i].is_tombstone and not statements.expires_with_tombstone(writes[i], self.rules):
                    self._expire_tombstone(writes[i], f"table {writes[i].table} item {_describe(writes[i])}")
            return

    def _write_or_poison(self, write: ItemWrite) -> bool | SinkError:
        try:
            return self.write(write)
        except SinkError as exc:
            if exc.retryable:
                raise
            return exc

    def _expire_tombstone(self, write: ItemWrite, where: str) -> None:
        # Refused: another group on the item is live, or a newer write superseded the tombstone: no TTL, correctly.
        self.update(where, **statements.expire_tombstone_request(write, self.rules, self.expire_at()))

    def put_head(self, rule: Rule, key: bytes, version: int, deleted: bool) -> None:
        request = statements.head_request(self.state_table, rule.name, key, version, deleted, self.ttl_attribute,
                                        self.expire_at())
        self.update(f"state table {self.state_table} head of {key!r}", **request)  # refused: a newer head stands



def _transactional(request: dict[str, Any], write: ItemWrite) -> dict[str, Any]:
    """A mirror write in a transaction also requires that the value it replaces is not in parts: a transaction
    cannot return old values, so such a write fails here and is redone on the item path, which cleans the parts."""
    if write.rule.is_mirror:
        request["ConditionExpression"] = f"({request['ConditionExpression']}) AND attribute_not_exists(#parts)"
        request["ExpressionAttributeNames"] = {**request["ExpressionAttributeNames"], "#parts": "parts"}
    return request


def _mirror_key(write: ItemWrite) -> bytes:
    ((_attr, key),) = write.key
    return bytes(key.value)


def _query_parts(client: Any, table: str, key: bytes, low: int, high: int,
                 keys_only: bool = False) -> list[dict[str, Any]]:
    """The parts of versions ``low`` to ``high`` of a mirrored key, in order (a strongly consistent query)."""
    params: dict[str, Any] = {"TableName": mirror.parts_table(table), "ConsistentRead": True,
                              **mirror.part_range(key, (low, 0), (high, mirror.LAST))}
    if keys_only:
        params["ProjectionExpression"] = "#k, #p"
    return [p for page in client.get_paginator("query").paginate(**params) for p in page["Items"]]


def read_mirror_value(client: Any, table: str, item: Mapping[str, Any], attempts: int = 5) -> TypedValue | None:
    """The value a mirror item holds, put together from its parts when it has them; None for a tombstone.

    Parts of a version are written before the item that names them and deleted only after a newer item replaced
    it, so they are all there unless that happened between the two reads: then the item is read again.
    """
    for _ in range(attempts):
        if "value" in item:
            return from_attribute_value(item["value"])
        if "parts" not in item:
            return None
        key, version, count = bytes(item["key"]["B"]), int(item["_v_mirror"]["N"]), int(item["parts"]["N"])
        try:
            pieces = [bytes(p["data"]["B"]) for p in _query_parts(client, table, key, version, version)]
            if len(pieces) == count:
                return mirror.decode(b"".join(pieces))
            item = client.get_item(TableName=table, Key={"key": {"B": key}}, ConsistentRead=True).get("Item") or {}
        except Exception as exc:
            raise translate(exc, f"reading mirror item {key!r}") from None
    raise SinkError(f"mirror item {key!r} kept changing while its parts were read; read it again", retryable=True)


def live_filter(rule: Rule) -> tuple[str, dict[str, str]]:
    """A filter expression (and its names) keeping the items that hold ``rule``'s live data (see live_items)."""
    names = {"#v": rule.version_attr, "#d": rule.deleted_attr}
    data = []
    for i, attr in enumerate(rule.data_attrs):
        names[f"#a{i}"] = attr
        data.append(f"attribute_exists(#a{i})")
    return f"attribute_not_exists(#d) AND ({' OR '.join(['attribute_exists(#v)', *data])})", names


def _cancellation_outcomes(pending: list[int], reasons: list[dict[str, str]], writes: list[ItemWrite],
                           where: str) -> dict[int, bool | SinkError]:
    """Stale (False) and poison (SinkError) writes named by a cancelled transaction's reasons, in ``pending`` order.

    Raises a retryable SinkError when any reason is throttling or a conflict: the whole transaction is tried again.
    """
    codes = [r.get("Code", "None") for r in reasons]
    retry = sorted({code for code in codes if retried_cancellation(code)})
    if retry:
        if any(kind(code) is Kind.THROTTLED for code in retry):
            metrics.DYNAMODB_THROTTLES.inc()
        raise SinkError(f"{where}: DynamoDB TransactionCanceledException: {', '.join(retry)}", retryable=True)
    failed: dict[int, bool | SinkError] = {}
    for i, code, reason in zip(pending, codes, reasons, strict=False):
        if code == CONDITION_FAILED:
            failed[i] = False
        elif kind(code) is Kind.POISON:
            failed[i] = SinkError(f"table {writes[i].table} item {_describe(writes[i])}: DynamoDB "
                                  f"{exception_name(code)}: {reason.get('Message', '')}", retryable=False)
    return failed


def _describe(write: ItemWrite) -> str:
    return ", ".join(f"{a}={v.value!r}" for a, v in write.key)
