"""Where an interrupted snapshot resumes: each node's SCAN position, kept in the state table.

Kept in DynamoDB, not on local disk, because the snapshot runs as a Kubernetes Job whose retry may land on another
pod. A position is saved only after Kafka acknowledged every event before it, so resuming publishes at most the
keys scanned since the last save again (harmless: versions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replicator.adapters.dynamodb.store import DynamoStore

#: Checkpoint items' keys start with this; collection heads start with a rule name, never with a NUL byte.
PREFIX = b"\x00snapshot\x00"


@dataclass(frozen=True)
class Position:
    glob: int  # index into RuleSet.globs(); len(globs) means the node is done
    cursor: int


class Checkpoints:
    """Positions of one snapshot: ``scope`` tells sharded snapshots (``capture.shard``) of the same nodes apart."""

    def __init__(self, client: Any, table: str, scope: str = "") -> None:
        self._store = DynamoStore(client, table)
        self._table = table
        self._prefix = PREFIX + (f"{scope}\x00".encode() if scope else b"")

    def load(self, node: str) -> Position | None:
        item = self._store.get(self._table, {"k": {"B": self._prefix + node.encode()}}, "reading a snapshot checkpoint")
        return None if item is None else Position(int(item["glob"]["N"]), int(item["cursor"]["N"]))

    def save(self, node: str, position: Position) -> None:
        self._store.put(self._table, {
            "k": {"B": self._prefix + node.encode()}, "glob": {"N": str(position.glob)},
            "cursor": {"N": str(position.cursor)}}, "saving a snapshot checkpoint")

    def clear(self) -> int:
        """Forget every node's position (a snapshot not resuming starts over). Returns how many were removed.

        Unscoped, that includes every shard's; scoped, only this shard's."""
        removed = 0
        for item in self._store.items("scan", "reading snapshot checkpoints", TableName=self._table,
                                      FilterExpression="begins_with(k, :p)",
                                      ExpressionAttributeValues={":p": {"B": self._prefix}}, ProjectionExpression="k"):
            self._store.delete(self._table, {"k": item["k"]}, "clearing a snapshot checkpoint")
            removed += 1
        return removed
