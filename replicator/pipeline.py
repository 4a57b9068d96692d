"""Assembling the stages from a Config: the one place that creates clients, shared by the CLI, the demo and tests."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from kafka import KafkaConsumer
from redis.cluster import RedisCluster

from replicator.adapters.dynamodb.calls import make_client
from replicator.adapters.dynamodb.cutover import ControlStore, NativeGroups, PlanWatch
from replicator.adapters.dynamodb.store import DynamoStore, DynamoWriter
from replicator.adapters.dynamodb.tables import check_tables, create_tables
from replicator.adapters.kafka import broker
from replicator.adapters.kafka.consumer import GroupConsumer
from replicator.adapters.kafka.dead_letters import DeadLetters
from replicator.adapters.kafka.offsets import GroupOffsets
from replicator.adapters.kafka.producer import EventPublisher
from replicator.adapters.redis.cluster import cluster_client, is_cluster, primaries
from replicator.adapters.redis.notifications import ensure_notifications
from replicator.adapters.redis.reader import KeyCapture
from replicator.apply.applier import Applier
from replicator.capture.cluster_listener import ClusterListener
from replicator.capture.listener import Collaborators, Listener
from replicator.capture.reconcile import PendingReconciles, Reconciler
from replicator.core.batching import batches
from replicator.core.config import Config, mask_url
from replicator.core.cutover import Plan, VerifyRecord
from replicator.core.errors import ReplicatorError, SourceError
from replicator.core.events import Origin
from replicator.core.mapping import RuleSet
from replicator.snapshot.checkpoints import Checkpoints
from replicator.snapshot.loader import SnapshotLoader, scan_and_capture
from replicator.tools import preflight
from replicator.tools.cutover import Cutover, Rebasing
from replicator.tools.status import group_status
from replicator.tools.verify import Verifier, VerifyOptions

log = logging.getLogger(__name__)


@dataclass
class Context:
    """A config with its compiled rules. The broker's version is checked once, before the first Kafka client is made
    (plan never needs Kafka), so that a broker older than the minimum fails at start with one line."""

    config: Config
    rules: RuleSet
    _broker: broker.BrokerInfo | None = None

    def check_broker(self) -> broker.BrokerInfo:
        """Connect to Kafka and check the broker's version, once per context (BrokerError when it is too old or
        does not answer); the broker's description."""
        if self._broker is None:
            self._broker = broker.check_broker(self.config.kafka)
        return self._broker


def context(config: Config) -> Context:
    return Context(config, config.rule_set)


#: Every Redis client the replicator opens: binary-safe, kept alive, checked when idle.
_REDIS_OPTIONS: dict[str, Any] = {"decode_responses": False, "socket_keepalive": True, "health_check_interval": 30}


def group_offsets(ctx: Context) -> GroupOffsets | None:
    """The applier group's progress on the change topic, or None (with a warning) when Kafka does not answer.

    For tools that are better with it but work without it (verify waits on it before calling a difference drift).
    """
    kafka = ctx.config.kafka
    try:
        ctx.check_broker()
        return GroupOffsets(kafka, kafka.topic, kafka.group_id)
    except ReplicatorError as exc:
        log.warning("cannot read the applier group's offsets", extra={"kv": {"error": str(exc)}})
        return None


def redis_client(config: Config) -> tuple[Any, str, int]:
    """A binary-safe client (a RedisCluster when the server runs in cluster mode), the node's name, the db number."""
    url = config.redis.url
    options = config.redis_kwargs()
    client = redis.Redis.from_url(url, **_REDIS_OPTIONS, **options)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SourceError(f"cannot reach Redis at {mask_url(url)}: {exc}; check redis.url / REPLICATOR_REDIS_URL",
                          retryable=not isinstance(exc, redis.AuthenticationError)) from None
    parts = urlsplit(url)
    node = config.redis.node_name or f"{parts.hostname}:{parts.port or 6379}"
    db = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
    if is_cluster(client):
        client.close()
        return cluster_client(url, **options), config.redis.node_name or f"cluster:{node}", 0
    return client, node, db


def publisher(ctx: Context) -> EventPublisher:
    """A new publisher to the change topic (made sure to exist): the caller, who creates it, closes it."""
    ctx.check_broker()
    broker.ensure_topic(ctx.config.kafka, ctx.config.kafka.topic, ctx.config.kafka.partitions)
    return EventPublisher(ctx.config.kafka)


