"""DynamoDB's item sizing rules (what a write is billed and limited by). Pure."""

from __future__ import annotations

import math
from decimal import Decimal

from replicator.core.values import B, L, M, N, S, TypedValue


def attribute_size(name: str, value: TypedValue) -> int:
    """Bytes DynamoDB counts for one attribute."""
    size = len(name.encode())
    if isinstance(value, S):
        return size + len(value.value.encode())
    if isinstance(value, B):
        return size + len(value.value)
    if isinstance(value, N):
        return size + number_size(value.value)
    if isinstance(value, L):
        return size + 3 + sum(attribute_size("", v) + 1 for v in value.value)
    if isinstance(value, M):
        return size + 3 + sum(attribute_size(k, v) + 1 for k, v in value.value)
    if value.kind in ("BOOL", "NULL"):
        return size + 1
    return size + len(str(value.value).encode())  # sets (SS, NS, BS): never written by the replicator, so rough


def number_size(text: str) -> int:
    digits = Decimal(text).normalize().as_tuple().digits if text not in ("0", "-0") else (0,)
    significant = len(digits)
    return math.ceil(significant / 2) + 1
