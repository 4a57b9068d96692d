"""Which Redis keys to look at: all the rules capture, or a random sample (verify and plan)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from replicator.core.mapping import RuleSet


def captured_keys(client: Any, rules: RuleSet, count: int = 1000) -> Iterator[bytes]:
    """Every key a rule captures: SCAN of each rule glob (every primary of a cluster). SCAN may repeat a key."""
    for glob in rules.globs():
        for key in client.scan_iter(match=glob, count=count):
            if rules.match(key) is not None:
                yield key


def sample_keys(client: Any, rules: RuleSet, n: int) -> list[bytes]:
    """Up to ``n`` distinct random captured keys (RANDOMKEY); fewer when captured keys are rare or few."""
    seen: dict[bytes, None] = {}
    misses = 0
    while len(seen) < n and misses < 10 * n + 100:
        key = client.randomkey()
        if key is None:
            break
        if key in seen or rules.match(key) is None:
            misses += 1
            continue
        seen[key] = None
    return list(seen)
