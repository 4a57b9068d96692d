"""The config's rules, tables and default mirror in one pass: each template parsed once, every mistake raised as
one line naming its field (``rules[1].item.timestamp: unknown placeholder {scor} (known: owner, member,
score)``), and the compiled :class:`~replicator.core.mapping.RuleSet` built from what was checked.

Run by :class:`~replicator.core.config.Config`'s validation, so whichever command loads a config reports a rule
mistake the same way, and every user of the config takes the rules it compiled (``config.rule_set``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from replicator.core.errors import ConfigError
from replicator.core.mapping import ELEMENT, Rule, RuleKind, RuleSet, TableSpec
from replicator.core.templates import Template, glob_to_template

if TYPE_CHECKING:  # the schema calls these checks; they only read it
    from replicator.core.config import Config, DefaultRuleConfig, RuleConfig, TableConfig

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
RULE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

#: The placeholders a rule's item templates may use besides match's variables and {key}, by rule type.
RULE_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "string": ("value",),
    "hash": ("field", "value"),
    "set": ("member",),
    "zset": ("member", "score"),
}
#: Attribute name prefixes the replicator keeps for each group's version and tombstone marker.
RESERVED_ATTR_PREFIXES = ("_v_", "_deleted_")


@dataclass
class _SeenRules:
    """What the rules checked so far claimed, for the checks across rules."""

    names: dict[str, int] = field(default_factory=dict)  # rule name -> index
    data_owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, attribute) -> rule name
    attr_types: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, attribute) -> type


def compile_rules(config: Config) -> RuleSet:
    """Check and compile the rules, tables and default mirror; a one-line ConfigError naming the field of the
    first mistake, in the order a user reads the file: rules in order, then tables, then the default mirror."""
    seen = _SeenRules()
    rules = tuple(_rule(config, f"rules[{i}]", i, rc, seen) for i, rc in enumerate(config.rules))
    for logical in config.tables:
        physical = config.table_name(logical)
        if not NAME_RE.fullmatch(physical):
            raise ConfigError(f"tables.{logical}.name: {physical!r} is not a valid DynamoDB table name "
                              "(3-255 of a-z A-Z 0-9 _ - .)")
    tables = {config.table_name(logical): _table_spec(config, logical, rules) for logical in config.tables}
    mirror_rule = None
    if config.default is not None:
        mirror_rule = _mirror_rule(config, config.default)
        tables[mirror_rule.table] = TableSpec(mirror_rule.table, ("key", "B"), None, {}, (mirror_rule.name,))
    return RuleSet(rules, mirror_rule, tables, config.tombstones.ttl_attribute)


def _rule(config: Config, where: str, i: int, rc: RuleConfig, seen: _SeenRules) -> Rule:
    pattern = _check_match(where, rc)
    variables = pattern.placeholders
    table = config.tables.get(rc.table)
    if table is None:
        known = ", ".join(sorted(config.tables)) or "none defined under 'tables'"
        raise ConfigError(f"{where}.table: unknown table {rc.table!r} (known: {known})")
    name = _check_name(where, i, rc, seen)
    item = _check_item(where, rc, variables, config.tombstones.ttl_attribute)
    _check_item_key(where, rc, table, item, variables)
    types = _check_shared_attributes(where, name, config.table_name(rc.table), rc, table, item, seen)
    owner = _check_owner(where, rc, variables)
    return Rule(name=name, type=RuleKind(rc.type), pattern=pattern, table=config.table_name(rc.table),
                key_attrs=table.key_attrs, item=item, types=types, owner=owner, index=i)


def _parse(where: str, text: str) -> Template:
    try:
        return Template.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_match(where: str, rc: RuleConfig) -> Template:
    """The match pattern; one without a variable would map every key to one item."""
    pattern = _parse(f"{where}.match", rc.match)
    if not pattern.placeholders:
        raise ConfigError(f"{where}.match: {rc.match!r} has no placeholder; write e.g. 'opponents:{{owner}}'")
    return pattern


def _check_name(where: str, i: int, rc: RuleConfig, seen: _SeenRules) -> str:
    """The rule's name, which must be unique: it names the rule's version attribute."""
    name = rc.rule_name
    if not name:
        raise ConfigError(f"{where}.name: cannot derive a rule name from {rc.match!r}; set 'name'")
    if name in seen.names:
        raise ConfigError(f"{where}.name: rule name {name!r} is already used by rules[{seen.names[name]}]; "
                          "give one an explicit 'name'")
    seen.names[name] = i
    return name


def _check_item(where: str, rc: RuleConfig, variables: tuple[str, ...], ttl_attribute: str) -> dict[str, Template]:
    """Each item template parses and uses only placeholders the rule offers; no reserved attribute names."""
    allowed = (*variables, *RULE_PLACEHOLDERS[rc.type], "key")
    item: dict[str, Template] = {}
    for attr, text in rc.item.items():
        if attr.startswith(RESERVED_ATTR_PREFIXES) or attr == ttl_attribute:
            raise ConfigError(f"{where}.item.{attr}: attribute names starting with _v_/_deleted_ or "
                              f"{ttl_attribute!r} are reserved for versions and tombstones")
        template = _parse(f"{where}.item.{attr}", str(text))
        for placeholder in template.placeholders:
            if placeholder not in allowed:
                raise ConfigError(
                    f"{where}.item.{attr}: unknown placeholder {{{placeholder}}} (known: {', '.join(allowed)})"
                )
        item[attr] = template
    return item


def _check_item_key(where: str, rc: RuleConfig, table: TableConfig, item: Mapping[str, Template],
                    variables: tuple[str, ...]) -> None:
    """The item key tells apart every Redis key (and, for a collection, every element) the rule maps."""
    key_attrs = table.key_attrs
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
    element = ELEMENT.get(rc.type)
    if element is None:
        foreign = sorted(key_placeholders - {*variables, "key"})
        if foreign:
            raise ConfigError(f"{where}.item: a {rc.type} rule makes one item per key, so its key attributes may "
                              f"only use variables of match, not {{{foreign[0]}}}")
        return
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


def _check_shared_attributes(where: str, name: str, physical: str, rc: RuleConfig, table: TableConfig,
                             item: Mapping[str, Template], seen: _SeenRules) -> dict[str, str]:
    """Rules sharing a table share its key attributes only, and agree on every attribute's type; the rule's
    attribute types."""
    key_attrs = table.key_attrs
    for attr in item:
        if attr in key_attrs:
            continue
        other = seen.data_owner.setdefault((physical, attr), name)
        if other != name:
            raise ConfigError(f"{where}.item.{attr}: attribute is also written by rule {other!r}; "
                              "give each rule its own attributes")
    types = {}
    for attr, template in item.items():
        attr_type = types[attr] = table.attribute_type(attr, template)
        other_type = seen.attr_types.setdefault((physical, attr), attr_type)
        if other_type != attr_type:
            raise ConfigError(f"{where}.item.{attr}: type {attr_type} differs from {other_type} used by another "
                              f"rule; set tables.{rc.table}.types.{attr}")
    return types


def _check_owner(where: str, rc: RuleConfig, variables: tuple[str, ...]) -> Template:
    owner = _parse(f"{where}.owner", rc.owner_text(variables))
    for placeholder in owner.placeholders:
        if placeholder not in (*variables, "key"):
            raise ConfigError(f"{where}.owner: unknown placeholder {{{placeholder}}} "
                              f"(known: {', '.join((*variables, 'key'))})")
    return owner


def _mirror_rule(config: Config, default: DefaultRuleConfig) -> Rule:
    """The catch-all mirror: a valid table of its own and a glob it supports."""
    if any(config.table_name(logical) == default.table for logical in config.tables):
        raise ConfigError(f"default.table: {default.table!r} is also a rule table; the mirror needs a table of its own")
    if not NAME_RE.fullmatch(default.table):
        raise ConfigError(f"default.table: {default.table!r} is not a valid DynamoDB table name")
    try:
        pattern = glob_to_template(default.match)
    except ValueError as exc:
        raise ConfigError(f"default.match: {exc}") from None
    key = Template.parse("{key}")
    return Rule(name="mirror", type=RuleKind.MIRROR, pattern=pattern, table=default.table, key_attrs=("key",),
                item={"key": key}, types={"key": "B"}, owner=key)


def _table_spec(config: Config, logical: str, rules: tuple[Rule, ...]) -> TableSpec:
    """A table's key schema and indexes, typed as declared, else as the rules writing the attribute type it."""
    tc: TableConfig = config.tables[logical]
    physical = config.table_name(logical)
    writers = [rule for rule in rules if rule.table == physical]

    def typed(attr: str) -> tuple[str, str]:
        found = next((rule.types[attr] for rule in writers if attr in rule.types), None)
        return attr, tc.types.get(attr) or found or "S"

    return TableSpec(
        physical,
        typed(tc.partition_key),
        typed(tc.sort_key) if tc.sort_key else None,
        {index: typed(attr) for index, attr in tc.lsi.items()},
        tuple(rule.name for rule in writers),
    )
