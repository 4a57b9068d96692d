"""The checks of a config's rules, tables and default mirror: every mistake one line naming its field, e.g.
``rules[1].item.timestamp: unknown placeholder {scor} (known: owner, member, score)``.

Run by :class:`~replicator.core.config.Config`'s validation, so whichever command loads a config reports a rule
mistake the same way; :func:`replicator.core.mapping.compile_rules` builds the rules afterwards and trusts them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from replicator.core.errors import ConfigError
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
#: The placeholder that tells a collection's items apart, by rule type (a string rule makes one item per key).
ELEMENT = {"hash": "field", "set": "member", "zset": "member"}
#: Attribute name prefixes the replicator keeps for each group's version and tombstone marker.
RESERVED_ATTR_PREFIXES = ("_v_", "_deleted_")


@dataclass
class _SeenRules:
    """What the rules checked so far claimed, for the checks across rules."""

    names: dict[str, int] = field(default_factory=dict)  # rule name -> index
    data_owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, attribute) -> rule name
    attr_types: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, attribute) -> type


def check_rules(config: Config) -> None:
    """Raise a one-line ConfigError naming the field of the first rule, table or default-mirror mistake."""
    seen = _SeenRules()
    for i, rc in enumerate(config.rules):
        _check_rule(config, f"rules[{i}]", i, rc, seen)
    for logical in config.tables:
        physical = config.table_name(logical)
        if not NAME_RE.fullmatch(physical):
            raise ConfigError(f"tables.{logical}.name: {physical!r} is not a valid DynamoDB table name "
                              "(3-255 of a-z A-Z 0-9 _ - .)")
    if config.default is not None:
        _check_default(config, config.default)


def _check_rule(config: Config, where: str, i: int, rc: RuleConfig, seen: _SeenRules) -> None:
    variables = _check_match(where, rc)
    table = config.tables.get(rc.table)
    if table is None:
        known = ", ".join(sorted(config.tables)) or "none defined under 'tables'"
        raise ConfigError(f"{where}.table: unknown table {rc.table!r} (known: {known})")
    name = _check_name(where, i, rc, seen)
    item = _check_item(where, rc, variables, config.tombstones.ttl_attribute)
    _check_item_key(where, rc, table, item, variables)
    _check_shared_attributes(where, name, config.table_name(rc.table), rc, table, item, seen)
    _check_owner(where, rc, variables)


def _parse(where: str, text: str) -> Template:
    try:
        return Template.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_match(where: str, rc: RuleConfig) -> tuple[str, ...]:
    """The match's variables; a match without one would map every key to one item."""
    variables = _parse(f"{where}.match", rc.match).placeholders
    if not variables:
        raise ConfigError(f"{where}.match: {rc.match!r} has no placeholder; write e.g. 'opponents:{{owner}}'")
    return variables


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
                             item: Mapping[str, Template], seen: _SeenRules) -> None:
    """Rules sharing a table share its key attributes only, and agree on every attribute's type."""
    key_attrs = table.key_attrs
    for attr in item:
        if attr in key_attrs:
            continue
        other = seen.data_owner.setdefault((physical, attr), name)
        if other != name:
            raise ConfigError(f"{where}.item.{attr}: attribute is also written by rule {other!r}; "
                              "give each rule its own attributes")
    for attr, template in item.items():
        attr_type = table.attribute_type(attr, template)
        other_type = seen.attr_types.setdefault((physical, attr), attr_type)
        if other_type != attr_type:
            raise ConfigError(f"{where}.item.{attr}: type {attr_type} differs from {other_type} used by another "
                              f"rule; set tables.{rc.table}.types.{attr}")


def _check_owner(where: str, rc: RuleConfig, variables: tuple[str, ...]) -> None:
    owner = _parse(f"{where}.owner", rc.owner_text(variables))
    for placeholder in owner.placeholders:
        if placeholder not in (*variables, "key"):
            raise ConfigError(f"{where}.owner: unknown placeholder {{{placeholder}}} "
                              f"(known: {', '.join((*variables, 'key'))})")


def _check_default(config: Config, default: DefaultRuleConfig) -> None:
    """The mirror needs a valid table of its own and a glob it supports."""
    if any(config.table_name(logical) == default.table for logical in config.tables):
        raise ConfigError(f"default.table: {default.table!r} is also a rule table; the mirror needs a table of its own")
    if not NAME_RE.fullmatch(default.table):
        raise ConfigError(f"default.table: {default.table!r} is not a valid DynamoDB table name")
    try:
        glob_to_template(default.match)
    except ValueError as exc:
        raise ConfigError(f"default.match: {exc}") from None
