"""Redis model → DynamoDB model, as pure functions.

A rule matches Redis keys by pattern (``opponents:{owner}``) and renders each member / field / value into a DynamoDB
item through attribute templates. Each rule owns an *attribute group* on its items: its data attributes plus a version
attribute ``_v_<rule>`` and a tombstone marker ``_deleted_<rule>``. Two rules may feed the same item (the Tandem
table: a zset gives ``timestamp``, side keys give ``metadata``) because their groups are versioned independently.

Nothing here does I/O: the applier hands in the previous applied state of a key and gets back the writes to make.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import TYPE_CHECKING, Any

from replicator.core import mirror
from replicator.core.errors import ConfigError, MappingError
from replicator.core.events import ChangeEvent, KeyType, Op

if TYPE_CHECKING:
    from replicator.core.config import Config

#: Keys the replicator itself writes (checkpoints, watermarks) live here and are never captured.
RESERVED_PREFIX = b"__replicator:"

#: A typed DynamoDB attribute as an immutable, hashable value: ("S", "abc"), ("N", "1.5"), ("B", b"...").
TypedValue = tuple[str, Any]
#: The key (or the data) of an item: sorted (attribute, TypedValue) pairs.
ItemKey = tuple[tuple[str, TypedValue], ...]
Attrs = tuple[tuple[str, TypedValue], ...]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
_RULE_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "string": ("value",),
    "hash": ("field", "value"),
    "set": ("member",),
    "zset": ("member", "score"),
}
#: The placeholder that tells a collection's items apart.
_ELEMENT = {"hash": "field", "set": "member", "zset": "member"}
#: Data attributes of the default mirror table's items ("parts" instead of "value" for a value kept in parts).
MIRROR_ATTRS = ("type", "value", "expire_at", "parts")
_GLOB_SPECIAL = re.compile(rb"([*?\[\]\\])")


@dataclass(frozen=True)
class Template:
    """``"opponents:{owner}"``: literal text with ``{name}`` placeholders; ``{{`` and ``}}`` are literal braces.

    Used both to match Redis keys (placeholders capture at least one byte, leftmost shortest) and to render
    attribute values.
    """

    text: str
    parts: tuple[tuple[bool, str], ...]  # (is_placeholder, literal text or placeholder name)
    regex: re.Pattern[bytes]

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[tuple[bool, str]] = []
        literal = ""
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            literal += text[pos : m.start()]
            pos = m.end()
            token = m.group(0)
            if token in ("{{", "}}"):
                literal += token[0]
            elif m.group(1) is None:
                raise ValueError(f"stray {token!r} in {text!r}; write {token * 2!r} for a literal brace")
            else:
                if literal:
                    parts.append((False, literal))
                    literal = ""
                if parts and parts[-1][0]:
                    raise ValueError(
                        f"placeholders {{{parts[-1][1]}}} and {{{m.group(1)}}} in {text!r} need text between them"
                    )
                parts.append((True, m.group(1)))
        literal += text[pos:]
        if literal:
            parts.append((False, literal))
        names = [name for is_var, name in parts if is_var]
        if len(names) != len(set(names)):
            raise ValueError(f"a placeholder appears twice in {text!r}")
        regex = b"".join(
            b"(?P<%s>.+?)" % name.encode() if is_var else re.escape(name.encode()) for is_var, name in parts
        )
        return cls(text, tuple(parts), re.compile(regex, re.DOTALL))

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(name for is_var, name in self.parts if is_var)

    @cached_property
    def single(self) -> str | None:
        """The placeholder name when the template is exactly one placeholder (``"{score}"``)."""
        if len(self.parts) == 1 and self.parts[0][0]:
            return self.parts[0][1]
        return None

    def match(self, value: bytes) -> dict[str, bytes] | None:
        m = self.regex.fullmatch(value)
        return m.groupdict() if m else None

    def render(self, values: Mapping[str, bytes]) -> bytes:
        single = self.single
        if single is not None:  # the common "{owner}" / "{key}": no join (this runs for every captured event)
            return values[single]
        return b"".join(values[name] if is_var else name.encode() for is_var, name in self.parts)

    def glob(self, values: Mapping[str, bytes] | None = None) -> bytes:
        """The Redis glob (PSUBSCRIBE, SCAN MATCH) that selects at least every key this template matches.

        Placeholders given in ``values`` are fixed to them (``opponents:{owner}`` with owner=42 → ``opponents:42``).
        """
        values = values or {}
        return b"".join(
            _GLOB_SPECIAL.sub(rb"\\\1", values[name]) if is_var and name in values else b"*" if is_var
            else _GLOB_SPECIAL.sub(rb"\\\1", name.encode())
            for is_var, name in self.parts
        )


@dataclass(frozen=True)
class Rule:
    """A compiled mapping rule. ``type == "mirror"`` is the default rule for unmatched keys."""

    name: str
    type: str
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
        if self.type == "mirror":
            return MIRROR_ATTRS
        return tuple(a for a in self.item if a not in self.key_attrs)

    @property
    def is_collection(self) -> bool:
        return self.type in _ELEMENT

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
        _kind, value = typed
        return template.match(value if isinstance(value, bytes) else str(value).encode())

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
        """First matching rule wins; then the mirror rule; reserved keys never match."""
        if key.startswith(RESERVED_PREFIX):
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
        return frozenset(rule.type for rule in self.rules)


# --------------------------------------------------------------------------------------------------------------------
# Compiling rules from config, with errors naming the field path


def compile_rules(config: Config) -> RuleSet:
    ttl_attribute = config.tombstones.ttl_attribute
    reserved = ("_v_", "_deleted_")
    rules: list[Rule] = []
    used_names: dict[str, int] = {}
    data_owner: dict[tuple[str, str], str] = {}
    table_groups: dict[str, list[str]] = {}
    attr_types: dict[tuple[str, str], str] = {}
    for i, rc in enumerate(config.rules):
        where = f"rules[{i}]"
        try:
            pattern = Template.parse(rc.match)
        except ValueError as exc:
            raise ConfigError(f"{where}.match: {exc}") from None
        if not pattern.placeholders:
            raise ConfigError(f"{where}.match: {rc.match!r} has no placeholder; write e.g. 'opponents:{{owner}}'")
        table_cfg = config.tables.get(rc.table)
        if table_cfg is None:
            known = ", ".join(sorted(config.tables)) or "none defined under 'tables'"
            raise ConfigError(f"{where}.table: unknown table {rc.table!r} (known: {known})")
        name = rc.name or _derive_name(rc.match)
        if not name:
            raise ConfigError(f"{where}.name: cannot derive a rule name from {rc.match!r}; set 'name'")
        if name in used_names:
            raise ConfigError(
                f"{where}.name: rule name {name!r} is already used by rules[{used_names[name]}]; "
                "give one an explicit 'name'"
            )
        used_names[name] = i
        variables = pattern.placeholders
        allowed = (*variables, *_RULE_PLACEHOLDERS[rc.type], "key")
        item: dict[str, Template] = {}
        for attr, text in rc.item.items():
            if attr.startswith(reserved) or attr == ttl_attribute:
                raise ConfigError(f"{where}.item.{attr}: attribute names starting with _v_/_deleted_ or "
                                  f"{ttl_attribute!r} are reserved for versions and tombstones")
            try:
                template = Template.parse(str(text))
            except ValueError as exc:
                raise ConfigError(f"{where}.item.{attr}: {exc}") from None
            for placeholder in template.placeholders:
                if placeholder not in allowed:
                    raise ConfigError(
                        f"{where}.item.{attr}: unknown placeholder {{{placeholder}}} (known: {', '.join(allowed)})"
                    )
            item[attr] = template
        key_attrs = (table_cfg.partition_key, *((table_cfg.sort_key,) if table_cfg.sort_key else ()))
        for key_attr in key_attrs:
            if key_attr not in item:
                raise ConfigError(f"{where}.item: missing the table's key attribute {key_attr!r}")
        key_placeholders = {p for a in key_attrs for p in item[a].placeholders}
        missing = [v for v in variables if v not in key_placeholders and v != "key"]
        if missing:
            raise ConfigError(
                f"{where}.item: variable {{{missing[0]}}} of match is not in the item key, so different Redis keys "
                f"would overwrite one item; use it in {' or '.join(key_attrs)}"
            )
        element = _ELEMENT.get(rc.type)
        if element is None:
            foreign = sorted(key_placeholders - {*variables, "key"})
            if foreign:
                raise ConfigError(f"{where}.item: a {rc.type} rule makes one item per key, so its key attributes may "
                                  f"only use variables of match, not {{{foreign[0]}}}")
        else:
            if element not in key_placeholders:
                raise ConfigError(
                    f"{where}.item: a {rc.type} rule makes one item per {element}, so {{{element}}} must be in "
                    f"the item key ({' or '.join(key_attrs)})"
                )
            foreign = [p for p in item[key_attrs[0]].placeholders if p not in variables]
            if foreign:
                raise ConfigError(
                    f"{where}.item.{key_attrs[0]}: the partition key may only use variables of match, so a key's "
                    f"items share one partition; move {{{foreign[0]}}} to the sort key"
                )
        table_name = config.table_name(rc.table)
        for attr in item:
            if attr in key_attrs:
                continue
            other = data_owner.setdefault((table_name, attr), name)
            if other != name:
                raise ConfigError(f"{where}.item.{attr}: attribute is also written by rule {other!r}; "
                                  "give each rule its own attributes")
        types: dict[str, str] = {}
        for attr, template in item.items():
            default = "N" if template.single == "score" else "S"
            types[attr] = table_cfg.types.get(attr, default)
            seen = attr_types.setdefault((table_name, attr), types[attr])
            if seen != types[attr]:
                raise ConfigError(f"{where}.item.{attr}: type {types[attr]} differs from {seen} used by another rule; "
                                  f"set tables.{rc.table}.types.{attr}")
        owner_text = rc.owner or ("{owner}" if "owner" in variables else "{key}")
        try:
            owner = Template.parse(owner_text)
        except ValueError as exc:
            raise ConfigError(f"{where}.owner: {exc}") from None
        for placeholder in owner.placeholders:
            if placeholder not in (*variables, "key"):
                raise ConfigError(f"{where}.owner: unknown placeholder {{{placeholder}}} "
                                  f"(known: {', '.join((*variables, 'key'))})")
        table_groups.setdefault(table_name, []).append(name)
        rules.append(Rule(name, rc.type, pattern, table_name, key_attrs, item, types, owner, index=i))

    tables: dict[str, TableSpec] = {}
    for logical, tc in config.tables.items():
        physical = config.table_name(logical)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", physical):
            raise ConfigError(f"tables.{logical}.name: {physical!r} is not a valid DynamoDB table name "
                              "(3-255 of a-z A-Z 0-9 _ - .)")

        def typed(attr: str, physical: str = physical, logical: str = logical) -> tuple[str, str]:
            found = attr_types.get((physical, attr))
            declared = config.tables[logical].types.get(attr)
            return attr, declared or found or "S"

        lsi = {index: typed(attr) for index, attr in tc.lsi.items()}
        for index, (attr, attr_type) in lsi.items():
            if attr_type not in ("S", "N", "B"):
                raise ConfigError(f"tables.{logical}.lsi.{index}: attribute {attr!r} must be S, N or B")
        tables[physical] = TableSpec(
            physical,
            typed(tc.partition_key),
            typed(tc.sort_key) if tc.sort_key else None,
            lsi,
            tuple(table_groups.get(physical, ())),
        )

    mirror = None
    if config.default is not None:
        name = config.default.table
        if name in tables:
            raise ConfigError(f"default.table: {name!r} is also a rule table; the mirror needs a table of its own")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", name):
            raise ConfigError(f"default.table: {name!r} is not a valid DynamoDB table name")
        try:
            glob_pattern = _glob_to_template(config.default.match)
        except ValueError as exc:
            raise ConfigError(f"default.match: {exc}") from None
        key_t = Template.parse("{key}")
        mirror = Rule(
            name="mirror",
            type="mirror",
            pattern=glob_pattern,
            table=name,
            key_attrs=("key",),
            item={"key": key_t},
            types={"key": "B"},
            owner=key_t,
        )
        tables[name] = TableSpec(name, ("key", "B"), None, {}, ("mirror",))
    return RuleSet(tuple(rules), mirror, tables, ttl_attribute)


def _derive_name(match: str) -> str:
    prefix = match.split("{", 1)[0]
    return re.sub(r"[^A-Za-z0-9_]+", "_", prefix).strip("_")


def _glob_to_template(glob: str) -> Template:
    """Only ``prefix*`` / ``*`` globs are supported for the mirror rule (a regex would be clearer than full globs)."""
    if glob.count("*") > 1 or (glob and "*" in glob and not glob.endswith("*")) or any(c in glob for c in "?[]"):
        raise ValueError(f"{glob!r}: only 'prefix*' or '*' is supported")
    if glob.endswith("*"):
        return Template.parse(glob[:-1].replace("{", "{{").replace("}", "}}") + "{rest}")
    return Template.parse(glob.replace("{", "{{").replace("}", "}}"))


# --------------------------------------------------------------------------------------------------------------------
# Planning writes


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
        if rule.type == "mirror":
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
    return Plan(tuple(writes), KeyState(event.version, desired))


def _in_parts_if_too_big(write: ItemWrite) -> ItemWrite:
    """A mirror write whose value is above the item limit: the value goes to parts, the item says how many."""
    attrs = dict(write.attributes or ())
    value = attrs.get("value")
    if value is None or not mirror.needs_parts(value):
        return write
    parts = mirror.split(value)
    del attrs["value"]
    attrs["parts"] = ("N", str(len(parts)))
    return replace(write, attributes=tuple(sorted(attrs.items())), parts=parts)


def desired_items(rule: Rule, variables: Mapping[str, bytes], event: ChangeEvent) -> dict[ItemKey, Attrs]:
    if event.op is Op.DELETE:
        return {}
    if rule.type == "mirror":
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


def _element_values(rule_type: str, value: Any, base: dict[str, bytes]) -> Iterable[dict[str, bytes]]:
    if rule_type == "string":
        yield {**base, "value": value}
    elif rule_type == "hash":
        for f, v in value:
            yield {**base, "field": f, "value": v}
    elif rule_type == "set":
        for member in value:
            yield {**base, "member": member}
    elif rule_type == "zset":
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
        return ("B", raw)
    if attr_type == "N":
        try:
            number = canonical_number(raw.decode("ascii"))
            if not _fits_dynamodb_number(Decimal(number)):
                raise MappingError(
                    f"key {key!r}: attribute {attr!r} of rule {rule.name!r} is a number (N) but {raw[:40]!r} is "
                    "outside what DynamoDB numbers hold (magnitudes 1E-130 to below 1E+126); change "
                    f"tables.*.types.{attr} to S")
            return ("N", number)
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
    return ("S", text)


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
            return ("N", _score_text(score).decode())
        return ("S", repr(score))
    return ("S", "inf" if score > 0 else "-inf")


def _mirror_attrs(event: ChangeEvent) -> Attrs:
    value: Any = event.value
    if event.type is KeyType.STRING:
        typed: TypedValue = ("B", value)
    elif event.type is KeyType.HASH:
        typed = ("L", tuple(("L", (("B", f), ("B", v))) for f, v in value))
    elif event.type in (KeyType.LIST, KeyType.SET):
        typed = ("L", tuple(("B", v) for v in value))
    elif event.type is KeyType.ZSET:
        typed = ("L", tuple(("M", (("member", ("B", m)), ("score", _mirror_score(s)))) for m, s in value))
    else:
        raise MappingError(f"key {event.key!r}: Redis type {event.type.value.lower()} is not replicated yet")
    attrs: list[tuple[str, TypedValue]] = [("type", ("S", event.type.value.lower())), ("value", typed)]
    if event.expire_at_ms is not None:
        attrs.append(("expire_at", ("N", str(event.expire_at_ms))))
    return tuple(sorted(attrs))


def to_attribute_value(typed: TypedValue) -> dict[str, Any]:
    """("S", "x") → {"S": "x"}; nested L/M values recursively. The boto3 low-level client's wire shape."""
    kind, value = typed
    if kind == "L":
        return {"L": [to_attribute_value(v) for v in value]}
    if kind == "M":
        return {"M": {k: to_attribute_value(v) for k, v in value}}
    return {kind: value}


def from_attribute_value(value: Mapping[str, Any]) -> TypedValue:
    """The inverse of :func:`to_attribute_value`, normalising numbers."""
    ((kind, raw),) = value.items()
    if kind == "L":
        return ("L", tuple(from_attribute_value(v) for v in raw))
    if kind == "M":
        return ("M", tuple(sorted((k, from_attribute_value(v)) for k, v in raw.items())))
    if kind == "N":
        return ("N", canonical_number(raw))
    if kind == "B":
        return ("B", bytes(raw))
    return (kind, raw)


def to_item(pairs: Iterable[tuple[str, TypedValue]]) -> dict[str, dict[str, Any]]:
    return {attr: to_attribute_value(typed) for attr, typed in pairs}
