"""Redis model → DynamoDB model, as pure functions.

A rule matches Redis keys by pattern (``opponents:{owner}``) and renders each member / field / value into a DynamoDB
item through attribute templates. Each rule owns an *attribute group* on its items: its data attributes plus a version
attribute ``_v_<rule>`` and a tombstone marker ``_deleted_<rule>``. Two rules may feed the same item (the Tandem
table: a zset gives ``timestamp``, side keys give ``metadata``) because their groups are versioned independently.

Nothing here does I/O: the applier hands in the previous applied state of a key and gets back the writes to make.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import Enum
from typing import Any

from replicator.core import mirror
from replicator.core.errors import MappingError
from replicator.core.events import ChangeEvent, KeyType, Op
from replicator.core.templates import Template
from replicator.core.values import Attrs, B, ItemKey, L, M, N, S, TypedValue, canonical_number

#: The one thing the replicator writes to Redis: a cutover switch's markers (see core/cutover.py), short-lived keys
#: the listeners delete once they have published what came before them. They are never captured; every other key
#: is the application's, ``__replicator:``-named or not, and replicated.
MARK_PREFIX = b"__replicator:mark:"

#: The placeholder that tells a collection's items apart, by rule type (a string rule makes one item per key).
ELEMENT = {"hash": "field", "set": "member", "zset": "member"}

#: Data attributes of the default mirror table's items ("parts" instead of "value" for a value kept in parts).
MIRROR_ATTRS = ("type", "value", "expire_at", "parts")


class RuleKind(str, Enum):
    """What a rule maps: one Redis type (the rule's ``type`` in the config), or any key no rule matches (MIRROR)."""

    STRING = "string"
    HASH = "hash"
    SET = "set"
    ZSET = "zset"
    MIRROR = "mirror"

    def __str__(self) -> str:  # the config's spelling in messages, on every Python version
        return self.value


@dataclass(frozen=True)
class Rule:
    """A compiled mapping rule. The rule of kind MIRROR is the default rule for unmatched keys."""

    name: str
    type: RuleKind
    pattern: Template
    table: str
    key_attrs: tuple[str, ...]
    item: Mapping[str, Template]
    types: Mapping[str, str]
    owner: Template
    index: int | None = None  # position in ``rules``; None for the mirror rule

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, {self.type}, {self.pattern.text!r} -> {self.table})"

    @property
    def version_attr(self) -> str:
        return f"_v_{self.name}"

    @property
    def deleted_attr(self) -> str:
        return f"_deleted_{self.name}"

    @property
    def data_attrs(self) -> tuple[str, ...]:
        if self.is_mirror:
            return MIRROR_ATTRS
        return tuple(a for a in self.item if a not in self.key_attrs)

    @property
    def is_mirror(self) -> bool:
        return self.type is RuleKind.MIRROR

    @property
    def is_collection(self) -> bool:
        return self.type in ELEMENT

    @property
    def partition_key(self) -> str:
        return self.key_attrs[0]

    def owns(self, item_key: ItemKey, variables: Mapping[str, bytes]) -> bool:
        """Whether an item of this rule's table was produced from the Redis key whose pattern variables are given."""
        return self.unrender_key(item_key, variables) is not None

    # The inverse of rendering: what an item read back from DynamoDB says about the Redis key it came from. Items
    # are all the reconcile, the verifier and the reads have, so they all go through these two.

    def unrender(self, attr: str, typed: TypedValue) -> dict[str, bytes] | None:
        """The placeholders' values ``attr``'s value was rendered from; None when the rule renders no such
        attribute or the value does not fit its template."""
        template = self.item.get(attr)
        if template is None:
            return None
        single = template.single
        if single is not None:  # exactly "{value}": whatever it holds, the empty string included
            return {single: typed.as_bytes()}
        return template.match(typed.as_bytes())

    def unrender_key(self, item_key: Iterable[tuple[str, TypedValue]],
                     fixed: Mapping[str, bytes] | None = None) -> dict[str, bytes] | None:
        """The variables an item's key attributes were rendered from (a placeholder in two of them keeps the last
        one's value); None when one does not fit its template or contradicts a value given in ``fixed``."""
        found: dict[str, bytes] = {}
        for attr, typed in item_key:
            matched = self.unrender(attr, typed)
            if matched is None:
                return None
            if fixed and any(value != fixed[name] for name, value in matched.items() if name in fixed):
                return None
            found.update(matched)
        return found

    def source_key(self, item_key: Iterable[tuple[str, TypedValue]]) -> bytes | None:
        """The Redis key a single-item rule's item came from: every variable of its pattern is in the item key
        (checked when the rules are compiled), so this is exact, not a guess. None for an item not of this rule."""
        variables = self.unrender_key(item_key)
        if variables is None:
            return None
        if "key" in variables:
            return variables["key"]
        return self.pattern.render(variables)


