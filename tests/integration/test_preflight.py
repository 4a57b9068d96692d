"""preflight: each misconfiguration is one line naming what, why and the fix; blockers set the exit code."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from replicator.adapters.kafka import broker
from replicator.local.stack import free_port
from tests.support import answers, config_file, ddb, eventually, messaging_config, messaging_table, run_cli

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own: its settings are changed on purpose."""
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    eventually(lambda: answers(client), 20, message="redis-server up")
    yield client, f"redis://127.0.0.1:{port}/0"
    server.kill()
    server.wait(10)


def _preflight(stack, uid, tmp_path, url, *args, **sections):
    path = config_file(stack, uid, tmp_path, redis={"url": url, "configure_notifications": False}, **sections)
    return run_cli("preflight", "--config", str(path), *args)


def test_a_well_configured_setup_passes(stack, uid, tmp_path, own_redis):
    client, url = own_redis
    client.config_set("notify-keyspace-events", "KEA")
    result = _preflight(stack, uid, tmp_path, url, "--all", "--appliers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 blocker(s), 0 warning(s)"
    assert "notify-keyspace-events 'AKE' includes" in result.stdout


def test_each_misconfiguration_is_one_line_with_the_fix(stack, uid, tmp_path, own_redis):
    client, url = own_redis
    client.config_set("notify-keyspace-events", "Ex")
    client.config_set("client-output-buffer-limit", "pubsub 100000 50000 60")
    client.config_set("maxmemory-policy", "allkeys-lru")
    # A table whose key schema is not what the rules write (owner_id as a number, no sort key, no LSI).
    config = messaging_config(stack, uid)
    table = messaging_table(config)
    # A change topic someone created by hand: compacted, kept for an hour.
    admin = KafkaAdminClient(**broker.client_kwargs(config.kafka))
    admin.create_topics([NewTopic(config.kafka.topic, 4, 1, topic_configs={
        "cleanup.policy": "compact", "retention.ms": "3600000"})])
    admin.close()
    ddb(stack).create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "owner_id", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "owner_id", "AttributeType": "N"}])

    result = _preflight(stack, uid, tmp_path, url, "--write-rate", "5000", "--appliers", "9",
                        dynamodb={"create_tables": False})
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    node = url.removeprefix("redis://").removesuffix("/0")

    def line(start):
        (found,) = [x for x in lines if x.startswith(start)]
        return found

    flags = line(f"BLOCKER  {node}: notify-keyspace-events is ")
    assert "never replicated" in flags and "fix: CONFIG SET notify-keyspace-events" in flags
    assert "parameter-group setting" in flags
    buffer = line(f"WARNING  {node}: a 10s listener stall at 5,000 writes/s")
    assert "pubsub hard limit 100,000 B" in buffer and "fix: CONFIG SET client-output-buffer-limit" in buffer
    assert "deleted from DynamoDB too" in line(f"WARNING  {node}: maxmemory-policy is allkeys-lru")
    partitions = broker.existing_topic_partitions(config.kafka, config.kafka.topic)
    assert f"{9 - partitions} applier(s) would own no partition" in line(
        f"WARNING  topic 'changes.{uid}' has {partitions} partitions for 9 appliers")
    compacted = line(f"BLOCKER  topic 'changes.{uid}': cleanup.policy=compact — compaction keeps one event per owner")
    assert compacted.endswith(f"fix: kafka-configs --alter --entity-type topics --entity-name changes.{uid} "
                              "--add-config cleanup.policy=delete")
    assert "less than 24 h of events to replay from" in line(f"WARNING  topic 'changes.{uid}': retention.ms=3600000")
    schema = line(f"BLOCKER  table {table} has key schema HASH owner_id (N), the rules write HASH owner_id (S), "
                  "RANGE opponent_id (S)")
    assert "fix: recreate the table" in schema
    assert line(f"BLOCKER  table mirror_{uid} does not exist").endswith("or set dynamodb.create_tables: true")
    assert line(f"BLOCKER  table mirror_{uid}_parts does not exist")  # the mirror's values above the item limit
    assert lines[-1] == "5 blocker(s), 4 warning(s)" and len(lines) == 10
