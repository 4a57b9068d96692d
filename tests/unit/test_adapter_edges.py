"""The adapters' own logic in memory: DynamoDB's error table and the halving of a request refused whole, and the
keyspace subscription's readings (a marker ends one; other replies are skipped; a reading stops at its limit).
The services themselves are exercised by the integration tests (tests/integration/test_batch_writes.py, test_gaps.py,
test_cutover.py)."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from replicator.adapters.dynamodb.errors import Kind, bisect, kind, translate
from replicator.adapters.redis.subscription import KeyspaceSubscription
from replicator.core.errors import SinkError


def _client_error(code: str, message: str = "no") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "Op")


@pytest.mark.parametrize(("codes", "expected"), [
    (("ProvisionedThroughputExceededException", "ProvisionedThroughputExceeded", "ThrottlingException",
      "ThrottlingError", "RequestLimitExceeded"), Kind.THROTTLED),
    (("ValidationException", "ValidationError", "ItemCollectionSizeLimitExceededException",
      "ItemCollectionSizeLimitExceeded"), Kind.POISON),
    (("TransactionConflict",), Kind.CONFLICT),
    (("InternalServerError",), Kind.RESEND),
    (("AccessDeniedException", "ResourceNotFoundException", "SomethingNew"), Kind.RETRYABLE),
])
def test_every_spelling_of_a_code_has_one_kind_and_an_unknown_code_is_retried(codes, expected):
    assert {kind(code) for code in codes} == {expected}


def test_a_request_refused_for_its_data_is_poison_and_anything_else_is_retryable():
    poison = translate(_client_error("ValidationException", "Item size has exceeded"), "table t item k")
    assert isinstance(poison, SinkError) and not poison.retryable
    assert str(poison) == "table t item k: DynamoDB ValidationException: Item size has exceeded"
    assert translate(_client_error("AccessDeniedException"), "t").retryable
    assert translate(ConnectionError("reset"), "t").retryable


def test_a_request_refused_whole_is_halved_until_the_invalid_item_is_alone_and_order_is_kept():
    sent: list[list[int]] = []
    answers: list[tuple[int, str]] = []

    def send(items: list[int]) -> None:
        sent.append(items)
        if 5 in items:
            raise _client_error("ValidationException", "too large")
        answers.extend((i, "ok") for i in items)

    bisect(list(range(8)), send, lambda item, refused: answers.append((item, refused.message)))
    assert answers == [(0, "ok"), (1, "ok"), (2, "ok"), (3, "ok"), (4, "ok"), (5, "too large"), (6, "ok"),
                       (7, "ok")]
    # 8 → 4+4 → 2+2 → 1+1 around the invalid item; the clean halves go whole.
    assert sent == [list(range(8)), [0, 1, 2, 3], [4, 5, 6, 7], [4, 5], [4], [5], [6, 7]]


def test_halving_does_not_swallow_other_errors():
    def send(items: list[int]) -> None:
        raise _client_error("ProvisionedThroughputExceededException")

    with pytest.raises(botocore.exceptions.ClientError):
        bisect([1, 2], send, lambda item, refused: None)


class PubSub:
    """Replies as redis-py's parser gives them: pmessage lists, and others (confirmations, pongs)."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.handled: list[Any] = []

    def parse_response(self, block: bool = False, timeout: float = 0) -> Any:
        return self.replies.pop(0) if self.replies else None

    def handle_message(self, response: Any) -> None:
        self.handled.append(response)


class Client:
    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    def pubsub(self) -> PubSub:
        return self._pubsub


def _notification(key: bytes) -> list[bytes]:
    return [b"pmessage", b"__keyspace@0__:*", b"__keyspace@0__:" + key, b"set"]


def test_a_reading_returns_distinct_keys_in_order_and_a_marker_ends_it():
    pubsub = PubSub([_notification(b"a"), [b"pong", b""], _notification(b"b"), _notification(b"a"),
                     _notification(b"__replicator:mark:1"), _notification(b"c")])
    subscription = KeyspaceSubscription(Client(pubsub), 0, [b"*"], b"__replicator:mark:", "n")  # type: ignore[arg-type]
    first = subscription.next_keys(0.1, limit=100)
    assert list(first.keys) == [b"a", b"b"] and first.marker == b"__replicator:mark:1"
    assert pubsub.handled == [[b"pong", b""]]  # redis-py keeps its state from the replies it handles
    second = subscription.next_keys(0.1, limit=100)
    assert list(second.keys) == [b"c"] and second.marker is None
    assert not subscription.next_keys(0.1, limit=100).keys


def test_a_reading_stops_at_its_limit_and_the_rest_waits_for_the_next():
    pubsub = PubSub([_notification(b"k%d" % i) for i in range(5)])
    subscription = KeyspaceSubscription(Client(pubsub), 0, [b"*"], b"__replicator:mark:", "n")  # type: ignore[arg-type]
    assert list(subscription.next_keys(0.1, limit=3).keys) == [b"k0", b"k1", b"k2"]
    assert list(subscription.next_keys(0.1, limit=3).keys) == [b"k3", b"k4"]
