"""Where an interrupted snapshot resumes: each node's SCAN position, kept in the state table.

Kept in DynamoDB, not on local disk, because the snapshot runs as a Kubernetes Job whose retry may land on another
pod. A position is saved only after Kafka acknowledged every event before it, so resuming publishes at most the
keys scanned since the last save again (harmless: versions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Checkpoint items' keys start with this; collection heads start with a rule name, never with a NUL byte.
PREFIX = b"\x00snapshot\x00"


@dataclass(frozen=True)
class Position:
    glob: int  # index into RuleSet.globs(); len(globs) means the node is done
    cursor: int


class Checkpoints:
    """Positions of one snapshot: ``scope`` tells sharded snapshots (``capture.shard``) of the same nodes apart."""

    def __init__(self, client: Any, table: str, scope: str = "") -> None:
        self._client = client
        self._table = table
        self._prefix = PREFIX + (f"{scope}\x00".encode() if scope else b"")

    def load(self, node: str) -> Position | None:
        item = self._client.get_item(TableName=self._table, Key={"k": {"B": self._prefix + node.encode()}},
                                     ConsistentRead=True).get("Item")
        return None if item is None else Position(int(item["glob"]["N"]), int(item["cursor"]["N"]))

    def save(self, node: str, position: Position) -> None:
        self._client.put_item(TableName=self._table, Item={
            "k": {"B": self._prefix + node.encode()}, "glob": {"N": str(position.glob)},
            "cursor": {"N": str(position.cursor)}})

    def clear(self) -> int:
        """Forget every node's position (a snapshot not resuming starts over). Returns how many were removed.

        Unscoped, that includes every shard's; scoped, only this shard's."""
        removed = 0
        pages = self._client.get_paginator("scan").paginate(
            TableName=self._table, FilterExpression="begins_with(k, :p)",
            ExpressionAttributeValues={":p": {"B": self._prefix}}, ProjectionExpression="k")
        for page in pages:
            for item in page["Items"]:
                self._client.delete_item(TableName=self._table, Key={"k": item["k"]})
                removed += 1
        return removed
