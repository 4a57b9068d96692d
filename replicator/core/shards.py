"""Splitting the capture of one Redis among several listeners (or snapshot loaders) by owner.

One listener reads and publishes a few tens of thousands of events/s (see the README's benchmarks); a primary
taking more key changes than that is captured by ``capture.shards`` listeners, each started with its own
``capture.shard``. Every listener receives every notification (cheap) but reads and publishes only the keys whose
owner falls in its shard. Sharding by owner, not by key, keeps all of an owner's events in one listener, so they
reach their Kafka partition in the order Redis made them, as with a single listener.
"""

from __future__ import annotations

import zlib


def in_shard(owner: bytes, shard: int, shards: int) -> bool:
    """Whether ``owner`` belongs to ``shard`` of ``shards``: stable across processes, releases and restarts."""
    return shards == 1 or zlib.crc32(owner) % shards == shard
