"""The sink's result handling in memory: what each BatchExecuteStatement answer becomes (applied, stale, poison, the
other statement kind next round, the single-item path, a retryable error). The answers are scripted: DynamoDB Local
cannot be made to throttle one statement of a call, nor to race another writer between two rounds.
tests/integration/test_batch_writes.py checks the statements themselves against DynamoDB Local."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from replicator import metrics, retry
from replicator.adapters.dynamodb.store import DynamoWriter
from replicator.apply.sink import APPLIED, STALE, DynamoSink, Head, Result
from replicator.core.config import TombstoneConfig
from replicator.core.errors import SinkError
from replicator.core.mapping import ItemWrite
from replicator.core.values import B, N, S
from tests.unit.rules import messaging

RULES = messaging()
MIRROR = RULES.mirror
OK: dict[str, Any] = {}


def _missing() -> dict[str, Any]:
    return {"Error": {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}}


def _newer(version: int = 99, **extra: Any) -> dict[str, Any]:
    return {"Error": {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed",
                      "Item": {"_v_mirror": {"N": str(version)}, **extra}}}


def _error(code: str) -> dict[str, Any]:
    return {"Error": {"Code": code, "Message": f"{code} for this one"}}


class Client:
    """Answers each BatchExecuteStatement with ``script(statement)`` per statement; records every call."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.calls: list[list[str]] = []
        self.update_items: list[dict[str, Any]] = []

    def batch_execute_statement(self, Statements: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([s["Statement"].split()[0] for s in Statements])
        return {"Responses": [self.script(s) for s in Statements]}

    def update_item(self, **request: Any) -> dict[str, Any]:
        self.update_items.append(request)
        return {}


def _sink(script: Any) -> tuple[DynamoSink, Client]:
    client = Client(script)
    return DynamoSink(DynamoWriter(client, RULES, TombstoneConfig(), "state"), "batch"), client


def _write(name: bytes, version: int = 5, exists: bool | None = None) -> ItemWrite:
    return ItemWrite(MIRROR.table, (("key", B(name)),), MIRROR, version,
                     (("type", S("string")), ("value", B(b"v"))), exists=exists)


def _key(statement: dict[str, Any]) -> bytes:
    """The Redis key a statement writes (the B parameter that is not the value)."""
    return next(p["B"] for p in statement["Parameters"] if "B" in p and p["B"] != b"v")


def test_known_items_are_updated_and_unknown_ones_follow_what_the_table_last_found():
    def script(s: dict[str, Any]) -> dict[str, Any]:  # items named new… do not exist
        return _missing() if s["Statement"].startswith("UPDATE") and _key(s).startswith(b"new") else OK

    sink, client = _sink(script)
    assert sink.write([_write(b"a", exists=True), _write(b"b", exists=False)]) == [APPLIED, APPLIED]
    assert client.calls == [["UPDATE", "INSERT"]]
    client.calls.clear()
    sink.write([_write(b"a"), _write(b"b")])  # written before: known to exist now
    assert client.calls == [["UPDATE", "UPDATE"]]
    for i in range(30):  # a backfill: the unknown items it sends turn out new
        sink.write([_write(b"new%d" % i)])
    client.calls.clear()
    sink.write([_write(b"unknown")])
    assert client.calls == [["INSERT"]]


def test_an_update_of_a_missing_item_is_inserted_next_round_and_a_duplicate_insert_is_updated():
    answers = {"UPDATE": {b"gone": _missing()}, "INSERT": {b"there": _error("DuplicateItem")}}
    sink, client = _sink(lambda s: answers[s["Statement"].split()[0]].pop(_key(s), OK))
    results = sink.write([_write(b"gone", exists=True), _write(b"there", exists=False)])
    assert results == [APPLIED, APPLIED]
    assert client.calls == [["UPDATE", "INSERT"], ["INSERT", "UPDATE"]]


def test_a_newer_stored_version_is_stale_in_one_round_trip():
    sink, client = _sink(lambda s: _newer())
    assert sink.write([_write(b"a", exists=True)]) == [STALE]
    assert len(client.calls) == 1


def test_an_item_another_writer_keeps_creating_and_deleting_takes_the_single_item_path():
    sink, client = _sink(lambda s: _missing() if s["Statement"].startswith("UPDATE") else _error("DuplicateItem"))
    assert sink.write([_write(b"racy", exists=True)]) == [APPLIED]
    assert len(client.calls) == 3 and len(client.update_items) == 1  # UpdateItem creates or updates atomically


def test_a_mirror_value_replacing_one_in_parts_takes_the_single_item_path_which_cleans_the_parts():
    sink, client = _sink(lambda s: _newer(version=3, parts={"N": "4"}))
    client.query = lambda **_: {"Items": []}  # type: ignore[attr-defined]
    client.get_paginator = lambda _op: type("P", (), {"paginate": lambda self, **_: [{"Items": []}]})()  # type: ignore
    assert sink.write([_write(b"was-big", version=5, exists=True)]) == [APPLIED]
    assert client.update_items[0]["ReturnValues"] == "UPDATED_OLD"


@pytest.mark.parametrize("code", ["ValidationError", "ItemCollectionSizeLimitExceeded"])
def test_a_statement_dynamodb_rejects_is_poison_with_its_reason_and_the_others_apply(code):
    sink, _client = _sink(lambda s: _error(code) if _key(s) == b"bad" else OK)
    results = sink.write([_write(b"ok1", exists=True), _write(b"bad", exists=True), _write(b"ok2", exists=True)])
    assert [r.status for r in results] == [Result.APPLIED, Result.POISON, Result.APPLIED]
    assert isinstance(results[1].error, SinkError) and not results[1].error.retryable
    assert code in str(results[1].error)


def test_a_call_refused_whole_for_one_statement_is_halved_until_that_statement_is_alone():
    client = Client(lambda s: OK)
    real = client.batch_execute_statement

    def refuse_big(Statements: list[dict[str, Any]]) -> dict[str, Any]:
        import botocore.exceptions

        if any(_key(s) == b"huge" for s in Statements):
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "ValidationException", "Message": "Item size has exceeded the maximum"}},
                "BatchExecuteStatement")
        return real(Statements)

    client.batch_execute_statement = refuse_big  # type: ignore[method-assign]
    sink = DynamoSink(DynamoWriter(client, RULES, TombstoneConfig(), "state"), "batch")
    writes = [_write(b"k%d" % i, exists=True) for i in range(7)] + [_write(b"huge", exists=True)]
    results = sink.write(writes)
    assert [r.status for r in results] == [Result.APPLIED] * 7 + [Result.POISON]
    assert "maximum" in str(results[-1].error)


