"""Rule checks at config load (core/rules.py, run by the config's validation): every mistake is one line naming its
field, and the same pass compiles the rules every user of the config takes (config.rule_set)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from replicator.core.config import parse_config
from replicator.core.errors import ConfigError
from replicator.core.mapping import RuleKind
from replicator.local.demo import MESSAGING_RULES

ZSET_ITEM = {"owner_id": "{owner}", "opponent_id": "{member}", "timestamp": "{score}"}


def _data(**changes: Any) -> dict[str, Any]:
    """MESSAGING_RULES with top-level sections replaced, or rule 0 / rule 1 changed (``rule0={...}``)."""
    data = copy.deepcopy(MESSAGING_RULES)
    for name, value in changes.items():
        if name.startswith("rule"):
            data["rules"][int(name[4:])].update(value)
        else:
            data[name] = value
    return data


@pytest.mark.parametrize(("data", "message"), [
    (_data(rule0={"match": "opponents:{owner"}),
     "rules[0].match: stray '{' in 'opponents:{owner'; write '{{' for a literal brace"),
    (_data(rule0={"table": "nope"}), "rules[0].table: unknown table 'nope' (known: messaging)"),
    (_data(rule0={"match": "{owner}:opponents"}),
     "rules[0].name: cannot derive a rule name from '{owner}:opponents'; set 'name'"),
    (_data(rule0={"item": {"owner_id": "{owner}", "timestamp": "{score}"}}),
     "rules[0].item: missing the table's key attribute 'opponent_id'"),
    (_data(rule1={"item": {"owner_id": "{owner}", "opponent_id": "{opponent}-{value}", "metadata": "x"}}),
     "rules[1].item: a string rule makes one item per key, so its key attributes may only use variables of match, "
     "not {value}"),
    (_data(rule0={"item": {**ZSET_ITEM, "opponent_id": "{owner}"}}),
     "rules[0].item: a zset rule makes one item per member, so {member} must be in the item key "
     "(owner_id or opponent_id)"),
    (_data(rule1={"item": {"owner_id": "{owner}", "opponent_id": "{opponent}", "metadata": "{value}",
                           "timestamp": "{value}"}}),
     "rules[1].item.timestamp: attribute is also written by rule 'opponents'; give each rule its own attributes"),
    (_data(rule0={"owner": "{owner"}), "rules[0].owner: stray '{' in '{owner'; write '{{' for a literal brace"),
    (_data(rule0={"owner": "{member}"}), "rules[0].owner: unknown placeholder {member} (known: owner, key)"),
    (_data(tables={"messaging": {"name": "x", "partition_key": "owner_id", "sort_key": "opponent_id"}}),
     "tables.messaging.name: 'x' is not a valid DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)"),
    (_data(default={"table": "messaging"}),
     "default.table: 'messaging' is also a rule table; the mirror needs a table of its own"),
    (_data(default={"table": "a b"}), "default.table: 'a b' is not a valid DynamoDB table name"),
    (_data(default={"table": "mirror", "match": "a*b"}), "default.match: 'a*b': only 'prefix*' or '*' is supported"),
])
def test_each_rule_mistake_is_one_line_naming_its_field(data, message):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value) == f"config: {message}"


def test_two_rules_giving_one_attribute_different_types_are_rejected_naming_the_fix():
    data = copy.deepcopy(MESSAGING_RULES)
    data["tables"]["other"] = {"partition_key": "owner_id", "sort_key": "opponent_id", "name": "messaging"}
    data["rules"][1]["table"] = "other"
    data["rules"][1]["item"] = {"owner_id": "{owner}", "opponent_id": "{opponent}", "metadata": "{value}"}
    data["tables"]["other"]["types"] = {"owner_id": "B"}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value) == ("config: rules[1].item.owner_id: type B differs from S used by another rule; "
                               "set tables.other.types.owner_id")


def test_compiling_builds_what_the_checks_passed():
    rules = parse_config(MESSAGING_RULES).rule_set
    assert [(r.name, r.type, r.index) for r in rules.rules] == [("opponents", RuleKind.ZSET, 0),
                                                               ("meta", RuleKind.STRING, 1)]
    assert rules.mirror is not None and rules.mirror.is_mirror and not rules.rules[0].is_mirror
    spec = rules.tables["messaging"]
    assert (spec.partition_key, spec.sort_key, dict(spec.lsi), spec.groups) == (
        ("owner_id", "S"), ("opponent_id", "S"), {"by_timestamp": ("timestamp", "N")}, ("opponents", "meta"))
    assert rules.tables["redis_mirror"].groups == ("mirror",)
    assert f"{rules.rules[0].type}" == "zset"  # messages print the config's spelling
