"""Pure mapping: patterns, templates, and the writes planned from a key's previous applied state."""

from __future__ import annotations

import re

import pytest

from replicator.core.config import parse_config
from replicator.core.errors import ConfigError, MappingError
from replicator.core.events import ChangeEvent, KeyType, Op, Origin
from replicator.core.mapping import EMPTY_STATE, Template, canonical_number, plan_writes
from replicator.core.values import B, N, S
from tests.unit.rules import MESSAGING_RULES, messaging, string_event, zset_event


def test_pattern_captures_variables_and_renders_a_subscription_glob():
    t = Template.parse("meta:{owner}:{opponent}")
    assert t.match(b"meta:u1:u2") == {"owner": b"u1", "opponent": b"u2"}
    assert t.match(b"meta:u1") is None
    assert t.glob() == b"meta:*:*"
    hashtag = Template.parse("opponents:{{{owner}}}")  # Redis Cluster hash tag around the owner
    assert hashtag.match(b"opponents:{42}") == {"owner": b"42"}
    assert Template.parse("a*[x]:{k}").glob() == rb"a\*\[x\]:*"


def test_binary_keys_match_byte_for_byte():
    assert Template.parse("bin:{owner}").match(b"bin:\xff\x00\n") == {"owner": b"\xff\x00\n"}


@pytest.mark.parametrize("bad", ["a:{x}{y}", "a:{x", "a:{x}:{x}"])
def test_ambiguous_or_broken_patterns_are_rejected(bad):
    with pytest.raises(ValueError):
        Template.parse(bad)


def test_first_matching_rule_wins_then_the_mirror_and_only_the_cutovers_markers_never_match():
    rules = messaging()
    rule, variables = rules.match(b"opponents:alice")
    assert (rule.name, variables) == ("opponents", {"owner": b"alice"})
    assert rules.match(b"meta:alice:bob")[0].name == "meta"
    assert rules.match(b"anything-else")[0].type == "mirror"
    assert rules.match(b"__replicator:mark:5f3a{m1}") is None  # a switch's marker, deleted by the listeners
    assert rules.match(b"__replicator:checkpoint")[0].type == "mirror"  # the application's own key: replicated
    assert rules.owner(rule, b"opponents:alice", variables) == b"alice"


def test_zset_members_become_items_and_only_changes_are_written():
    rules = messaging()
    rule, variables = rules.match(b"opponents:alice")
    first = plan_writes(rule, variables, zset_event("alice", {"bob": 1.5, "carol": 2e12}, 10), EMPTY_STATE)
    assert [(dict(w.key)["opponent_id"].value, w.attributes) for w in first.writes] == [
        ("bob", (("timestamp", N("1.5")),)),
        ("carol", (("timestamp", N("2000000000000")),)),
    ]
    second = plan_writes(rule, variables, zset_event("alice", {"bob": 1.5, "dave": 3}, 11), first.state)
    written = {dict(w.key)["opponent_id"].value: w.is_tombstone for w in second.writes}
    assert written == {"dave": False, "carol": True}  # bob unchanged: not rewritten
    assert all(w.version == 11 for w in second.writes)


def test_an_event_older_than_the_head_version_is_stale_and_writes_nothing():
    rules = messaging()
    rule, variables = rules.match(b"opponents:alice")
    applied = plan_writes(rule, variables, zset_event("alice", {"bob": 1}, 20), EMPTY_STATE).state
    late = plan_writes(rule, variables, zset_event("alice", {"bob": 1, "eve": 2}, 15), applied)
    assert late.stale and late.writes == () and late.state == applied


def test_deleting_a_zset_tombstones_every_member():
    rules = messaging()
    rule, variables = rules.match(b"opponents:alice")
    applied = plan_writes(rule, variables, zset_event("alice", {"bob": 1, "eve": 2}, 20), EMPTY_STATE).state
    deleted = plan_writes(rule, variables, zset_event("alice", {}, 21, op=Op.DELETE), applied)
    assert sorted(w.is_tombstone for w in deleted.writes) == [True, True]
    assert deleted.state.items == {}


def test_a_deleted_string_leaves_a_tombstone_even_without_known_state():
    rules = messaging()
    rule, variables = rules.match(b"meta:alice:bob")
    plan = plan_writes(rule, variables, string_event(b"meta:alice:bob", None, 5), EMPTY_STATE)
    (write,) = plan.writes
    assert write.is_tombstone and dict(write.key) == {"owner_id": S("alice"), "opponent_id": S("bob")}


def test_values_unfit_for_their_attribute_type_are_mapping_errors_naming_the_fix():
    rules = messaging()
    rule, variables = rules.match(b"meta:alice:bob")
    with pytest.raises(MappingError, match=re.escape("not UTF-8; declare tables.*.types.metadata: B")):
        plan_writes(rule, variables, string_event(b"meta:alice:bob", b"\xff\xfe", 5), EMPTY_STATE)
    zrule, zvars = rules.match(b"opponents:alice")
    with pytest.raises(MappingError, match="is a number"):
        plan_writes(zrule, zvars, zset_event("alice", {"bob": float("inf")}, 5), EMPTY_STATE)
    wrong_type = ChangeEvent(b"opponents:alice", KeyType.HASH, Op.UPSERT, Origin.LIVE, 1, 1, b"alice", ((b"f", b"v"),))
    with pytest.raises(MappingError, match="is a hash but rule 'opponents' maps a zset"):
        plan_writes(zrule, zvars, wrong_type, EMPTY_STATE)


