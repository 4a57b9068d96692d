"""The DynamoDB store's reads without DynamoDB: pagination, error translation, live items of a key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

from replicator.adapters.dynamodb.store import DynamoStore
from replicator.core.errors import SinkError
from replicator.core.values import N, S
from tests.unit.rules import messaging


class Paginated:
    """A client whose paginators serve the given pages lazily and note which were requested."""

    def __init__(self, pages: list[list[dict[str, Any]]], fail_at: int | None = None) -> None:
        self.pages, self.fail_at = pages, fail_at
        self.requested: list[int] = []
        self.paginators: list[str] = []
        self.params: list[dict[str, Any]] = []

    def get_paginator(self, operation: str) -> Any:
        self.paginators.append(operation)
        client = self

        class Paginator:
            def paginate(self, **params: Any) -> Iterator[dict[str, Any]]:
                client.params.append(params)
                for i, items in enumerate(client.pages):
                    client.requested.append(i)
                    if i == client.fail_at:
                        raise botocore.exceptions.ClientError(
                            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                            "Query")
                    yield {"Items": items}

        return Paginator()


def test_pages_are_requested_only_as_they_are_consumed_and_the_paginator_is_built_once():
    client = Paginated([[{"n": 1}], [{"n": 2}], [{"n": 3}]])
    store = DynamoStore(client)
    assert next(store.pages("query", "here", TableName="t")) == [{"n": 1}]
    assert client.requested == [0]
    assert [i["n"] for i in store.items("query", "here", TableName="t")] == [1, 2, 3]
    assert client.paginators == ["query"] and client.params[-1] == {"TableName": "t"}


def test_a_failed_page_raises_a_sink_error_naming_the_read():
    store = DynamoStore(Paginated([[{"n": 1}], [{"n": 2}]], fail_at=1))
    with pytest.raises(SinkError) as raised:
        list(store.items("scan", "live keys of t", TableName="t"))
    assert raised.value.retryable and "live keys of t" in str(raised.value)


def test_live_items_keep_only_the_keys_items_and_their_data():
    rules = messaging()
    rule, variables = rules.match(b"opponents:alice")  # type: ignore[misc]
    mine = {"owner_id": {"S": "alice"}, "opponent_id": {"S": "bob"}, "timestamp": {"N": "5"}}
    other = {"owner_id": {"S": "alice:x"}, "opponent_id": {"S": "carol"}, "timestamp": {"N": "6"}}
    store = DynamoStore(Paginated([[mine], [other]]))
    assert store.live_items(rule, b"opponents:alice", variables) == {
        (("opponent_id", S("bob")), ("owner_id", S("alice"))): (("timestamp", N("5")),)}
