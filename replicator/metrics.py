"""Prometheus metrics, defined once at module level. Names and labels are listed in the README (Operating it: Metrics).

Labels are low-cardinality (node, origin, table, result, reason, topic, partition): never keys or owners.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CAPTURED = Counter("replicator_events_captured_total", "Key states read from Redis.", ["node", "origin"])
CAPTURE_SKIPPED = Counter(
    "replicator_capture_skipped_total", "Keys read but not published, by reason (unsupported_type: a stream).",
    ["node", "reason"],
)
NOTIFICATION_GAPS = Counter(
    "replicator_notifications_gaps_total", "Times keyspace notifications may have been lost.", ["node", "reason"]
)
GAP_RESNAPSHOTS = Counter(
    "replicator_gap_resnapshots_total",
    "Re-snapshots and reconciles completed after gaps (each heals the gaps before it).", ["node"],
)
RECONCILE_PENDING = Gauge(
    "replicator_reconcile_pending",
    "1 while a gap's reconcile waits for the applier group to commit past the gap's watermark.", ["node"],
)
RECONCILE_WAITING_EVENTS = Gauge(
    "replicator_reconcile_waiting_events",
    "Events the applier group must still commit before the pending reconcile can run.", ["node"],
)
EVENTS_PUBLISHED = Counter("replicator_events_published_total", "Change events acknowledged by Kafka.")
PUBLISH_ERRORS = Counter("replicator_publish_errors_total", "Change events Kafka did not acknowledge.")
EVENTS_APPLIED = Counter(
    "replicator_events_applied_total",
    "Change events consumed, by result: applied, tombstoned, stale (older than what DynamoDB holds), superseded "
    "(a newer state of the same key was in the same batch).",
    ["table", "result"],
)
ITEM_WRITES = Counter("replicator_item_writes_total", "Conditional item writes, by result.", ["table", "result"])
APPLY_BATCH_SECONDS = Histogram(
    "replicator_apply_batch_seconds", "Time to apply one polled batch, commit included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
END_TO_END_LATENCY = Histogram(
    "replicator_end_to_end_latency_seconds", "Apply time minus capture time, per applied event.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
DYNAMODB_REQUESTS = Counter(
    "replicator_dynamodb_requests_total", "DynamoDB API calls made (botocore's own retries not counted), by operation.",
    ["operation"],
)
RETRIES = Counter(
    "replicator_retries_total",
    "Retries after a failure outside the data, by operation (the policies of replicator/retry.py; botocore's own "
    "request retries not counted).", ["operation"],
)
DYNAMODB_THROTTLES = Counter("replicator_dynamodb_throttles_total", "DynamoDB throttling responses.")
DLQ_EVENTS = Counter("replicator_dlq_events_total", "Records sent to the dead-letter topic.", ["reason"])
CONSUMER_LAG = Gauge("replicator_consumer_lag", "Log end offset minus committed offset.", ["topic", "partition"])
SNAPSHOT_KEYS = Counter("replicator_snapshot_keys_total", "Keys read by the snapshot loader.")
SNAPSHOT_PROGRESS = Gauge("replicator_snapshot_progress_ratio", "Snapshot keys done / keys estimated.")
SHADOW_READS = Counter(
    "replicator_shadow_reads_total", "Shadow reads (Redis answer compared with DynamoDB's), by result.",
    ["command", "result"],
)
CUTOVER_HOLD_SECONDS = Histogram(
    "replicator_cutover_hold_seconds", "How long a write to an owner being switched was held.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
CUTOVER_MIRROR_FAILURES = Counter(
    "replicator_cutover_mirror_failures_total", "Writes DynamoDB took for a switched owner that Redis did not.",
)
VERIFY_DRIFT_KEYS = Gauge("replicator_verify_drift_keys", "Keys that differ between Redis and DynamoDB.", ["kind"])