def test_numbers_are_rendered_the_way_dynamodb_returns_them():
    assert canonical_number("1700000000.0") == "1700000000"
    assert canonical_number("1.50") == "1.5"
    assert canonical_number("-0.0") == "0"
    assert canonical_number("1e-3") == "0.001"
    with pytest.raises(ValueError):
        canonical_number("inf")


def _with_rule(**changes):
    data = {**MESSAGING_RULES, "rules": [dict(MESSAGING_RULES["rules"][0], **changes), MESSAGING_RULES["rules"][1]]}
    return data


@pytest.mark.parametrize(("data", "message"), [
    (_with_rule(item={"owner_id": "{owner}", "opponent_id": "{member}", "timestamp": "{scor}"}),
     "rules[0].item.timestamp: unknown placeholder {scor} (known: owner, member, score, key)"),
    (_with_rule(item={"owner_id": "{owner}", "opponent_id": "x{owner}", "timestamp": "{score}"}),
     "rules[0].item: a zset rule makes one item per member"),
    (_with_rule(item={"owner_id": "{member}", "opponent_id": "{owner}", "timestamp": "{score}"}),
     "rules[0].item.owner_id: the partition key may only use variables of match"),
    (_with_rule(item={"owner_id": "{owner}", "opponent_id": "{member}", "metadata": "{score}"}),
     "rules[1].item.metadata: attribute is also written by rule 'opponents'"),
    (_with_rule(match="opponents"), "rules[0].match: 'opponents' has no placeholder"),
    (_with_rule(name="meta"), "rules[1].name: rule name 'meta' is already used by rules[0]"),
    (_with_rule(item={"owner_id": "{owner}", "opponent_id": "{member}", "_v_x": "{score}"}),
     "rules[0].item._v_x: attribute names starting with _v_/_deleted_"),
])
def test_rule_mistakes_are_config_errors_naming_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_string_rules_must_keep_every_variable_in_the_item_key():
    data = {**MESSAGING_RULES, "rules": [{"match": "meta:{owner}:{opponent}", "type": "string", "table": "messaging",
                                          "item": {"owner_id": "{owner}", "opponent_id": "x", "metadata": "{value}"}}]}
    with pytest.raises(ConfigError, match=r"variable \{opponent\} of match is not in the item key"):
        parse_config(data)


def test_notification_flags_follow_the_rules():
    from replicator.adapters.redis.notifications import missing_flags, required_flags

    rules = messaging()
    assert required_flags(rules) == "Kg$lshzxe"  # the mirror takes every type
    assert missing_flags("AKE", rules) == ""
    assert missing_flags("Kz", rules) == "g$lshxe"
    only_zset = parse_config({**MESSAGING_RULES, "rules": MESSAGING_RULES["rules"][:1], "default": None})

    assert required_flags(only_zset.rule_set) == "Kgzxe"


def test_single_item_rules_are_reversible_so_a_gap_reconcile_finds_their_redis_keys():
    rules = messaging()
    meta = rules.match(b"meta:alice:bob")[0]
    assert meta.source_key({"owner_id": S("alice"), "opponent_id": S("bob")}.items()) == b"meta:alice:bob"
    assert rules.mirror.source_key({"key": B(b"any\xffkey")}.items()) == b"any\xffkey"


def test_an_item_read_back_gives_the_variables_it_was_rendered_from():
    rules = messaging()
    zset = rules.match(b"opponents:alice")[0]
    meta = rules.match(b"meta:alice:bob")[0]
    key = (("opponent_id", S("bob")), ("owner_id", S("alice")))
    assert zset.unrender("timestamp", N("1.5")) == {"score": b"1.5"}  # numbers compare as their text
    assert meta.unrender("metadata", S("hello")) == {"value": b"hello"}
    assert zset.unrender("no_such_attribute", S("x")) is None
    assert zset.unrender_key(key) == {"owner": b"alice", "member": b"bob"}
    assert zset.unrender_key(key, {"owner": b"alice"}) == {"owner": b"alice", "member": b"bob"}
    assert zset.unrender_key(key, {"owner": b"carol"}) is None  # another key's item
    assert zset.owns(key, {"owner": b"alice"}) and not zset.owns(key, {"owner": b"carol"})
    assert not zset.owns((("other", S("x")),), {"owner": b"alice"})  # an attribute the rule does not write
    assert meta.source_key(iter(key)) == b"meta:alice:bob"


def test_an_item_that_does_not_fit_the_templates_has_no_source_key():
    rules = parse_config({**MESSAGING_RULES, "rules": [
        {"match": "user:{id}", "type": "string", "table": "messaging",
         "item": {"owner_id": "u#{id}", "opponent_id": "profile", "metadata": "{value}"}}]})
    rule = rules.rule_set.rules[0]
    assert rule.source_key((("owner_id", S("u#7")), ("opponent_id", S("profile")))) == b"user:7"
    assert rule.source_key((("owner_id", S("v#7")), ("opponent_id", S("profile")))) is None
    assert rule.source_key((("owner_id", S("u#7")), ("opponent_id", S("other")))) is None


def test_big_values_split_into_chunks_under_the_byte_budget_and_in_order():
    from replicator.adapters.redis.reader import split_value

    members = tuple((f"m{i:05d}".encode(), float(i)) for i in range(1000))
    pieces = split_value(members, 1024)
    assert len(pieces) > 5 and tuple(m for piece in pieces for m in piece) == members
    assert all(sum(len(m) + 16 for m, _ in piece) <= 1024 for piece in pieces)
    assert b"".join(split_value(b"x" * 2500, 1024)) == b"x" * 2500
    assert split_value(b"small", 1024) == [b"small"]
