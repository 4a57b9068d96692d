"""Typed DynamoDB attribute values, immutable and hashable, and their wire form. Pure; the bottom of ``core``.

A value is one of :class:`S` (string), :class:`N` (number, kept as its canonical text), :class:`B` (binary),
:class:`L` (list of values) or :class:`M` (map: sorted (name, value) pairs), named after DynamoDB's own type
descriptors, plus :class:`Other` for the kinds the replicator never writes but may read back from an item written
around it (BOOL, NULL, SS ...). Item keys and attribute groups are tuples of (attribute, value) pairs, so they can be
dict keys and compare by value: a state read back from DynamoDB equals the state rendered from Redis.

Separate small classes rather than a ``(kind, value)`` tuple: the kind is in the type, so a checker tells an S from
a B, and ``value`` has the right type for each. They are slotted and frozen: millions are made on the apply path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar


class _Value:
    """What every typed value answers: its DynamoDB kind, its value, its wire form, its bytes."""

    __slots__ = ()
    kind: ClassVar[str]
    value: Any

    def wire(self) -> dict[str, Any]:
        """The boto3 low-level client's shape: ``S("x").wire() == {"S": "x"}``."""
        return {self.kind: self.value}

    def as_bytes(self) -> bytes:
        """The bytes a template rendered this value from (binary as is, text encoded): for matching it back."""
        return str(self.value).encode()

    # Written out rather than generated: the generated ones build a tuple per call, and item keys are hashed and
    # compared for every planned item. Equal means same kind and same value; S("1") != N("1").
    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self.value == other.value  # type: ignore[no-any-return]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)


@dataclass(frozen=True, slots=True, eq=False)
class S(_Value):
    value: str
    kind: ClassVar[str] = "S"

    def as_bytes(self) -> bytes:
        return self.value.encode()


@dataclass(frozen=True, slots=True, eq=False)
class N(_Value):
    value: str  # canonical text (see canonical_number): what DynamoDB returns, so states compare equal
    kind: ClassVar[str] = "N"


@dataclass(frozen=True, slots=True, eq=False)
class B(_Value):
    value: bytes
    kind: ClassVar[str] = "B"

    def as_bytes(self) -> bytes:
        return self.value


@dataclass(frozen=True, slots=True, eq=False)
class L(_Value):
    value: tuple[TypedValue, ...]
    kind: ClassVar[str] = "L"

    def wire(self) -> dict[str, Any]:
        return {"L": [v.wire() for v in self.value]}


@dataclass(frozen=True, slots=True, eq=False)
class M(_Value):
    value: tuple[tuple[str, TypedValue], ...]  # sorted by name
    kind: ClassVar[str] = "M"

    def wire(self) -> dict[str, Any]:
        return {"M": {k: v.wire() for k, v in self.value}}


@dataclass(frozen=True, slots=True)  # the generated __eq__ and __hash__: they include the kind
class Other(_Value):
    """A kind the replicator never writes (BOOL, NULL, SS, NS, BS), read back as DynamoDB gave it."""

    kind: str  # type: ignore[misc]  # an instance field here, a class constant on the others
    value: Any


TypedValue = S | N | B | L | M | Other
#: The key (or the data) of an item: (attribute, value) pairs, sorted for keys.
ItemKey = tuple[tuple[str, TypedValue], ...]
Attrs = tuple[tuple[str, TypedValue], ...]

def to_attribute_value(typed: TypedValue) -> dict[str, Any]:
    """S("x") → {"S": "x"}; nested L/M values recursively. The boto3 low-level client's wire shape."""
    return typed.wire()


def from_attribute_value(value: Mapping[str, Any]) -> TypedValue:
    """The inverse of :func:`to_attribute_value`, normalising numbers."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return S(raw)
    if kind == "N":
        return N(canonical_number(raw))
    if kind == "B":
        return B(bytes(raw))
    if kind == "L":
        return L(tuple(from_attribute_value(v) for v in raw))
    if kind == "M":
        return M(tuple(sorted((k, from_attribute_value(v)) for k, v in raw.items())))
    return Other(kind, raw)


def to_item(pairs: Iterable[tuple[str, TypedValue]]) -> dict[str, dict[str, Any]]:
    return {attr: typed.wire() for attr, typed in pairs}


def canonical_number(text: str) -> str:
    """The form DynamoDB returns numbers in, so states read back compare equal to states rendered here."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(text) from None
    if not number.is_finite():
        raise ValueError(text)
    if number == 0:
        return "0"
    return format(number.normalize(), "f")