def listener(ctx: Context) -> Listener | ClusterListener:
    client, node, db = redis_client(ctx.config)
    nodes = primaries(client) if isinstance(client, RedisCluster) else [(node, client)]
    for _name, conn in nodes:  # notification settings are per node
        ensure_notifications(conn, ctx.rules, ctx.config.redis.configure_notifications)
    # What `replicator preflight` says about Redis (clock skew across every primary included).
    for finding in preflight.redis_findings(client, ctx.rules, None, node):
        if finding.level != "ok":
            log.warning("preflight", extra={"kv": {"finding": finding.line()}})

    def prepare(conn: redis.Redis) -> None:  # again before every subscription: a restarted Redis lost CONFIG SETs
        ensure_notifications(conn, ctx.rules, ctx.config.redis.configure_notifications)

    def resnapshot(conn: redis.Redis, capture: KeyCapture, should_stop: Callable[[], bool]) -> tuple[int, int]:
        """A gap's re-snapshot of one node: the snapshot stage's scan, handed to capture (which does not import it)."""
        return scan_and_capture(conn, ctx.rules, capture, ctx.config.capture.batch_size, should_stop=should_stop)

    reconciler = None
    if ctx.config.capture.resnapshot_on_gap:
        # Reading DynamoDB from the listener is what lets a gap's deletions be found, once the applier group has
        # committed past the gap's watermark (see capture/reconcile.py).
        ddb = dynamodb(ctx)
        state_table = ctx.config.dynamodb.state_table
        kafka = ctx.config.kafka
        reconciler = Reconciler(lambda: DynamoStore(ddb, state_table).live_source_keys(ctx.rules),
                                GroupOffsets(kafka, kafka.topic, kafka.group_id),
                                PendingReconciles(ddb, state_table))

    collaborators = Collaborators(ctx.rules, resnapshot, reconciler, prepare)
    # The stage calls publisher(ctx) while it is built, and closes what it created when it stops running.
    if isinstance(client, RedisCluster):
        options = ctx.config.redis_kwargs()

        def node_client(host: str, port: int) -> redis.Redis:
            return redis.Redis(host=host, port=port, ssl=urlsplit(ctx.config.redis.url).scheme == "rediss",
                               **_REDIS_OPTIONS, **options)

        return ClusterListener(client, lambda: publisher(ctx), ctx.config.capture, node_client, collaborators)
    return Listener(client, lambda: publisher(ctx), ctx.config.capture, node, db, collaborators)


def snapshot_loader(ctx: Context, max_keys_per_second: float | None = None,
                    checkpoint_every: int = 10_000) -> SnapshotLoader:
    client, node, db = redis_client(ctx.config)
    capture = ctx.config.capture
    scope = f"shard {capture.shard} of {capture.shards}" if capture.shards > 1 else ""
    checkpoints = Checkpoints(dynamodb(ctx), ctx.config.dynamodb.state_table, scope)
    return SnapshotLoader(client, ctx.rules, lambda: publisher(ctx), node, db, ctx.config.capture,
                          checkpoints=checkpoints, max_keys_per_second=max_keys_per_second,
                          checkpoint_every=checkpoint_every)


def dynamodb(ctx: Context) -> Any:
    client = make_client(ctx.config.dynamodb)
    if ctx.config.dynamodb.create_tables:
        create_tables(client, ctx.rules, ctx.config.dynamodb.state_table)
    else:
        check_tables(client, ctx.rules, ctx.config.dynamodb.state_table)
    return client


