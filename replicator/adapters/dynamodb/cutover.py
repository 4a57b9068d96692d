"""The cutover's control record and the clients' heartbeats, kept in the state table.

Both live under keys no rule's head can have (a head key is ``rule name + NUL + key`` and rule names are not empty).
The record is written compare-and-set on its epoch, so two operators cannot both take a step from the same plan;
heartbeats share a few slot items (:data:`HEARTBEAT_SLOTS`), so that reading every client costs one request whatever
the state table holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from replicator.adapters.dynamodb.errors import translate
from replicator.adapters.dynamodb.store import DynamoStore
from replicator.core.cutover import CutoverError, Heartbeat, Plan, VerifyRecord
from replicator.core.errors import ReplicatorError
from replicator.core.mapping import Rule, RuleSet
from replicator.core.native import NATIVE_BASE
from replicator.core.values import from_attribute_value

log = logging.getLogger(__name__)

CONTROL_KEY = b"\x00cutover\x00plan"
VERIFY_KEY = b"\x00cutover\x00verify"
HEARTBEATS_PREFIX = b"\x00cutover\x00clients\x00"
#: The clients' heartbeats share this many items of the state table (an instance's by a hash of its id), one
#: attribute per instance. Not an item per instance: the state table's only key is the hash key, so finding them
#: would be a Scan of every head (hours at 100M keys, and a switch polls them); not one item for all: a beat's
#: write units grow with the item it rewrites. 32 slots: one BatchGetItem reads them all, and a few hundred
#: instances make items of a few KB.
HEARTBEAT_SLOTS = 32
#: An instance whose heartbeat expired this long ago went away without closing: the reader removes its entry.
PRUNE_AFTER_S = 3600.0
_ENTRY = "c:"


class ControlStore:
    def __init__(self, client: Any, state_table: str) -> None:
        self._store = DynamoStore(client, state_table)
        self._table = state_table

    def plan(self) -> Plan:
        """The current plan (strongly consistent); every owner on Redis when none was ever written."""
        item = self._store.get(self._table, {"k": {"B": CONTROL_KEY}}, "reading the cutover plan")
        return Plan() if item is None else Plan.from_json(item["plan"]["S"])

    def replace(self, old: Plan, new: Plan) -> None:
        """Write ``new`` if the record still holds ``old``'s epoch; CutoverError if someone else took a step."""
        condition = "attribute_not_exists(k)" if old.epoch == 0 else "epoch = :old"
        values = {} if old.epoch == 0 else {"ExpressionAttributeValues": {":old": {"N": str(old.epoch)}}}
        try:
            self._store.client.put_item(
                TableName=self._table, ConditionExpression=condition, **values,
                Item={"k": {"B": CONTROL_KEY}, "epoch": {"N": str(new.epoch)}, "plan": {"S": new.to_json()},
                      "changed_at": {"N": f"{time.time():.3f}"}})
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise CutoverError(f"the cutover plan changed since epoch {old.epoch} (another operator?): "
                                   "read `cutover status` and run the step again") from None
            raise translate(exc, "writing the cutover plan") from None
        except Exception as exc:
            raise translate(exc, "writing the cutover plan") from None

    def note_verify(self, record: VerifyRecord) -> None:
        """Keep the last verify run for `cutover status` (each run replaces the one before)."""
        self._store.put(self._table, {"k": {"B": VERIFY_KEY}, "record": {"S": record.to_json()}},
                        "recording the last verify run")

    def last_verify(self) -> VerifyRecord | None:
        item = self._store.get(self._table, {"k": {"B": VERIFY_KEY}}, "reading the last verify run")
        return None if item is None else VerifyRecord.from_json(item["record"]["S"])

    def beat(self, heartbeat: Heartbeat) -> None:
        """Record the instance's heartbeat: one attribute of its slot item, rewritten (see :data:`HEARTBEAT_SLOTS`)."""
        entry = {"epoch": {"N": str(heartbeat.epoch)}, "at": {"N": f"{heartbeat.at:.3f}"},
                 "expires": {"N": f"{heartbeat.expires:.3f}"},
                 "shadow": {"S": json.dumps([list(t) for t in heartbeat.shadow])}}
        self._update(heartbeat.instance, "SET #c = :hb", {":hb": {"M": entry}}, "recording a cutover heartbeat")

    def forget(self, instance: str) -> None:
        """A client closed cleanly: it stops counting at once, not when its heartbeat expires."""
        self._update(instance, "REMOVE #c", None, "removing a cutover heartbeat")

    def heartbeats(self) -> list[Heartbeat]:
        """Every instance's last heartbeat: one BatchGetItem of the slot items, whatever the state table holds.
        Entries that expired :data:`PRUNE_AFTER_S` ago (instances that went away without closing) are removed."""
        slots = [(self._table, _slot_key(n)) for n in range(HEARTBEAT_SLOTS)]
        found, now = [], time.time()
        for item in self._store.batch_get(slots, "reading cutover heartbeats").values():
            for name, value in item.items():
                if not name.startswith(_ENTRY):
                    continue
                entry = value["M"]
                shadow = tuple((str(c), str(r), int(n)) for c, r, n in json.loads(entry["shadow"]["S"]))
                beat = Heartbeat(name[len(_ENTRY):], int(entry["epoch"]["N"]), float(entry["at"]["N"]),
                                 float(entry["expires"]["N"]), shadow)
                if beat.expires < now - PRUNE_AFTER_S:
                    self._prune(beat.instance, entry["at"])
                else:
                    found.append(beat)
        return sorted(found, key=lambda h: h.instance)

    def _prune(self, instance: str, at: dict[str, str]) -> None:
        """Remove a long-dead instance's entry, unless it beat again since it was read (then the update is refused:
        alive after all)."""
        self._update(instance, "REMOVE #c", {":at": at}, "pruning a cutover heartbeat", condition="#c.#at = :at")

    def _update(self, instance: str, expression: str, values: dict[str, Any] | None, where: str,
                condition: str | None = None) -> bool:
        slot = int.from_bytes(hashlib.sha256(instance.encode()).digest()[:4], "big") % HEARTBEAT_SLOTS
        params: dict[str, Any] = {"ExpressionAttributeNames": {"#c": _ENTRY + instance,
                                                               **({"#at": "at"} if condition else {})}}
        if values:
            params["ExpressionAttributeValues"] = values
        if condition:
            params["ConditionExpression"] = condition
        return self._store.update(where, TableName=self._table, Key=_slot_key(slot), UpdateExpression=expression,
                                  **params)


