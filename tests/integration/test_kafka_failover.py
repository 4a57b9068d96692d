"""A broker leader dies mid-write on a 3-broker KRaft cluster (replication factor 3, min.insync.replicas=2).

While the listener publishes live writes and the applier applies them -- and lags, because the table is slow -- the
broker leading most of the change topic's partitions is killed with SIGKILL (it may also hold the group coordinator
or the active controller). Writes go on while it is down; it comes back later. Afterwards DynamoDB equals Redis
completely, nothing was dead-lettered, and the group has committed to the end of every partition -- on the killed
broker's partitions, past where they ended when it died.
"""

from __future__ import annotations

import time
from collections import Counter

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from replicator.adapters.kafka import broker
from replicator.adapters.kafka.offsets import GroupOffsets
from replicator.core.watermark import Watermark
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    committed_and_end,
    ddb,
    dead_letter_records,
    eventually,
    fully_committed,
    messaging_config,
    writing,
)


def _leaders(config) -> dict[int, int]:
    """Partition -> leader broker id; {} while the cluster does not answer (a client may try the dead broker)."""
    try:
        admin = KafkaAdminClient(**broker.client_kwargs(config.kafka))
        try:
            (described,) = admin.describe_topics([config.kafka.topic])
            return {p["partition_index"]: p["leader_id"] for p in described["partitions"]}
        finally:
            admin.close()
    except KafkaError:
        return {}


def test_killing_the_partition_leader_mid_write_loses_nothing(stack, uid, kafka_cluster):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid, kafka={
        "bootstrap_servers": kafka_cluster, "topic": f"changes.{uid}", "group_id": f"apply-{uid}", "partitions": 6,
        "replication_factor": 3, "min_insync_replicas": 2})
    with Running(config) as run:
        run.start_applier().start_listener()
        # DynamoDB Local answers fast whatever the load: 30 ms more per applier request makes it lag behind the
        # writes, as an applier does on a busy table, so events are in flight on both sides of the broker.
        run.applier._sink.writer.client.meta.events.register("before-send.dynamodb", lambda **_: time.sleep(0.03))
        with writing(stack, owners=25, seed=31) as steps:
            eventually(lambda: steps[0] > 300, 60, message="writes under way")
            offsets = GroupOffsets(config.kafka, config.kafka.topic, config.kafka.group_id)
            eventually(lambda: Watermark(offsets.end()).remaining(offsets.committed()) > 50, 60,
                       message="the applier more than 50 events behind the writes")
            leaders = _leaders(config)
            victim_id = Counter(leaders.values()).most_common(1)[0][0]
            victim = stack.kafka_cluster_node(victim_id)
            failed_over = [p for p, leader in leaders.items() if leader == victim_id]
            end_at_kill = offsets.end()
            offsets.close()
            stack.kill(victim)
            killed_at = steps[0]
            eventually(lambda: (now := _leaders(config)) and all(leader not in (victim_id, -1)
                                                                  for leader in now.values()), 60,
                       message="new leaders elected for the killed broker's partitions")
            eventually(lambda: steps[0] > killed_at + 300, 60, message="writes while the broker is down")
            stack.revive(victim)
            revived_at = steps[0]
            eventually(lambda: steps[0] > revived_at + 100, 60, message="writes after the broker came back")
        assert_converged(r, client, config, timeout=180)
        eventually(lambda: fully_committed(config), 60, message="every partition committed to its end")
        # The partitions that lost their leader took writes under the new one, and the group applied and committed
        # past the point of the crash: the failover carried on, it did not just leave the old records behind.
        committed, _end = committed_and_end(config)
        assert sum(committed[p] or 0 for p in failed_over) > sum(end_at_kill[p] for p in failed_over), (
            failed_over, end_at_kill, committed)
    assert dead_letter_records(config) == []
