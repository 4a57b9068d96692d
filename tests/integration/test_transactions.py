"""write_mode "transaction": writes of many keys share one TransactWriteItems, and one item never sinks the rest."""

from __future__ import annotations

import json

from replicator import metrics
from replicator.adapters.kafka.producer import EventPublisher
from replicator.core.events import ChangeEvent, KeyType, Op, Origin
from tests.support import (
    Running,
    ddb,
    dead_letter_records,
    eventually,
    fully_committed,
    messaging_config,
    messaging_table,
)


def _meta(opponent: str, version: int, value: bytes) -> ChangeEvent:
    return ChangeEvent(f"meta:tx:{opponent}".encode(), KeyType.STRING, Op.UPSERT, Origin.LIVE, version, version,
                       b"tx", value)


def test_fresh_stale_and_oversized_states_in_one_transaction(stack, uid):
    client = ddb(stack)
    config = messaging_config(stack, uid, apply={"write_mode": "transaction", "poll_timeout_ms": 100})
    table = messaging_table(config)

    def metadata(opponent):
        item = client.get_item(TableName=table, ConsistentRead=True,
                               Key={"owner_id": {"S": "tx"}, "opponent_id": {"S": opponent}}).get("Item")
        if item is None:
            return None
        return item["metadata"].get("B") or item["metadata"]["S"].encode()  # S when the value is UTF-8

    publisher = EventPublisher(config.kafka)
    with Running(config) as run:
        run.start_applier()
        publisher.publish(_meta("kept", 200, b"newer"))
        publisher.flush()
        eventually(lambda: metadata("kept") == b"newer", 60, message="the newer state applied")
    stale = metrics.ITEM_WRITES.labels(table=table, result="stale")._value.get()
    rejected = metrics.DLQ_EVENTS.labels(reason="rejected_by_dynamodb")._value.get()

    # All in the topic before the applier starts: one poll, one batch, one transaction for the four items.
    for event in (_meta("a", 300, b"A"), _meta("kept", 100, b"older"), _meta("big", 300, b"x" * 450_000),
                  _meta("b", 300, b"B")):
        publisher.publish(event)
    publisher.close()
    with Running(config) as run:
        run.start_applier()
        eventually(lambda: metadata("a") == b"A" and metadata("b") == b"B", 60, message="the fresh states applied")
        eventually(lambda: fully_committed(config), 60, message="everything committed")
    assert metadata("kept") == b"newer"  # the stale state cancelled nothing and changed nothing
    assert metadata("big") is None
    assert metrics.ITEM_WRITES.labels(table=table, result="stale")._value.get() == stale + 1
    assert metrics.DLQ_EVENTS.labels(reason="rejected_by_dynamodb")._value.get() == rejected + 1
    (letter,) = dead_letter_records(config)
    envelope = json.loads(letter.value)
    assert envelope["reason"] == "rejected_by_dynamodb" and "opponent_id='big'" in envelope["error"]
