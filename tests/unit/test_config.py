"""Config loading: YAML, env overrides, one-line errors, masked secrets."""

from __future__ import annotations

import pytest

from replicator.core.config import mask_url
from replicator.core.errors import ConfigError
from replicator.loading import load_config


def test_env_vars_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  topic: from-file\n  partitions: 3\n")
    config = load_config(path, environ={"REPLICATOR_KAFKA_TOPIC": "from-env", "REPLICATOR_REDIS_URL": "redis://r:1/2"})
    assert config.kafka.topic == "from-env"
    assert config.kafka.partitions == 3
    assert config.redis.url == "redis://r:1/2"


def test_errors_are_one_line_with_the_field_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("apply:\n  write_concurrency: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{path}: apply.write_concurrency: Input should be greater than or equal to 1"


def test_a_non_mapping_file_is_rejected_clearly(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections at the top, got list"):
        load_config(path, environ={})


def test_secrets_never_appear_in_the_masked_dump():
    config = load_config(None, environ={"REPLICATOR_REDIS_URL": "redis://app:hunter2@r:6379/0",
                                        "REPLICATOR_KAFKA_SASL_PASSWORD": "s3cret",
                                        "REPLICATOR_DYNAMODB_SECRET_ACCESS_KEY": "k3y"})
    dumped = repr(config.masked())
    assert "hunter2" not in dumped and "s3cret" not in dumped and "k3y" not in dumped
    assert mask_url("redis://app:hunter2@r:6379/0") == "redis://app:***@r:6379/0"


def test_dynamodb_local_access_key_must_be_alphanumeric():
    with pytest.raises(ConfigError, match=r"dynamodb\.access_key_id: .*alphanumeric"):
        load_config(None, environ={"REPLICATOR_DYNAMODB_ACCESS_KEY_ID": "not-alnum"})


def test_a_capture_shard_outside_the_shard_count_is_rejected_naming_both():
    with pytest.raises(ConfigError, match=r"capture: .*shard is 2 but must be below shards \(2\)"):
        load_config(None, environ={"REPLICATOR_CAPTURE_SHARDS": "2", "REPLICATOR_CAPTURE_SHARD": "2"})


def test_nested_env_vars_reach_any_field_and_win_over_the_section_field_form(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tables:\n  messaging:\n    partition_key: owner_id\n    sort_key: opponent_id\n")
    config = load_config(path, environ={
        "REPLICATOR_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "REPLICATOR_REDIS_URL": "redis://old:1/0", "REPLICATOR_REDIS__URL": "redis://new:1/0",
        "REPLICATOR_TABLES__MESSAGING__NAME": "messaging_v2",
        "REPLICATOR_CAPTURE__RECONNECT_BACKOFF_S": "[0.5, 5]",
        "REPLICATOR_DEFAULT__TABLE": "mirror_table",
        "REPLICATOR_STACK_HOME": "/not/a/config/field",
    })
    assert config.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert config.redis.url == "redis://new:1/0"
    assert config.tables["messaging"].name == "messaging_v2"
    assert config.tables["messaging"].partition_key == "owner_id"  # the file's other keys stay
    assert config.capture.reconnect_backoff_s == (0.5, 5.0)
    assert config.default is not None and config.default.table == "mirror_table"


def test_a_misspelled_nested_env_var_is_a_one_line_error_naming_the_field():
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"REPLICATOR_KAFKA__TOPICC": "x"})
    assert str(info.value) == "environment: kafka.topicc: unknown field (check its spelling and section)"


def test_a_complex_env_value_that_is_not_json_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"^environment: .*capture.*take JSON") as info:
        load_config(None, environ={"REPLICATOR_CAPTURE__RECONNECT_BACKOFF_S": "0.5,5"})
    assert "\n" not in str(info.value)


def test_an_env_var_for_a_section_the_file_holds_as_a_scalar_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kafka: 5\n")
    with pytest.raises(ConfigError, match=r"^kafka: expected a mapping, got int$"):
        load_config(path, environ={"REPLICATOR_KAFKA_TOPIC": "t"})
