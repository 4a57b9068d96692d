"""Every DynamoDB error code the replicator acts on, in one table, and the translation of a failed request.

DynamoDB spells one failure three ways: a request's exception (``ProvisionedThroughputExceededException``), a
BatchExecuteStatement statement's error (``ProvisionedThroughputExceeded``) and a cancelled transaction's reason
(``ProvisionedThroughputExceeded``, ``ThrottlingError``). The table lists each spelling once with what it means
for a write; callers ask :func:`kind` and never compare codes of their own (``ConditionalCheckFailed`` aside: a
refused condition is the version check doing its job, and what it means depends on the statement).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import TypeVar

import botocore.exceptions

from replicator.core.errors import ReplicatorError, SinkError

T = TypeVar("T")


class Kind(enum.Enum):
    #: Throttled: sent again after a backoff, and counted (replicator_dynamodb_throttles_total).
    THROTTLED = "throttled"
    #: Another transaction held the item: sent again (a compare-and-set reads again first).
    CONFLICT = "conflict"
    #: The service failed this one statement: sent again after a backoff.
    RESEND = "resend"
    #: The item's own fault (too big, an invalid value): retrying cannot help, the event is dead-lettered.
    POISON = "poison"
    #: Anything else (5xx, access denied, a missing table, a code not listed): about the service, not the data;
    #: the whole request or batch is retried.
    RETRYABLE = "retryable"


#: code → kind, in every spelling DynamoDB uses (exception, statement error, cancellation reason).
CODES: dict[str, Kind] = {
    "ProvisionedThroughputExceededException": Kind.THROTTLED,
    "ProvisionedThroughputExceeded": Kind.THROTTLED,
    "ThrottlingException": Kind.THROTTLED,
    "ThrottlingError": Kind.THROTTLED,
    "RequestLimitExceeded": Kind.THROTTLED,
    "TransactionConflict": Kind.CONFLICT,
    "InternalServerError": Kind.RESEND,
    "ValidationException": Kind.POISON,
    "ValidationError": Kind.POISON,
    "ItemCollectionSizeLimitExceededException": Kind.POISON,
    "ItemCollectionSizeLimitExceeded": Kind.POISON,
}

#: A refused version check (statement error and cancellation reason spelling).
CONDITION_FAILED = "ConditionalCheckFailed"
#: Why a PartiQL SELECT may be refused where a Query is not (a policy without PartiQL, an emulator without it):
#: the reader falls back to Queries instead of failing.
SELECT_REFUSED = {"AccessDeniedException", "ValidationException", "UnknownOperationException"}


def kind(code: str) -> Kind:
    return CODES.get(code, Kind.RETRYABLE)


def retried_cancellation(code: str) -> bool:
    """A cancelled transaction's reason after which the whole transaction is tried again: throttling, or a
    conflict with another writer."""
    return kind(code) in (Kind.THROTTLED, Kind.CONFLICT)


def exception_name(code: str) -> str:
    """A poison statement's or cancellation's code as the exception a request would raise (what operators search)."""
    return _EXCEPTION_NAMES.get(code, code)


_EXCEPTION_NAMES = {"ValidationError": "ValidationException",
                    "ItemCollectionSizeLimitExceeded": "ItemCollectionSizeLimitExceededException"}


def code_of(exc: BaseException) -> str | None:
    """The DynamoDB error code of a request's exception; None when it is not an answer from DynamoDB."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return None


def translate(exc: Exception, what: str) -> ReplicatorError:
    """A failure talking to DynamoDB → SinkError naming the table and key: poison when DynamoDB rejected the data,
    retryable otherwise. Our own errors (a key that cannot be rendered, say) pass through unchanged."""
    if isinstance(exc, ReplicatorError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", str(exc))
        return SinkError(f"{what}: DynamoDB {code}: {message}", retryable=kind(code) is not Kind.POISON)
    if isinstance(exc, (botocore.exceptions.BotoCoreError, ConnectionError, TimeoutError)):
        return SinkError(f"{what}: DynamoDB unreachable: {exc}", retryable=True)
    return SinkError(f"{what}: {type(exc).__name__}: {exc}", retryable=False)


class Invalid(Exception):
    """DynamoDB refused a whole request as invalid (ValidationException) without naming the item at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def invalid(exc: BaseException) -> Invalid | None:
    """``exc`` as :class:`Invalid` when it is a ValidationException, else None."""
    if code_of(exc) == "ValidationException":
        assert isinstance(exc, botocore.exceptions.ClientError)
        return Invalid(exc.response.get("Error", {}).get("Message", str(exc)))
    return None


def bisect(items: Sequence[T], send: Callable[[list[T]], None],
           alone: Callable[[T, Invalid], None] | None = None) -> None:
    """Send ``items`` in one request; while DynamoDB refuses a request whole as invalid (one statement too large,
    say) and does not say which item, send each half on its own, until the invalid item is alone: ``alone`` gets
    it with the refusal (without ``alone``, the refusal of one item is raised). Written once for
    BatchExecuteStatement and TransactWriteItems."""
    items = list(items)
    try:
        send(items)
    except botocore.exceptions.ClientError as exc:
        refused = invalid(exc)
        if refused is None:
            raise
        if len(items) == 1:
            if alone is None:
                raise
            alone(items[0], refused)
            return
        half = len(items) // 2
        bisect(items[:half], send, alone)
        bisect(items[half:], send, alone)
