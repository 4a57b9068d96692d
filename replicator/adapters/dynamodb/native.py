"""DynamoDB reads and compare-and-set writes for the application's own commands (see core/native.py).

Reads are strongly consistent and return every item of a key with its group's version, tombstones included (a
native write over a tombstone must compare with its version). Writes go as one TransactWriteItems when they fit
(100 items, no mirror value in parts): all of a command's items and its head change together or not at all. A
write that cannot be one transaction (a value in parts, more than 100 items) goes in steps; what a crash between
steps leaves is said where the client documents its commands.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import botocore.exceptions

from replicator import metrics
from replicator.adapters.dynamodb.calls import frozen_key
from replicator.adapters.dynamodb.errors import CONDITION_FAILED, Kind, code_of, kind, retried_cancellation, translate
from replicator.adapters.dynamodb.store import DynamoWriter, read_mirror_value
from replicator.core import statements
from replicator.core.errors import SinkError
from replicator.core.mapping import Head, ItemWrite, Rule, render_attr
from replicator.core.native import Cas, Stored
from replicator.core.values import ItemKey, from_attribute_value, to_attribute_value

#: Items per TransactWriteItems.
TRANSACTION_ITEMS = statements.TRANSACTION_ITEMS


class NativeStore(DynamoWriter):
    """Loads keys as stored items and commits native writes. Thread-safe (boto3 clients are)."""

    # -- reads ---------------------------------------------------------------------------------------------------

    def single_keys(self, rule: Rule, key: bytes, variables: Mapping[str, bytes]) -> dict[str, Any]:
        """The DynamoDB key of a single-item rule's item for ``key``."""
        values = {**variables, "key": key}
        return {a: to_attribute_value(render_attr(rule, a, values, key)) for a in rule.key_attrs}

    def stored_items(self, wanted: Sequence[tuple[Rule, bytes, dict[str, Any]]]
                     ) -> list[tuple[ItemKey, Stored] | None]:
        """Single items (rule, Redis key, DynamoDB key): of single-item keys, or named elements of a collection
        key. One BatchGetItem per 100 distinct items; None where there is no item."""
        found = self.batch_get([(rule.table, item_key) for rule, _key, item_key in wanted], "reading keys")
        out: list[tuple[ItemKey, Stored] | None] = []
        for rule, key, item_key in wanted:
            raw = found.get((rule.table, frozen_key(item_key)))
            out.append(None if raw is None else (_item_key(rule, raw), self._stored(rule, raw, key)))
        return out

    def stored_top(self, rule: Rule, key: bytes, variables: Mapping[str, bytes], index: str, score_attr: str,
                   count: int, descending: bool) -> dict[ItemKey, Stored]:
        """The live items of a sorted-set key with the ``count`` highest (or lowest) scores, ties at the edge
        included, read in score order from the LSI on the score attribute (strongly consistent)."""
        pk = render_attr(rule, rule.partition_key, {**variables, "key": key}, key)
        items: dict[ItemKey, Stored] = {}
        last_score: Decimal | None = None
        for page in self.pages("query", f"top of {key!r} in {rule.table}", TableName=rule.table, IndexName=index,
                               KeyConditionExpression="#pk = :pk", FilterExpression="attribute_not_exists(#d)",
                               ExpressionAttributeNames={"#pk": rule.partition_key, "#d": rule.deleted_attr},
                               ExpressionAttributeValues={":pk": to_attribute_value(pk)}, ConsistentRead=True,
                               ScanIndexForward=not descending, Limit=count + 1):
            for raw in page:
                item_key = _item_key(rule, raw)
                if not rule.owns(item_key, variables):
                    continue
                score = Decimal(raw[score_attr]["N"])
                if len(items) >= count and score != last_score:
                    return items  # past the wanted ones and every tie of the last of them
                items[item_key] = self._stored(rule, raw, key)
                last_score = score
        return items

    def stored_collection(self, rule: Rule, key: bytes, variables: Mapping[str, bytes]) -> dict[ItemKey, Stored]:
        """Every item of a collection key (tombstones too): one strongly consistent Query of its partition."""
        pk = render_attr(rule, rule.partition_key, {**variables, "key": key}, key)
        items: dict[ItemKey, Stored] = {}
        for raw in self.items("query", f"items of {key!r} in {rule.table}", TableName=rule.table,
                              KeyConditionExpression="#pk = :pk", ExpressionAttributeNames={"#pk": rule.partition_key},
                              ExpressionAttributeValues={":pk": to_attribute_value(pk)}, ConsistentRead=True):
            item_key = _item_key(rule, raw)
            if rule.owns(item_key, variables):
                items[item_key] = self._stored(rule, raw, key)
        return items

    def _stored(self, rule: Rule, raw: Mapping[str, Any], key: bytes) -> Stored:
        version = int(raw[rule.version_attr]["N"]) if rule.version_attr in raw else None
        if rule.is_mirror and "parts" in raw:
            value = read_mirror_value(self.client, rule.table, raw)
            raw = {**{a: v for a, v in raw.items() if a != "parts"},
                   **({"value": to_attribute_value(value)} if value is not None else {})}
        attrs = tuple((a, from_attribute_value(raw[a])) for a in rule.data_attrs if a in raw)
        return Stored(version, rule.deleted_attr in raw, attrs)

    # -- writes --------------------------------------------------------------------------------------------------

    def commit(self, writes: Sequence[tuple[ItemWrite, Cas]], heads: Sequence[Head],
               in_steps: bool = False) -> bool | None:
        """Write a command's items (compare-and-set) and heads (newer-or-equal). False when another writer changed
        what was read; when it all fit one transaction nothing of this call was written: read again and retry.

        One transaction holds at most 100 items, each once (two rules' groups on one shared item are two writes of
        it), and no mirror value in parts. Writes that do not fit return None, unless ``in_steps``: then single
        items with a mirror value in parts go first (written as the applier writes them), then the other items in
        transactions of up to 100 distinct items, heads last. A crash between steps leaves the first steps
        written; a head written last means a replicated event arriving in between is still refused item by item.
        """
        distinct = len({(w.table, w.key) for w, _cas in writes}) == len(writes)
        if distinct and len(writes) + len(heads) <= TRANSACTION_ITEMS and not any(w.parts for w, _cas in writes):
            if len(writes) == 1 and not heads:
                return self.write(*writes[0])  # one UpdateItem: half a transaction's write units
            return self._transact(list(writes), list(heads))
        if not in_steps:
            return None
        for write, cas in writes:
            if write.parts and not self.write(write, cas):
                return False
        rest = [(w, c) for w, c in writes if not w.parts]
        rounds = statements.batches_of_distinct_items([(w.table, w.key) for w, _c in rest],
                                                    [statements.write_size(w) for w, _c in rest],
                                                    TRANSACTION_ITEMS, statements.TRANSACTION_BYTES)
        for round_ in rounds:
            for transaction in round_:
                if not self._transact([rest[i] for i in transaction], []):
                    return False
        return self._transact([], list(heads)) if heads else True

    def _transact(self, writes: list[tuple[ItemWrite, Cas]], heads: list[Head]) -> bool:
        expire_at = self.expire_at()
        items = [{"Update": statements.update_request(w, self.rules, expire_at, cas)} for w, cas in writes]
        items += [{"Update": statements.head_request(self.state_table, h.rule.name, h.key, h.version, h.deleted,
                                                   self.ttl_attribute, expire_at)} for h in heads]
        where = f"native write of {len(writes)} item(s) to {writes[0][0].table if writes else self.state_table}"
        try:
            # A token of its own (not ChangeEvent.new_id, whose generator the application may seed): DynamoDB
            # treats a token seen within 10 minutes as the same transaction.
            self.client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
        except botocore.exceptions.ClientError as exc:
            if code_of(exc) != "TransactionCanceledException":
                raise translate(exc, where) from None
            codes = {r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])} - {"None"}
            # Someone else wrote first (a refused compare-and-set, a conflicting transaction): read again, run the
            # command again.
            if codes and all(code == CONDITION_FAILED or kind(code) is Kind.CONFLICT for code in codes):
                return False
            raise SinkError(f"{where}: DynamoDB TransactionCanceledException: {', '.join(sorted(codes))}",
                            retryable=any(retried_cancellation(c) for c in codes)) from None
        except Exception as exc:
            raise translate(exc, where) from None
        for write, _cas in writes:
            metrics.ITEM_WRITES.labels(table=write.table, result="applied").inc()
            if write.is_tombstone and not statements.expires_with_tombstone(write, self.rules):
                self._expire_tombstone(write, f"table {write.table}")
        return True


def _item_key(rule: Rule, raw: Mapping[str, Any]) -> ItemKey:
    return tuple(sorted((a, from_attribute_value(raw[a])) for a in rule.key_attrs))
