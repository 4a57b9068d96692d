"""DynamoDB's item sizing rules (what a write is billed and limited by). Pure."""

from __future__ import annotations

import math
from decimal import Decimal

from replicator.core.values import TypedValue


def attribute_size(name: str, value: TypedValue) -> int:
    """Bytes DynamoDB counts for one attribute."""
    kind, raw = value.kind, value.value
    size = len(name.encode())
    if kind == "S":
        return size + len(str(raw).encode())
    if kind == "B":
        return size + len(raw)
    if kind == "N":
        return size + number_size(str(raw))
    if kind in ("BOOL", "NULL"):
        return size + 1
    if kind == "L":
        return size + 3 + sum(attribute_size("", v) + 1 for v in raw)
    return size + 3 + sum(attribute_size(k, v) + 1 for k, v in raw)


def number_size(text: str) -> int:
    digits = Decimal(text).normalize().as_tuple().digits if text not in ("0", "-0") else (0,)
    significant = len(digits)
    return math.ceil(significant / 2) + 1