@dataclass(frozen=True)
class TableSpec:
    """What the replicator needs to know about a physical table (to create it, and to write tombstones)."""

    name: str
    partition_key: tuple[str, str]
    sort_key: tuple[str, str] | None
    lsi: Mapping[str, tuple[str, str]]  # index name -> (attribute, type)
    groups: tuple[str, ...]  # rule names writing to this table


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    mirror: Rule | None
    tables: Mapping[str, TableSpec]
    ttl_attribute: str = "_expires"

    def match(self, key: bytes) -> tuple[Rule, dict[str, bytes]] | None:
        """First matching rule wins; then the mirror rule; the cutover's markers never match."""
        if key.startswith(MARK_PREFIX):
            return None
        for rule in self.rules:
            variables = rule.pattern.match(key)
            if variables is not None:
                return rule, variables
        # The catch-all mirror takes the empty key too (a placeholder needs a byte): planning then makes it a dead
        # letter naming why, instead of a key silently not replicated.
        mirror = self.mirror
        if mirror is not None and (mirror.pattern.match(key) is not None or (not key and mirror.pattern.single)):
            return mirror, {}
        return None

    def owner_of(self, key: bytes) -> bytes | None:
        """The owner of ``key``, or None when no rule captures it."""
        matched = self.match(key)
        return None if matched is None else self.owner(matched[0], key, matched[1])

    def owner(self, rule: Rule, key: bytes, variables: Mapping[str, bytes]) -> bytes:
        if rule.owner.single == "key":
            return key
        return rule.owner.render({**variables, "key": key})

    @property
    def parts_table(self) -> TableSpec | None:
        """The mirror's table for values above the item limit (see mirror.py); None without a mirror."""
        if self.mirror is None:
            return None
        return TableSpec(mirror.parts_table(self.mirror.table), ("key", "B"), ("part", "S"), {}, ())

    def globs(self) -> tuple[bytes, ...]:
        """Distinct globs covering every captured key; a catch-all mirror makes the others redundant."""
        globs: list[bytes] = []
        if self.mirror is not None and self.mirror.pattern.glob() == b"*":
            return (b"*",)
        for rule in (*self.rules, *((self.mirror,) if self.mirror else ())):
            glob = rule.pattern.glob()
            if glob not in globs:
                globs.append(glob)
        return tuple(globs)

    def key_types(self) -> frozenset[str]:
        """Redis types whose notifications the rules need ("any" when the mirror rule takes every type)."""
        if self.mirror is not None:
            return frozenset({"string", "hash", "list", "set", "zset"})
        return frozenset(rule.type.value for rule in self.rules)


# --------------------------------------------------------------------------------------------------------------------
# Compiling rules from config, with errors naming the field path


@dataclass(frozen=True)
class ItemWrite:
    """One conditional write of one rule's attribute group on one item.

    ``attributes is None`` makes it a tombstone: the group's data is removed, its version kept.
    """

    table: str
    key: ItemKey
    rule: Rule
    version: int
    attributes: Attrs | None
    #: A mirror value above the item limit, in slices for the parts table (the attributes then hold "parts").
    parts: tuple[bytes, ...] = ()
    #: The item is known to exist (the key's applied state has it live); None when unknown. Lets a sink that must
    #: choose between creating and updating an item choose right the first time.
    exists: bool | None = field(default=None, compare=False)

    @property
    def is_tombstone(self) -> bool:
        return self.attributes is None


