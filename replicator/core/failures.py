"""The one place that decides what a failure during apply means.

Infrastructure failures (a service unreachable, throttled, refusing our credentials, a missing table) are outside
the data: the batch is retried with backoff and nothing is committed meanwhile. Every other failure while one key's
records are decoded, assembled, matched, loaded, planned, encoded or written is tied to that key's data: its records
go to the dead-letter topic with the reason and the partition moves on. A bug that only some data triggers is
poison too: the pipeline never stops on data.
"""

from __future__ import annotations

from replicator.core.errors import MappingError, ReplicatorError, SerializationError, SinkError


def is_retryable(exc: BaseException) -> bool:
    """Infrastructure (retry the batch) rather than data (dead-letter the key)."""
    return isinstance(exc, ReplicatorError) and exc.retryable


def reason(exc: BaseException, stage: str) -> str:
    """The dead-letter reason (a low-cardinality metric label): what kind of data problem, else where it happened."""
    if isinstance(exc, SerializationError):
        return "undecodable"
    if isinstance(exc, MappingError):
        return "unmappable"
    if isinstance(exc, SinkError):
        return "rejected_by_dynamodb"
    return f"failed_{stage}"


def describe(exc: BaseException) -> str:
    """One line for the dead letter: our own errors say what and where; anything else also names its type."""
    if isinstance(exc, ReplicatorError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