def test_throttled_statements_are_sent_again_and_counted(monkeypatch):
    monkeypatch.setattr("replicator.retry.THROTTLED_STATEMENTS", replace(retry.THROTTLED_STATEMENTS, base_s=0.0001))
    throttled = {b"t1": 2, b"t2": 1}

    def script(s: dict[str, Any]) -> dict[str, Any]:
        left = throttled.get(_key(s), 0)
        if left:
            throttled[_key(s)] = left - 1
            return _error("ThrottlingError")
        return OK

    before = metrics.DYNAMODB_THROTTLES._value.get()
    sink, client = _sink(script)
    assert sink.write([_write(b"t1", exists=True), _write(b"t2", exists=True), _write(b"x", exists=True)]) == \
        [APPLIED] * 3
    assert [len(c) for c in client.calls] == [3, 2, 1]  # only the throttled ones again
    assert metrics.DYNAMODB_THROTTLES._value.get() == before + 3


def test_statements_throttled_round_after_round_raise_one_retryable_error(monkeypatch):
    monkeypatch.setattr("replicator.retry.THROTTLED_STATEMENTS", replace(retry.THROTTLED_STATEMENTS, base_s=0.0001))
    sink, _client = _sink(lambda s: _error("ProvisionedThroughputExceeded"))
    with pytest.raises(SinkError) as raised:
        sink.write([_write(b"a", exists=True)])
    assert raised.value.retryable


@pytest.mark.parametrize("code", ["AccessDenied", "ResourceNotFound", "SomethingNew"])
def test_errors_about_the_service_not_the_data_raise_a_retryable_error(code):
    sink, _client = _sink(lambda s: _error(code))
    with pytest.raises(SinkError) as raised:
        sink.write([_write(b"a", exists=True)])
    assert raised.value.retryable and code in str(raised.value)


def test_a_call_holds_at_most_25_statements_and_names_an_item_once():
    sink, client = _sink(lambda s: OK)
    writes = [_write(b"k%d" % i, exists=True) for i in range(30)] + [_write(b"k0", version=6, exists=True)]
    assert sink.write(writes) == [APPLIED] * 31
    assert sorted(len(c) for c in client.calls) == [1, 5, 25]


def test_heads_are_batched_into_the_state_table_as_updates_or_inserts():
    statements: list[str] = []

    def script(s: dict[str, Any]) -> dict[str, Any]:
        statements.append(s["Statement"])
        return OK

    sink, client = _sink(script)
    rule = RULES.match(b"opponents:o1")[0]  # type: ignore[index]
    heads = [Head(rule, b"opponents:o1", 5, deleted=False, exists=True),
             Head(rule, b"opponents:o2", 5, deleted=True, exists=False)]
    assert sink.put_heads(heads) == [APPLIED, APPLIED]
    assert len(client.calls) == 1
    assert statements[0].startswith('UPDATE "state"') and statements[1].startswith('INSERT INTO "state"')


