"""The cutover's control record and the clients' heartbeats, kept in the state table.

Both live under keys no rule's head can have (a head key is ``rule name + NUL + key`` and rule names are not empty).
The record is written compare-and-set on its epoch, so two operators cannot both take a step from the same plan;
heartbeats carry DynamoDB's TTL attribute too, so that the sweeper removes the instances that went away.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import botocore.exceptions

from replicator.adapters.dynamodb.store import DynamoStore, translate
from replicator.core.cutover import CutoverError, Heartbeat, Plan
from replicator.core.errors import ReplicatorError

log = logging.getLogger(__name__)

CONTROL_KEY = b"\x00cutover\x00plan"
HEARTBEAT_PREFIX = b"\x00cutover\x00client\x00"


class ControlStore:
    def __init__(self, client: Any, state_table: str, ttl_attribute: str) -> None:
        self._store = DynamoStore(client, state_table)
        self._table = state_table
        self._ttl = ttl_attribute

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

    def beat(self, heartbeat: Heartbeat) -> None:
        self._store.put(self._table, {
            "k": {"B": HEARTBEAT_PREFIX + heartbeat.instance.encode()}, "epoch": {"N": str(heartbeat.epoch)},
            "at": {"N": f"{heartbeat.at:.3f}"}, "expires": {"N": f"{heartbeat.expires:.3f}"},
            self._ttl: {"N": str(int(heartbeat.expires) + 1)}}, "recording a cutover heartbeat")

    def forget(self, instance: str) -> None:
        """A client closed cleanly: it stops counting at once, not when its heartbeat expires."""
        self._store.delete(self._table, {"k": {"B": HEARTBEAT_PREFIX + instance.encode()}},
                           "removing a cutover heartbeat")

    def heartbeats(self) -> list[Heartbeat]:
        found = []
        for item in self._store.items("scan", "reading cutover heartbeats", TableName=self._table,
                                      FilterExpression="begins_with(k, :p)",
                                      ExpressionAttributeValues={":p": {"B": HEARTBEAT_PREFIX}}, ConsistentRead=True):
            instance = bytes(item["k"]["B"])[len(HEARTBEAT_PREFIX):].decode("utf-8", "replace")
            found.append(Heartbeat(instance, int(item["epoch"]["N"]), float(item["at"]["N"]),
                                   float(item["expires"]["N"])))
        return sorted(found, key=lambda h: h.instance)


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
