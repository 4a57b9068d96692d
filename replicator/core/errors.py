"""One error tree for the whole replicator (httpx style).

Every error message is one line that names the problem, where it happened (config field, key, topic[partition]@offset)
and, where there is one, the fix. Adapters translate client-library exceptions into these at the boundary.
"""

from __future__ import annotations


class ReplicatorError(Exception):
    """Root of every error the replicator raises on purpose.

    ``retryable``: the cause is outside the process and may go away (a service not answering yet). Long-running
    commands keep retrying those at start, reporting not-ready, instead of crash-looping.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConfigError(ReplicatorError):
    """The configuration is missing a value or holds a malformed one. Not retryable: fix the file or the env var."""


class SourceError(ReplicatorError):
    """Redis cannot be read as configured (unreachable, missing notification flags, unsupported setup)."""


class BrokerError(ReplicatorError):
    """Kafka cannot be used as configured (unreachable, missing capability, topic problem)."""


class SerializationError(ReplicatorError):
    """A record cannot be encoded or decoded (bad Avro, unknown schema fingerprint). The record is poison."""


class MappingError(ReplicatorError):
    """An event cannot be turned into DynamoDB items (value unfit for the attribute type). The event is poison."""


class SinkError(ReplicatorError):
    """DynamoDB rejected a write.

    ``retryable`` errors (throttling, 5xx, unreachable endpoint) are retried without committing offsets past them;
    the others make the event poison.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message, retryable=retryable)


class LocalStackError(ReplicatorError):
    """The embedded local stack (redis-server, Kafka, DynamoDB Local) could not be installed or started."""
