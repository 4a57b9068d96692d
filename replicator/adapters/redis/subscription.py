"""A node's keyspace notifications, as the keys they announce.

The listener asks :meth:`KeyspaceSubscription.next_keys` for what was announced; how redis-py's pub/sub is driven
(and the fast path past its message dicts) stays here. A cutover marker (``__replicator:mark:*``, see
:mod:`replicator.core.cutover`) is announced on its own pattern and ends a reading: every key announced before it
is returned with it, so the listener can publish them before acknowledging the marker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from replicator.adapters.redis.client import Node, NoPermission
from replicator.core.errors import SourceError

#: How long a PSUBSCRIBE may go unconfirmed.
_CONFIRM_S = 10.0


def keyspace_prefix(db: int) -> bytes:
    return b"__keyspace@%d__:" % db


def keyspace_patterns(db: int, globs: list[bytes]) -> list[bytes]:
    """The keyspace channels announcing changes of keys matching ``globs`` in ``db``."""
    return [keyspace_prefix(db) + glob for glob in globs]


@dataclass
class Announced:
    """What one reading found, in order: distinct keys, then possibly a marker that ended the reading."""

    keys: dict[bytes, None] = field(default_factory=dict)  # an insertion-ordered set
    marker: bytes | None = None


class KeyspaceSubscription:
    """PSUBSCRIBE to a db's keyspace channels for some globs, and to the cutover markers apart from them. Not
    thread-safe; one per subscription (:meth:`close` it; a lost connection raises one of ``UNAVAILABLE``)."""

    def __init__(self, client: Node, db: int, globs: list[bytes], marker_prefix: bytes, node: str) -> None:
        self._prefix = keyspace_prefix(db)
        self._patterns = keyspace_patterns(db, globs)
        self._marker = self._prefix + marker_prefix
        self._node = node
        self._pubsub = client.pubsub()

    @property
    def patterns(self) -> list[bytes]:
        return list(self._patterns)

    @property
    def marker_pattern(self) -> bytes:
        return self._marker + b"*"

    def subscribe(self) -> None:
        """Subscribe the rules' patterns and wait until Redis confirmed them (SourceError after 10 s)."""
        self._confirmed(self._patterns)

    def subscribe_markers(self) -> NoPermission | None:
        """Subscribe the marker pattern; the refusal when the user's ACL does not allow it (replication goes on
        without it), else None."""
        try:
            self._confirmed([self.marker_pattern])
        except NoPermission as exc:
            self._pubsub.punsubscribe(self.marker_pattern)  # else redis-py would subscribe it again after a reconnect
            return exc
        return None

    def next_keys(self, timeout: float, limit: int) -> Announced:
        """The keys announced within ``timeout`` (waiting only for the first), then those already received, up to
        ``limit`` distinct keys or a marker."""
        announced = Announced()
        prefix = len(self._prefix)
        channel = self._next_channel(timeout)
        while channel is not None:
            if channel.startswith(self._marker):
                announced.marker = channel[prefix:]
                break
            if channel:
                announced.keys[channel[prefix:]] = None
                if len(announced.keys) >= limit:
                    break
            channel = self._next_channel(0)
        return announced

    def close(self) -> None:
        self._pubsub.close()

    def _confirmed(self, patterns: list[bytes]) -> None:
        """PSUBSCRIBE ``patterns`` and wait until Redis confirmed every one (or refused them)."""
        self._pubsub.psubscribe(*patterns)
        confirmed = 0
        deadline = time.monotonic() + _CONFIRM_S
        while confirmed < len(patterns):
            message = self._pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "psubscribe":
                confirmed += 1
            if time.monotonic() > deadline:
                raise SourceError(f"Redis {self._node} did not confirm the keyspace subscription within "
                                  f"{_CONFIRM_S:.0f}s")

    def _next_channel(self, timeout: float) -> bytes | None:
        """The channel of the next keyspace notification; b"" for another reply; None when none came in time.

        Not ``get_message``: it builds a dict and records telemetry for every message, which costs more than reading
        the notification. Replies other than notifications (subscription confirmations, health-check pongs) still go
        through redis-py's handling, which keeps its subscription state.
        """
        response = self._pubsub.parse_response(block=False, timeout=timeout)
        if response is None:
            return None
        if isinstance(response, list) and response[0] == b"pmessage":  # hiredis gives a list subclass
            return response[2]
        self._pubsub.handle_message(response)
        return b""