def test_head_versions_are_read_100_per_request_and_a_refused_group_is_read_key_by_key():
    import botocore.exceptions

    rule = RULES.match(b"opponents:o1")[0]  # type: ignore[index]
    client = Client(lambda s: OK)
    gets: list[int] = []

    def batch_get_item(RequestItems: dict[str, Any]) -> dict[str, Any]:
        keys = RequestItems["state"]["Keys"]
        gets.append(len(keys))
        if any(k["k"]["B"].endswith(b"too-long") for k in keys):
            raise botocore.exceptions.ClientError({"Error": {"Code": "ValidationException", "Message": "key too long"}},
                                                  "BatchGetItem")
        return {"Responses": {"state": [{"k": k["k"], "v": {"N": "7"}} for k in keys]}}

    def get_item(Key: dict[str, Any], **_: Any) -> dict[str, Any]:
        if Key["k"]["B"].endswith(b"too-long"):
            raise botocore.exceptions.ClientError({"Error": {"Code": "ValidationException", "Message": "key too long"}},
                                                  "GetItem")
        return {"Item": {"k": Key["k"], "v": {"N": "7"}}}

    client.batch_get_item = batch_get_item  # type: ignore[attr-defined]
    client.get_item = get_item  # type: ignore[attr-defined]
    client.query = lambda **_: {"Items": []}  # type: ignore[attr-defined]
    client.get_paginator = lambda _op: type("P", (), {"paginate": lambda self, **_: [{"Items": []}]})()  # type: ignore
    sink = DynamoSink(DynamoWriter(client, RULES, TombstoneConfig(), "state"), "batch")
    keys = [(rule, f"opponents:o{i}".encode(), {"owner": f"o{i}".encode()}) for i in range(150)]
    keys[120] = (rule, b"opponents:too-long", {"owner": b"too-long"})
    states = sink.load_states(keys)
    assert gets == [100, 50]
    assert [s.version for i, s in enumerate(states) if i != 120] == [7] * 149  # type: ignore[union-attr]
    assert isinstance(states[120], SinkError) and not states[120].retryable


def test_writes_whose_kind_was_known_and_tombstone_ttls_do_not_sway_the_guess_for_unknown_items():
    rule = RULES.match(b"opponents:o1")[0]  # type: ignore[index]

    one: Any = (("timestamp", N("1")),)

    def item(i: int, attributes: Any = one, exists: bool | None = None) -> ItemWrite:
        key = (("opponent_id", S(f"p{i}")), ("owner_id", S("o1")))
        return ItemWrite(rule.table, key, rule, 5, attributes, exists=exists)

    def script(s: dict[str, Any]) -> dict[str, Any]:  # only p1000… exist
        exists = any(p.get("S", "").startswith("p1") for p in s["Parameters"])
        return _missing() if s["Statement"].startswith("UPDATE") and not exists else OK

    sink, client = _sink(script)
    sink.write([item(i) for i in range(20, 60)])  # a backfill: new items
    sink.write([item(1000 + i, None, exists=True) for i in range(200)])  # tombstones of live items, their TTLs
    client.calls.clear()
    sink.write([item(5000)])
    assert client.calls == [["INSERT"]]


def test_a_head_that_takes_the_single_item_path_and_is_refused_there_is_poison_not_a_crash():
    import botocore.exceptions

    sink, client = _sink(lambda s: _missing() if s["Statement"].startswith("UPDATE") else _error("DuplicateItem"))

    def refuse(**_request: Any) -> dict[str, Any]:
        raise botocore.exceptions.ClientError({"Error": {"Code": "ValidationException", "Message": "key too long"}},
                                              "UpdateItem")

    client.update_item = refuse  # type: ignore[method-assign]
    rule = RULES.match(b"opponents:o1")[0]  # type: ignore[index]
    (result,) = sink.put_heads([Head(rule, b"opponents:o1", 5, deleted=False, exists=True)])
    assert result.status is Result.POISON and "key too long" in str(result.error)


def test_a_fresh_sink_learns_from_one_call_before_guessing_a_whole_first_batch():
    sink, client = _sink(lambda s: _missing() if s["Statement"].startswith("UPDATE") else OK)  # all new
    assert sink.write([_write(b"n%d" % i) for i in range(200)]) == [APPLIED] * 200
    statements = [kind for call in client.calls for kind in call]
    assert statements.count("UPDATE") == 25  # the first call's worth guessed wrong, not 200
    assert statements.count("INSERT") == 200


def test_a_shared_item_tombstone_that_took_the_single_item_path_gets_its_ttl_once():
    rule = RULES.match(b"opponents:o1")[0]  # type: ignore[index]
    tombstone = ItemWrite(rule.table, (("opponent_id", S("p1")), ("owner_id", S("o1"))), rule, 5, None,
                          exists=True)
    sink, client = _sink(lambda s: _missing() if s["Statement"].startswith("UPDATE") else _error("DuplicateItem"))
    assert sink.write([tombstone]) == [APPLIED]
    assert len(client.calls) == 3  # UPDATE, INSERT, UPDATE: no TTL statement after the single-item path
    assert [r["UpdateExpression"].startswith("SET #ttl") for r in client.update_items] == [False, True]