@dataclass(frozen=True)
class Head:
    """A collection key's head version in the state table, written once all its items are (by the applier, or by
    the application's own writes): its rule, key, version and whether the key is gone."""

    rule: Rule
    key: bytes
    version: int
    deleted: bool
    #: The head is known to exist (the key's state was loaded with one, or this writer wrote it); None: unknown.
    exists: bool | None = None


@dataclass(frozen=True)
class KeyState:
    """The applied state of one Redis key: its head version and the live items it produced."""

    version: int
    items: Mapping[ItemKey, Attrs] = field(default_factory=dict)


EMPTY_STATE = KeyState(version=-1)


@dataclass(frozen=True)
class Plan:
    writes: tuple[ItemWrite, ...]
    state: KeyState
    stale: bool = False
    #: A collection key's new head, written once all its items are (single-item keys have none: the item's own
    #: version is the head).
    head: Head | None = None


def plan_writes(rule: Rule, variables: Mapping[str, bytes], event: ChangeEvent, previous: KeyState) -> Plan:
    """The writes that take DynamoDB from ``previous`` (the key's applied state) to ``event``'s state.

    An event older than the head version is stale and yields nothing. Only members whose data changed are written;
    members that vanished are tombstoned at the event's version. Raises MappingError when the event cannot be
    mapped (wrong Redis type, value unfit for the attribute type): the event is poison.
    """
    if not rule.is_collection:
        # One key, one item: the item's own version attribute is the key's head version, so no previous state is
        # needed and a DELETE always leaves a tombstone.
        item_key = _item_key(rule, {**variables, "key": event.key}, event)
        if event.op is Op.DELETE:
            return Plan((ItemWrite(rule.table, item_key, rule, event.version, None),), KeyState(event.version))
        ((_, attrs),) = desired_items(rule, variables, event).items()
        write = ItemWrite(rule.table, item_key, rule, event.version, attrs)
        if rule.is_mirror:
            write = _in_parts_if_too_big(write)
        return Plan((write,), KeyState(event.version, {item_key: attrs}))
    if event.version < previous.version:
        return Plan((), previous, stale=True)
    desired = desired_items(rule, variables, event)
    writes: list[ItemWrite] = []
    for item_key, attrs in desired.items():
        old = previous.items.get(item_key)
        if old != attrs:
            writes.append(ItemWrite(rule.table, item_key, rule, event.version, attrs, exists=old is not None or None))
    for item_key in previous.items:
        if item_key not in desired:
            writes.append(ItemWrite(rule.table, item_key, rule, event.version, None, exists=True))
    head = Head(rule, event.key, event.version, event.op is Op.DELETE, exists=previous.version >= 0)
    return Plan(tuple(writes), KeyState(event.version, desired), head=head)


def _in_parts_if_too_big(write: ItemWrite) -> ItemWrite:
    """A mirror write whose value is above the item limit: the value goes to parts, the item says how many."""
    attrs = dict(write.attributes or ())
    value = attrs.get("value")
    if value is None or not mirror.needs_parts(value):
        return write
    parts = mirror.split(value)
    del attrs["value"]
    attrs["parts"] = N(str(len(parts)))
    return replace(write, attributes=tuple(sorted(attrs.items())), parts=parts)


def desired_items(rule: Rule, variables: Mapping[str, bytes], event: ChangeEvent) -> dict[ItemKey, Attrs]:
    if event.op is Op.DELETE:
        return {}
    if rule.is_mirror:
        return {_item_key(rule, {"key": event.key}, event): _mirror_attrs(event)}
    expected = KeyType(rule.type.upper())
    if event.type is not expected:
        raise MappingError(
            f"key {event.key!r} is a {event.type.value.lower()} but rule {rule.name!r} maps a {rule.type}; "
            "fix the rule's 'type' or its 'match'"
        )
    base = {**variables, "key": event.key}
    items: dict[ItemKey, Attrs] = {}
    for values in _element_values(rule.type, event.value, base):
        item_key = _item_key(rule, values, event)
        items[item_key] = tuple(
            (attr, render_attr(rule, attr, values, event.key)) for attr in rule.data_attrs
        )
    return items


