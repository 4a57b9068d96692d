"""What differs between a Redis key and DynamoDB, as pure functions (the verifier does the reading).

Both sides are brought into the mapping's model first: the Redis state becomes the items the rules *would* write
(:func:`replicator.core.mapping.desired_items`), DynamoDB's become the items that hold the rule's live data. Comparing
those, not raw values, makes "equal" mean exactly what the applier promises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from replicator.core.values import Attrs, ItemKey, N, TypedValue

#: Expiry instants are derived from TIME + PTTL on each read: two reads of an unchanged key may differ by a ms.
TTL_TOLERANCE_MS = 2


class DriftKind(str, Enum):
    MISSING = "missing_in_dynamodb"
    EXTRA = "extra_in_dynamodb"
    VALUE = "value_differs"
    TTL = "ttl_differs"


@dataclass(frozen=True)
class Difference:
    kind: DriftKind
    item_key: ItemKey
    expected: Attrs | None  # what Redis says the item holds (None: no item)
    actual: Attrs | None  # what DynamoDB holds

    def describe(self) -> str:
        where = ", ".join(f"{a}={_show(v.value)}" for a, v in self.item_key)
        return f"{self.kind.value} [{where}]: redis {_attrs(self.expected)} vs dynamodb {_attrs(self.actual)}"


def compare_items(expected: Mapping[ItemKey, Attrs], actual: Mapping[ItemKey, Attrs],
                  ttl_attr: str = "expire_at") -> list[Difference]:
    """Every item that is missing, extra or different; sorted, so reports are stable."""
    differences = []
    for item_key in sorted(expected.keys() | actual.keys(), key=repr):
        want, got = expected.get(item_key), actual.get(item_key)
        if got is None:
            differences.append(Difference(DriftKind.MISSING, item_key, want, None))
        elif want is None:
            differences.append(Difference(DriftKind.EXTRA, item_key, None, got))
        else:
            kind = _attrs_kind(dict(want), dict(got), ttl_attr)
            if kind is not None:
                differences.append(Difference(kind, item_key, want, got))
    return differences


def same_differences(a: Sequence[Difference], b: Sequence[Difference], ttl_attr: str = "expire_at") -> bool:
    """``a`` and ``b`` alike, but for expiry instants at most TTL_TOLERANCE_MS apart: Redis' side is derived from
    TIME + PTTL on each read, so two reads of an unchanged key can differ there by a millisecond, and a key whose
    only drift is its TTL would otherwise never look still to the verifier's rechecks (nor count as drift)."""
    return len(a) == len(b) and all(
        x.kind is y.kind and x.item_key == y.item_key and _alike(x.expected, y.expected, ttl_attr)
        and _alike(x.actual, y.actual, ttl_attr) for x, y in zip(a, b, strict=True))


def _alike(a: Attrs | None, b: Attrs | None, ttl_attr: str) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return _attrs_kind(dict(a), dict(b), ttl_attr) is None


def _attrs_kind(want: dict[str, TypedValue], got: dict[str, TypedValue], ttl_attr: str) -> DriftKind | None:
    if {a: v for a, v in want.items() if a != ttl_attr} != {a: v for a, v in got.items() if a != ttl_attr}:
        return DriftKind.VALUE
    w, g = want.get(ttl_attr), got.get(ttl_attr)
    if w == g:
        return None
    if not isinstance(w, N) or not isinstance(g, N) or abs(int(w.value) - int(g.value)) > TTL_TOLERANCE_MS:
        return DriftKind.TTL
    return None


def _attrs(attrs: Attrs | None) -> str:
    if attrs is None:
        return "(none)"
    return "{" + ", ".join(f"{a}={_show(v.value)}" for a, v in attrs) + "}"


def _show(value: object, limit: int = 40) -> str:
    text = repr(value) if isinstance(value, bytes) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
