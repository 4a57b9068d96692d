"""Finding deletions that happened during a gap, once it is sound to look.

A re-snapshot SCANs what exists, so a key deleted while nobody listened is invisible to it. Reconciling goes the
other way: every Redis key that DynamoDB still holds live data for is read again through the same atomic reader.
A key that is gone reads as a DELETE with a fresh version; one that was re-created reads as its current state. Either
way the event goes through Kafka like any other, so ordering and versions stay intact.

**When** to read DynamoDB is the whole difficulty (DBLog's watermark idea). DynamoDB lags Redis by whatever the
appliers have not applied yet; a key whose only UPSERT is still in the backlog does not look live, so a reconcile
that scanned DynamoDB right after the gap would never re-read it, and that UPSERT, applied later, would leave a key
that Redis no longer has. So at a gap the listener (already subscribed again, its producer flushed) notes the topic's
end offsets, the *watermark*, and reconciles only once the applier group has committed past it on every partition.
Why that is complete, for a key K deleted (or expired, flushed...) while no notification could announce it:

- every event for K published before the watermark is in DynamoDB when the scan starts (offsets are committed
  only after DynamoDB has the data), so if any of them made K live, the scan finds K, reads Redis, and publishes a
  DELETE whose version (Redis TIME, read after the deletion) is newer than all of them;
- every event for K published after the watermark was read after the listener subscribed again: it reads the
  state after the deletion (a DELETE, or K's new state if it was re-created, which notifications then follow);
- events still in the producer's queue at the gap were read before it: the producer is flushed before the
  watermark is noted, so they are below it;
- a second gap while one waits notes a later watermark and starts over (the later one covers both);
- a listener killed while it waits loses nothing: its restart is itself a gap with a later watermark.

What this does not cover is another process's read from before the gap being published after the watermark (a
snapshot or repair running during a listener restart, its SCAN page read just before the listener subscribed): its
window is one page's read-to-publish time. Run snapshots with a listener subscribed, as the README says.

Source keys are recovered without guessing: collection keys are the live head versions in the state table, and
single-item rules are reversible because every variable of their pattern is in the item key (checked at config load).
DynamoDB is read through the one store (:meth:`DynamoStore.live_source_keys`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from replicator import metrics
from replicator.adapters.dynamodb.store import DynamoStore
from replicator.core.errors import ReplicatorError
from replicator.core.watermark import GroupProgress, Watermark

log = logging.getLogger(__name__)

#: Pending reconciles are kept in the state table under this prefix, one item per node, for ``replicator status``.
PENDING_PREFIX = b"\x00reconcile\x00"


class PendingReconciles:
    """Reconciles waiting for their watermark, kept in the state table so that ``replicator status`` can show them."""

    def __init__(self, client: Any, state_table: str) -> None:
        self._store = DynamoStore(client, state_table)

    def save(self, node: str, watermark: Watermark, reason: str) -> None:
        self._store.put(self._store.state_table, {
            "k": {"B": PENDING_PREFIX + node.encode()}, "watermark": {"S": watermark.to_json()},
            "reason": {"S": reason}}, "recording a pending reconcile")

    def clear(self, node: str) -> None:
        self._store.delete(self._store.state_table, {"k": {"B": PENDING_PREFIX + node.encode()}},
                           "clearing a pending reconcile")

    def list(self) -> list[tuple[str, str, Watermark]]:
        """(node, gap reason, watermark) of every pending reconcile."""
        found = []
        for item in self._store.items("scan", "reading the state table", TableName=self._store.state_table,
                                      FilterExpression="begins_with(k, :p)",
                                      ExpressionAttributeValues={":p": {"B": PENDING_PREFIX}}, ConsistentRead=True):
            node = bytes(item["k"]["B"])[len(PENDING_PREFIX):].decode("utf-8", "replace")
            found.append((node, item["reason"]["S"], Watermark.from_json(item["watermark"]["S"])))
        return sorted(found, key=lambda entry: entry[0])


class Reconciler:
    """What a listener needs to heal a gap's deletions: the keys DynamoDB holds live, the applier group's progress
    (to wait for the watermark) and where pending reconciles are shown. ``scoped`` narrows the keys to one node's."""

    def __init__(self, live_keys: Callable[[], Iterable[bytes]], progress: GroupProgress | None,
                 pending: PendingReconciles | None = None, poll_s: float = 1.0, report_every_s: float = 30.0) -> None:
        self.live_keys = live_keys
        self._progress = progress
        self._pending = pending
        self._poll_s = poll_s
        self._report_every_s = report_every_s

    def scoped(self, keep: Callable[[bytes], bool]) -> Reconciler:
        source = self.live_keys
        return Reconciler(lambda: (k for k in source() if keep(k)), self._progress, self._pending, self._poll_s,
                          self._report_every_s)

    def note(self, node: str, reason: str) -> Watermark:
        """The watermark of a gap (call it after subscribing again and flushing the producer)."""
        watermark = Watermark(self._progress.end() if self._progress is not None else {})
        self._show(lambda pending: pending.save(node, watermark, reason))
        metrics.RECONCILE_PENDING.labels(node=node).set(1)
        return watermark

    def wait(self, node: str, watermark: Watermark, cancelled: Callable[[], bool],
             pause: Callable[[float], bool]) -> bool:
        """Block until the applier group has committed past ``watermark``. False if cancelled first.

        ``pause(seconds)`` waits and returns True when the wait should end early (stop, or a newer gap).
        """
        if self._progress is None:
            return not cancelled()
        reported = 0.0
        while not cancelled():
            try:
                committed = self._progress.committed()
            except ReplicatorError as exc:  # Kafka away for a moment: keep waiting, the watermark stands
                if not exc.retryable:
                    raise
                log.debug("cannot read the group's offsets", extra={"kv": {"node": node, "error": str(exc)}})
                if pause(self._poll_s):
                    break
                continue
            remaining = watermark.remaining(committed)
            metrics.RECONCILE_WAITING_EVENTS.labels(node=node).set(remaining)
            if remaining == 0:
                return True
            if time.monotonic() - reported >= self._report_every_s:
                reported = time.monotonic()
                log.info("reconcile pending: waiting for the appliers to commit past the gap's watermark",
                         extra={"kv": {"node": node, "events_to_commit": remaining,
                                       "waiting_s": round(time.time() - watermark.noted_at, 1)}})
            if pause(self._poll_s):
                break
        return False

    def done(self, node: str) -> None:
        metrics.RECONCILE_PENDING.labels(node=node).set(0)
        metrics.RECONCILE_WAITING_EVENTS.labels(node=node).set(0)
        self._show(lambda pending: pending.clear(node))

    def _show(self, update: Callable[[PendingReconciles], object]) -> None:
        """Keep ``replicator status`` informed; a DynamoDB hiccup here must not hold up healing."""
        if self._pending is None:
            return
        try:
            update(self._pending)
        except Exception as exc:
            log.warning("cannot record the pending reconcile for replicator status", extra={"kv": {
                "error": f"{type(exc).__name__}: {exc}"[:300]}})