def _element_values(rule_type: RuleKind, value: Any, base: dict[str, bytes]) -> Iterable[dict[str, bytes]]:
    if rule_type is RuleKind.STRING:
        yield {**base, "value": value}
    elif rule_type is RuleKind.HASH:
        for f, v in value:
            yield {**base, "field": f, "value": v}
    elif rule_type is RuleKind.SET:
        for member in value:
            yield {**base, "member": member}
    elif rule_type is RuleKind.ZSET:
        for member, score in value:
            yield {**base, "member": member, "score": _score_text(score)}


def _item_key(rule: Rule, values: Mapping[str, bytes], event: ChangeEvent) -> ItemKey:
    return tuple(sorted((attr, render_attr(rule, attr, values, event.key)) for attr in rule.key_attrs))


def render_attr(rule: Rule, attr: str, values: Mapping[str, bytes], key: bytes) -> TypedValue:
    """Render one attribute of ``rule``'s item and type it. Raises MappingError naming the key and the fix."""
    raw = rule.item[attr].render(values)
    attr_type = rule.types[attr]
    if attr_type == "B":
        if not raw and attr in rule.key_attrs:
            raise MappingError(f"key {key!r}: key attribute {attr!r} of rule {rule.name!r} would be empty, and "
                               "DynamoDB key attributes cannot be empty")
        return B(raw)
    if attr_type == "N":
        try:
            number = canonical_number(raw.decode("ascii"))
            if not _fits_dynamodb_number(Decimal(number)):
                raise MappingError(
                    f"key {key!r}: attribute {attr!r} of rule {rule.name!r} is a number (N) but {raw[:40]!r} is "
                    "outside what DynamoDB numbers hold (magnitudes 1E-130 to below 1E+126); change "
                    f"tables.*.types.{attr} to S")
            return N(number)
        except (UnicodeDecodeError, ValueError):
            raise MappingError(
                f"key {key!r}: attribute {attr!r} of rule {rule.name!r} is a number (N) but the value is "
                f"{raw[:40]!r}; change tables.*.types.{attr} or the template"
            ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MappingError(
            f"key {key!r}: attribute {attr!r} of rule {rule.name!r} is a string (S) but the bytes are not "
            f"UTF-8; declare tables.*.types.{attr}: B for binary data"
        ) from None
    if attr in rule.key_attrs and not text:
        raise MappingError(f"key {key!r}: key attribute {attr!r} of rule {rule.name!r} would be empty")
    return S(text)


def _score_text(score: float) -> bytes:
    try:
        return canonical_number(repr(score)).encode()
    except ValueError:
        return repr(score).encode()  # inf/nan: only a number attribute rejects it, with a clear error


#: DynamoDB numbers: magnitudes from 1E-130 to below 1E+126 (and 0).
_DYNAMODB_NUMBER_RANGE = (Decimal("1E-130"), Decimal("1E+126"))


def _fits_dynamodb_number(number: Decimal) -> bool:
    low, high = _DYNAMODB_NUMBER_RANGE
    return number == 0 or low <= abs(number) < high


def _mirror_score(score: float) -> TypedValue:
    """A number where DynamoDB can hold it; else (+inf, -inf, 1e300, 5e-324: all valid Redis scores) the string
    Python prints for it, which reads back as the same float."""
    if math.isfinite(score):
        if _fits_dynamodb_number(Decimal(score)):
            return N(_score_text(score).decode())
        return S(repr(score))
    return S("inf" if score > 0 else "-inf")


def _mirror_attrs(event: ChangeEvent) -> Attrs:
    value: Any = event.value
    if event.type is KeyType.STRING:
        typed: TypedValue = B(value)
    elif event.type is KeyType.HASH:
        typed = L(tuple(L((B(f), B(v))) for f, v in value))
    elif event.type in (KeyType.LIST, KeyType.SET):
        typed = L(tuple(B(v) for v in value))
    elif event.type is KeyType.ZSET:
        typed = L(tuple(M((("member", B(m)), ("score", _mirror_score(s)))) for m, s in value))
    else:
        raise MappingError(f"key {event.key!r}: Redis type {event.type.value.lower()} is not replicated yet")
    attrs: list[tuple[str, TypedValue]] = [("type", S(event.type.value.lower())), ("value", typed)]
    if event.expire_at_ms is not None:
        attrs.append(("expire_at", N(str(event.expire_at_ms))))
    return tuple(sorted(attrs))