def _slot_key(slot: int) -> dict[str, Any]:
    return {"k": {"B": HEARTBEATS_PREFIX + str(slot).encode()}}


class PlanWatch:
    """The plan as of at most ``refresh_s`` ago, read again lazily by whoever asks (an applier per batch, a client
    per command): one GetItem per ``refresh_s`` and no thread. When the state table cannot be read, the last plan
    read stays in force (logged): a plan only ever changes by steps that wait for the clients to see them."""

    def __init__(self, control: ControlStore, refresh_s: float) -> None:
        self.control = control
        self.refresh_s = refresh_s
        self._plan = Plan()
        self._due = 0.0
        self._lock = threading.Lock()

    def current(self, fresh: bool = False) -> Plan:
        now = time.monotonic()
        if not fresh and now < self._due:
            return self._plan
        with self._lock:
            if fresh or time.monotonic() >= self._due:
                try:
                    self._plan = self.control.plan()
                except ReplicatorError as exc:
                    log.warning("cannot read the cutover plan; keeping the last one",
                                extra={"kv": {"epoch": self._plan.epoch, "error": str(exc)}})
                self._due = time.monotonic() + self.refresh_s
            return self._plan


@dataclass(frozen=True)
class NativeGroup:
    """One attribute group (or collection head) the application wrote through DynamoRedis: its version is native."""

    table: str
    key: dict[str, Any]  # the item's DynamoDB key (wire form)
    version_attr: str
    version: int
    owner: bytes | None  # None: the item does not name its owner (see NativeGroups.find)
    where: str  # for messages: the rule and the item key
    in_parts: bool = False  # a mirror value kept in the parts table, whose rows are keyed by the version