def applier(ctx: Context, group_id: str | None = None) -> Applier:
    cfg = ctx.config
    client = dynamodb(ctx)
    ctx.check_broker()
    broker.ensure_topic(cfg.kafka, cfg.kafka.topic, cfg.kafka.partitions)
    static = cfg.kafka.group_instance_id is not None and group_id is None
    consumer = KafkaConsumer(
        **broker.client_kwargs(cfg.kafka),
        group_id=group_id or cfg.kafka.group_id,
        # Static membership: a pod restarted within the session timeout gets its partitions back without a
        # rebalance; the session is longer then, to cover a restart (a crashed pod's partitions wait that long).
        group_instance_id=cfg.kafka.group_instance_id if static else None,
        session_timeout_ms=45_000 if static else 10_000,
        heartbeat_interval_ms=2_000,
        # Eager assignment (kafka-python's default), not cooperative-sticky: with kafka-python 3.0.12 the
        # cooperative follow-up rebalance was seen to stall a consumer for minutes (tests). Restarts and rolling
        # updates do not rebalance at all under static membership, which is where incremental assignment mattered.
        # Partitions added to the topic reach the group within 30 s, not the client's default 5 minutes.
        metadata_max_age_ms=30_000,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=cfg.apply.max_batch,
    )
    writer = DynamoWriter(client, ctx.rules, cfg.tombstones, cfg.dynamodb.state_table)
    dead_letters = DeadLetters(cfg.kafka, cfg.kafka.topic)
    plan = PlanWatch(ControlStore(client, cfg.dynamodb.state_table),
                     cfg.cutover.refresh_s)
    return Applier(GroupConsumer(consumer, cfg.kafka.topic), writer, ctx.rules, cfg.apply, dead_letters,
                   lag_interval_s=cfg.metrics.lag_interval_s, plan=plan.current)


def cutover(ctx: Context, out: Callable[[str], None] = print) -> Cutover:
    """The operator's cutover steps: the control record, the clients' heartbeats, Redis (for the switch's markers),
    the applier group's progress, and for ``back`` the verifier, the native groups and a publisher of repairs."""
    cfg = ctx.config
    client, node, db = redis_client(cfg)
    ddb = dynamodb(ctx)
    offsets = group_offsets(ctx)

    def drifted(owners: Callable[[bytes], bool]) -> list[bytes]:
        verifier = Verifier(client, ddb, ctx.rules, cfg.dynamodb.state_table, cfg.capture.max_inline_members, node,
                            db, progress=offsets)
        report = verifier.run(VerifyOptions(owners=owners, settle_s=0.5, rechecks=2))
        if report.errors:
            raise ReplicatorError(f"comparing Redis with DynamoDB failed: {report.errors[0]}")
        return report.drifted_keys + report.unsettled_keys

    control = ControlStore(ddb, cfg.dynamodb.state_table)
    rebasing = Rebasing(drifted, NativeGroups(ddb, ctx.rules, cfg.dynamodb.state_table),
                        lambda keys: repair(ctx, client, node, db, keys))
    def extras() -> tuple[int | None, int | None]:
        dead = reconciles = None
        with contextlib.suppress(Exception):  # status shows what it can read
            kafka = cfg.kafka
            dead = group_status(kafka, kafka.group_id, kafka.topic).dead_letters
        with contextlib.suppress(Exception):
            reconciles = len(PendingReconciles(ddb, cfg.dynamodb.state_table).list())
        return dead, reconciles

    return Cutover(control, offsets, client, out, rebasing=rebasing, extras=extras)


def repair(ctx: Context, client: Any, node: str, db: int, keys: list[bytes]) -> int:
    """Publish ``keys``' current Redis states as REPAIR events (whatever capture shard a listener of this config runs
    as); returns how many, every one acknowledged by Kafka."""
    publisher_ = publisher(ctx)
    try:
        capture = KeyCapture(client, ctx.rules, publisher_, node, db,
                             ctx.config.capture.model_copy(update={"shard": 0, "shards": 1}))
        return sum(capture.capture(batch, Origin.REPAIR) for batch in batches(keys, 500))
    finally:
        publisher_.close()  # flushes: every repair event is acknowledged by Kafka before we say so


def note_verify(ctx: Context, record: VerifyRecord) -> None:
    """Keep a verify run for `cutover status`; a failure to keep it is logged, the run's own result stands."""
    try:
        ControlStore(dynamodb(ctx), ctx.config.dynamodb.state_table).note_verify(record)
    except ReplicatorError as exc:
        log.warning("cannot record the verify run for cutover status", extra={"kv": {"error": str(exc)}})


def cutover_plan(ctx: Context) -> Plan:
    """The cutover plan now (every owner on Redis when none was ever written)."""
    cfg = ctx.config
    return ControlStore(dynamodb(ctx), cfg.dynamodb.state_table).plan()
