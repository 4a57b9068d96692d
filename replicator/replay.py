"""Moving a consumer group's committed offsets, so the applier re-applies from there.

Re-applying is safe: every write is conditional on the source version, so old events change nothing that a newer
one wrote. The group must have no active members, or they would overwrite the new offsets with their own commits.
"""

from __future__ import annotations

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata

from replicator.broker import BrokerCapabilities, client_kwargs, topic_partitions
from replicator.config import KafkaConfig


def committed_offsets(config: KafkaConfig, caps: BrokerCapabilities, group: str, topic: str,
                      ) -> dict[int, int | None]:
    consumer = KafkaConsumer(**client_kwargs(config, caps), group_id=group, enable_auto_commit=False)
    try:
        return {tp.partition: consumer.committed(tp) for tp in topic_partitions(config, topic)}
    finally:
        consumer.close(autocommit=False)


def reset_to_earliest(config: KafkaConfig, caps: BrokerCapabilities, group: str, topic: str) -> dict[int, int]:
    """Commit each partition's earliest available offset for ``group``. Returns the new offsets."""
    consumer = KafkaConsumer(**client_kwargs(config, caps), group_id=group, enable_auto_commit=False)
    try:
        partitions = topic_partitions(config, topic)
        earliest = consumer.beginning_offsets(partitions)
        consumer.assign(partitions)
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in earliest.items()})
        return {tp.partition: offset for tp, offset in earliest.items()}
    finally:
        consumer.close(autocommit=False)