class NativeGroups:
    """Finding the groups with native versions, and re-basing them on a replicated version (``cutover back``).

    Re-basing keeps an item's data and moves its group's version from the native space (2^60 + µs) to a replicated
    one (a Redis ``TIME`` read under the hold): replicated events older than that instant stay refused, Redis writes
    after it win again. It is compare-and-set on the native version read, so a write that raced it is never undone.
    """

    def __init__(self, client: Any, rules: RuleSet, state_table: str) -> None:
        self._store = DynamoStore(client, state_table)
        self._rules = rules
        self._state_table = state_table

    def find(self) -> Iterator[NativeGroup]:
        """Every native group of every rule table and of the state table's heads (one Scan of each table)."""
        native = {":native": {"N": str(NATIVE_BASE)}}
        for table, spec in self._rules.tables.items():
            rules = [r for r in self._every_rule() if r.table == table]
            if not rules:
                continue
            names = {f"#v{i}": r.version_attr for i, r in enumerate(rules)}
            condition = " OR ".join(f"#v{i} >= :native" for i in range(len(rules)))
            for item in self._store.items("scan", f"native versions in {table}", TableName=table,
                                          FilterExpression=condition, ExpressionAttributeNames=names,
                                          ExpressionAttributeValues=native, ConsistentRead=True):
                key_attrs = (spec.partition_key[0],) + ((spec.sort_key[0],) if spec.sort_key else ())
                key = {a: item[a] for a in key_attrs}
                for rule in rules:
                    version = int(item.get(rule.version_attr, {}).get("N", "0"))
                    if version >= NATIVE_BASE:
                        yield NativeGroup(table, key, rule.version_attr, version, self._owner(rule, key),
                                          f"{rule.name} item {_shown(key)}", in_parts="parts" in item)
        for item in self._store.items("scan", "native heads in the state table", TableName=self._state_table,
                                      FilterExpression="v >= :native", ExpressionAttributeValues=native,
                                      ConsistentRead=True):
            raw = bytes(item["k"]["B"])
            rule_name, _, source = raw.partition(b"\x00")
            if not rule_name:
                continue  # the replicator's own records
            yield NativeGroup(self._state_table, {"k": item["k"]}, "v", int(item["v"]["N"]),
                              self._rules.owner_of(source), f"head of {source[:100]!r}")

    def rebase(self, group: NativeGroup, version: int) -> bool:
        """Move ``group`` to ``version`` if it still holds the native version found; False if it moved meanwhile."""
        return self._store.update(
            f"re-basing {group.where}", TableName=group.table, Key=group.key, UpdateExpression="SET #v = :new",
            ConditionExpression="#v = :old", ExpressionAttributeNames={"#v": group.version_attr},
            ExpressionAttributeValues={":new": {"N": str(version)}, ":old": {"N": str(group.version)}})

    def _every_rule(self) -> list[Rule]:
        return [*self._rules.rules, *((self._rules.mirror,) if self._rules.mirror else ())]

    def _owner(self, rule: Rule, key: dict[str, Any]) -> bytes | None:
        """The owner of an item's group, from its key alone: the variables its key attributes were rendered from
        (the mirror's key is the Redis key, its own owner)."""
        variables = rule.unrender_key((a, from_attribute_value(v)) for a, v in key.items())
        if variables is None:
            return None
        if rule.owner.single == "key":
            source = variables.get("key")
            if source is None and set(rule.pattern.placeholders) <= set(variables):
                source = rule.pattern.render(variables)
            return source
        if not set(rule.owner.placeholders) <= set(variables):
            return None
        return rule.owner.render(variables)


def _shown(key: dict[str, Any]) -> str:
    return ", ".join(f"{a}={next(iter(v.values()))!r}"[:80] for a, v in sorted(key.items()))
