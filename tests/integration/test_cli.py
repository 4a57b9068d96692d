"""The command line: one-line errors for bad config, and the pieces runnable on their own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from replicator.core.config import parse_config
from replicator.local.demo import Workload
from tests.support import clean_redis, messaging_config_data, topic_records


def _run(args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "replicator", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


GOOD_RULES = {
    "tables": {"messaging": {"partition_key": "owner_id", "sort_key": "opponent_id"}},
    "rules": [{"match": "opponents:{owner}", "type": "zset", "table": "messaging",
               "item": {"owner_id": "{owner}", "opponent_id": "{member}", "timestamp": "{score}"}}],
}


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda c: c["rules"][0]["item"].update(timestamp="{scor}"),
     "rules[0].item.timestamp: unknown placeholder {scor} (known: owner, member, score, key)"),
    (lambda c: c.update(kafka={"partitions": "many"}), "kafka.partitions: Input should be a valid integer"),
    (lambda c: c.update(redis={"url": "http://localhost"}), "redis.url: expected redis://host:port/db"),
    (lambda c: c["rules"][0].update(table="nope"), "rules[0].table: unknown table 'nope' (known: messaging)"),
    (lambda c: c.update(kafak={}), "kafak: unknown field"),
    (lambda c: c["rules"][0]["item"].pop("opponent_id"), "rules[0].item: missing the table's key attribute"),
])
def test_malformed_config_gives_one_line_error_naming_the_field(tmp_path, mutate, expected):
    config = yaml.safe_load(yaml.safe_dump(GOOD_RULES))
    mutate(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _run(["listen", "--config", str(path)])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"replicator: error: {path}: ")
    assert expected in lines[0]


def test_env_override_is_validated_like_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(GOOD_RULES))
    result = _run(["apply", "--config", str(path)], env={"REPLICATOR_KAFKA_PARTITIONS": "lots"})
    assert result.returncode == 2
    assert "kafka.partitions: Input should be a valid integer" in result.stderr.strip()


def test_missing_and_unparsable_config_files_are_one_line_errors(tmp_path):
    absent = tmp_path / "absent.yaml"
    missing = _run(["snapshot", "--config", str(absent)])
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"replicator: error: config file {absent}: No such file or directory"
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - match: [unclosed\n")
    result = _run(["snapshot", "--config", str(broken)])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "line 3" in result.stderr


def test_snapshot_command_publishes_every_key_from_its_config_file(stack, uid, tmp_path):
    r = clean_redis(stack)
    Workload(r, owners=10).seed(opponents=3)
    data = messaging_config_data(stack, uid)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    result = _run(["snapshot", "--config", str(path)])
    assert result.returncode == 0, result.stderr[-2000:]
    keys = r.dbsize()
    assert f"snapshot: {keys} keys scanned, {keys} events published" in result.stdout
    assert len(topic_records(parse_config(data))) == keys


def test_the_readme_demo_replicates_end_to_end_on_its_own_embedded_stack():
    """The README's first command: its own redis-server, Kafka and DynamoDB Local, stores compared, exit 0."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "DYNAMODB_ENDPOINT_URL")}
    result = subprocess.run([sys.executable, "-m", "replicator", "demo"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "DynamoDB LSI vs Redis ZREVRANGE: identical" in result.stdout
    assert 'replicator_dynamodb_requests_total{operation="BatchExecuteStatement"}' in result.stdout
    # A report for a person: the pipeline's JSON logs go to the file the demo names first, not between its lines.
    assert [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")] == []
    log_file = Path(re.search(r"^logs of this run \(JSON lines\): (.+)$", result.stdout, re.M).group(1))
    loggers = {json.loads(line)["logger"] for line in log_file.read_text().splitlines()}
    assert loggers >= {"replicator.apply.applier", "replicator.capture.listener"}
