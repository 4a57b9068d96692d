"""preflight's rules on the values read: pure."""

from __future__ import annotations

from replicator.core.config import parse_config
from replicator.tools.preflight import check_notifications, check_partitions, check_pubsub_buffer, check_table
from tests.unit.rules import MESSAGING_RULES

RULES = parse_config(MESSAGING_RULES).rule_set
SPEC = RULES.tables["messaging"]


def _table(lsi_attr="timestamp", lsi_type="N"):
    return {
        "AttributeDefinitions": [{"AttributeName": "owner_id", "AttributeType": "S"},
                                 {"AttributeName": "opponent_id", "AttributeType": "S"},
                                 {"AttributeName": lsi_attr, "AttributeType": lsi_type}],
        "KeySchema": [{"AttributeName": "owner_id", "KeyType": "HASH"},
                      {"AttributeName": "opponent_id", "KeyType": "RANGE"}],
        "LocalSecondaryIndexes": [{"IndexName": "by_timestamp", "KeySchema": [
            {"AttributeName": "owner_id", "KeyType": "HASH"}, {"AttributeName": lsi_attr, "KeyType": "RANGE"}]}],
    }


def test_flags_fix_is_the_exact_value_to_set():
    finding = check_notifications("n", "xE", RULES)
    assert finding.level == "blocker" and "CONFIG SET notify-keyspace-events KEg$lshzxe" in finding.line()
    assert check_notifications("n", "AKE", RULES).level == "ok"
    assert check_notifications("n", None, RULES).level == "warning"


def test_a_buffer_big_enough_for_the_burst_passes():
    limits = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"
    assert check_pubsub_buffer("n", limits, 1000, 40).level == "ok"
    assert check_pubsub_buffer("n", limits, 100_000, 40).level == "warning"
    assert check_pubsub_buffer("n", "pubsub 32mb 8mb 60", 1000, 40).level == "ok"


def test_tables_lsis_and_partitions():
    assert check_table(SPEC, _table(), create_tables=False).level == "ok"
    wrong = check_table(SPEC, _table(lsi_attr="ts"), create_tables=False)
    assert wrong.level == "blocker" and "LSI 'by_timestamp' sorts by 'ts'" in wrong.what
    assert check_table(SPEC, None, create_tables=True).level == "ok"
    assert check_partitions("t", 4, 9, 12).level == "warning"
    assert check_partitions("t", 12, 9, 12).level == "ok"


def test_clock_skew_between_primaries_is_a_warning_naming_both_nodes():
    from replicator.tools.preflight import check_clock_skew

    found = check_clock_skew({"a:1": 3.0, "b:2": 180.0, "c:3": -2.0}, uncertainty_ms=1.0)
    assert found.level == "warning"
    assert "b:2 (ahead) and c:3" in found.what and "stale" in found.why
    assert check_clock_skew({"a:1": 3.0, "b:2": 20.0}).level == "ok"
    assert check_clock_skew({"a:1": 5000.0}).level == "warning"  # one node, far off this machine


def test_a_missing_mirror_parts_table_is_a_blocker_naming_it():
    parts = RULES.parts_table
    assert parts is not None and parts.name == "redis_mirror_parts"
    found = check_table(parts, None, create_tables=False)
    assert found.level == "blocker" and "redis_mirror_parts" in found.what
    described = {"AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "B"},
                                          {"AttributeName": "part", "AttributeType": "S"}],
                 "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"},
                               {"AttributeName": "part", "KeyType": "RANGE"}]}
    assert check_table(parts, described, create_tables=False).level == "ok"
