"""``replicator preflight``: the settings that silently break a migration, checked before it starts.

Each finding is one line: what, why it matters, how to fix it. Blockers make the command exit 1; warnings do not.
Checks run on every primary of a cluster (settings are per node). Pure evaluation functions take the values read,
so each rule is unit-testable; the ``*_findings`` functions do the reading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from replicator.adapters.kafka import broker
from replicator.adapters.kafka.broker import topic_configs, unsafe_topic_settings
from replicator.adapters.redis.client import Node, RedisError, Refused, nodes
from replicator.adapters.redis.notifications import flags_to_set, missing_flags, required_flags
from replicator.core.cutover import MARK_PREFIX
from replicator.core.errors import BrokerError
from replicator.core.mapping import RuleSet, TableSpec

Level = Literal["blocker", "warning", "ok"]

#: Bytes a keyspace notification takes in a pubsub output buffer, beyond the key (channel prefix, framing).
NOTIFICATION_OVERHEAD = 60
#: How long a listener may stall (GC, a slow Kafka ack, a re-snapshot) before its buffer must hold the backlog.
STALL_SECONDS = 10


@dataclass(frozen=True)
class Finding:
    level: Level
    what: str
    why: str = ""
    fix: str = ""

    def line(self) -> str:
        parts = [f"{self.level.upper():8} {self.what}"]
        if self.why:
            parts.append(self.why)
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return " — ".join(parts)


def check_notifications(node: str, current: str | None, rules: RuleSet) -> Finding:
    need = required_flags(rules)
    if current is None:
        return Finding("warning", f"{node}: cannot read notify-keyspace-events (CONFIG is disabled)",
                       f"the listener needs at least {need!r}",
                       f"make sure the parameter group (ElastiCache) sets notify-keyspace-events to include {need}")
    missing = missing_flags(current, rules)
    if not missing:
        return Finding("ok", f"{node}: notify-keyspace-events {current!r} includes {need!r}")
    wanted = flags_to_set(current, rules)
    return Finding("blocker", f"{node}: notify-keyspace-events is {current!r}, missing {missing!r}",
                   "without these flags Redis never announces those changes and they are never replicated",
                   f"CONFIG SET notify-keyspace-events {wanted} (on ElastiCache it is a parameter-group setting, "
                   "CONFIG SET is not allowed)")


def check_pubsub_buffer(node: str, limits: str | None, writes_per_second: float | None, avg_key_bytes: float,
                        ) -> Finding:
    """``client-output-buffer-limit`` for pubsub clients vs a burst of notifications the listener cannot drain."""
    if limits is None:
        return Finding("warning", f"{node}: cannot read client-output-buffer-limit", "",
                       "check the pubsub class in the parameter group")
    fields = limits.split()
    try:
        at = fields.index("pubsub")
        hard, soft, seconds = (_bytes(v) for v in fields[at + 1: at + 4])
    except (ValueError, IndexError):
        return Finding("warning", f"{node}: unexpected client-output-buffer-limit {limits!r}")
    if writes_per_second is None:
        return Finding("ok", f"{node}: pubsub buffer limit hard {hard:,} soft {soft:,}/{seconds}s "
                             "(give --write-rate to check it against a burst)")
    burst = writes_per_second * (avg_key_bytes + NOTIFICATION_OVERHEAD) * STALL_SECONDS
    cut = [f"hard limit {hard:,} B"] if hard and burst > hard else []
    if soft and seconds and writes_per_second * (avg_key_bytes + NOTIFICATION_OVERHEAD) * seconds > soft:
        cut.append(f"soft limit {soft:,} B for {seconds}s")
    if not cut:
        return Finding("ok", f"{node}: pubsub buffer holds a {STALL_SECONDS}s burst at {writes_per_second:,.0f} "
                             "writes/s")
    return Finding("warning", f"{node}: a {STALL_SECONDS}s listener stall at {writes_per_second:,.0f} writes/s queues "
                              f"~{burst:,.0f} B of notifications, above the pubsub {' and '.join(cut)}",
                   "Redis then disconnects the listener: a gap, healed by a re-snapshot and reconcile (slow on a "
                   "big keyspace)",
                   f"CONFIG SET client-output-buffer-limit \"pubsub {max(hard, int(burst * 2))} "
                   f"{max(soft, int(burst))} 60\" (ElastiCache: parameter group)")


def check_eviction(node: str, policy: str | None) -> Finding:
    if policy is None or policy == "noeviction":
        return Finding("ok", f"{node}: maxmemory-policy {policy or 'unknown'}")
    return Finding("warning", f"{node}: maxmemory-policy is {policy}",
                   "an evicted key is announced like a deletion and is deleted from DynamoDB too",
                   "set maxmemory-policy noeviction (or raise maxmemory) for the migration, or accept that evicted "
                   "keys leave DynamoDB")


def check_partitions(topic: str, partitions: int | None, appliers: int | None, configured: int) -> Finding:
    if partitions is None:
        return Finding("ok", f"topic {topic!r} does not exist yet; it will be created with {configured} partitions")
    if appliers is not None and appliers > partitions:
        return Finding("warning", f"topic {topic!r} has {partitions} partitions for {appliers} appliers",
                       f"{appliers - partitions} applier(s) would own no partition and stay not-ready",
                       "run at most as many appliers as partitions (the chart refuses more)")
    return Finding("ok", f"topic {topic!r}: {partitions} partitions" +
                   (f" for {appliers} appliers" if appliers else ""))


def check_table(spec: TableSpec, described: dict[str, Any] | None, create_tables: bool) -> Finding:
    """The table's key schema and LSIs against what the rules write."""
    if described is None:
        if create_tables:
            return Finding("ok", f"table {spec.name} does not exist; the replicator will create it")
        return Finding("blocker", f"table {spec.name} does not exist", "every write to it would fail",
                       "create it (key schema and LSIs as the rules describe) or set dynamodb.create_tables: true")
    types = {a["AttributeName"]: a["AttributeType"] for a in described.get("AttributeDefinitions", [])}
    keys = {k["KeyType"]: k["AttributeName"] for k in described.get("KeySchema", [])}
    want = {"HASH": spec.partition_key, **({"RANGE": spec.sort_key} if spec.sort_key else {})}
    have = {kind: (name, types.get(name, "?")) for kind, name in keys.items()}
    if have != want:
        return Finding("blocker", f"table {spec.name} has key schema {_schema(have)}, the rules write {_schema(want)}",
                       "writes would fail validation or land in the wrong items",
                       "recreate the table with the rules' key schema, or change tables.<name>.partition_key/"
                       "sort_key to match it")
    indexes = {i["IndexName"]: {k["KeyType"]: k["AttributeName"] for k in i["KeySchema"]}
               for i in described.get("LocalSecondaryIndexes", [])}
    for name, (attr, attr_type) in spec.lsi.items():
        if name not in indexes:
            return Finding("blocker", f"table {spec.name} has no LSI {name!r}",
                           f"reads ordered by {attr} (replicator.read, the application) cannot use it",
                           "LSIs can only be created with the table: recreate it, or remove the lsi from the config")
        if indexes[name].get("RANGE") != attr or types.get(attr) != attr_type:
            return Finding("blocker", f"table {spec.name}: LSI {name!r} sorts by {indexes[name].get('RANGE')!r} "
                                      f"({types.get(indexes[name].get('RANGE', ''), '?')}), the rules expect "
                                      f"{attr!r} ({attr_type})",
                           "the index would not order or hold what the rules write",
                           "recreate the table with the expected LSI or fix tables.<name>.lsi")
    return Finding("ok", f"table {spec.name}: key schema and {len(spec.lsi)} LSI(s) as the rules expect")


def minimal_acl(rules: RuleSet, db: int = 0, cluster: bool = False, configure_notifications: bool = False) -> str:
    """The ACL rules (after ``ACL SETUSER <user> on >password``) the replicator needs: read-only keys, its own
    keyspace channels, scripts for the atomic reader, and the few admin reads of start-up and preflight; written,
    only the cutover's markers (``cutover switch`` sets one per primary, each listener deletes it), through a Redis 7
    selector that allows SET, PEXPIRE and DEL on the marker keys alone. Not ``%R~*``: Redis checks EVAL's keys for
    write access, which would refuse the atomic reader's script.

    PSUBSCRIBE patterns are checked literally against the user's channel patterns, so the channels are the exact
    patterns the listener subscribes to.
    """
    marks = MARK_PREFIX.decode() + "*"
    channels = " ".join(f"&__keyspace@{db}__:{glob}" for glob in (*(g.decode() for g in rules.globs()), marks))
    commands = ["-@all", "+@read", "+@connection", "+eval", "+evalsha", "+script|load", "+script|exists", "+time",
                "+psubscribe", "+punsubscribe", "+info", "+config|get", "+memory|usage"]
    if configure_notifications:
        commands.append("+config|set")
    if cluster:
        commands += ["+cluster|slots", "+cluster|shards", "+cluster|nodes", "+readonly", "+asking"]
    return f"~* resetchannels {channels} {' '.join(commands)} (~{marks} +set +pexpire +del)"


def _schema(keys: dict[str, tuple[str, str]]) -> str:
    return ", ".join(f"{kind} {name} ({t})" for kind, (name, t) in sorted(keys.items()))


def _bytes(value: str) -> int:
    units = {"kb": 1000, "k": 1000, "mb": 1000**2, "m": 1000**2, "gb": 1000**3, "g": 1000**3}
    text = value.lower()
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


#: Clock skew between primaries above which versions from different nodes stop being comparable in practice.
SKEW_WARN_MS = 50.0
#: Offset from this machine's clock above which latency figures and the chunk-abandon window drift.
MACHINE_OFFSET_WARN_MS = 1000.0


def check_clock_skew(offsets_ms: dict[str, float], uncertainty_ms: float = 0.0,
                     threshold_ms: float = SKEW_WARN_MS) -> Finding:
    """Offsets of each primary's TIME from this machine's clock (ms): how far apart the primaries are, and from us.

    Versions are each primary's TIME. After a key moves to another primary (resharding, failover), its next
    changes are versioned by that node's clock; if it is behind, changes made within the skew look older than the
    version DynamoDB already holds and are dropped as stale until the clock catches up.
    """
    if not offsets_ms:
        return Finding("ok", "clock: no primary answered TIME")
    ahead = max(offsets_ms, key=lambda n: offsets_ms[n])
    behind = min(offsets_ms, key=lambda n: offsets_ms[n])
    skew = offsets_ms[ahead] - offsets_ms[behind] - 2 * uncertainty_ms
    worst = max(offsets_ms.values(), key=abs)
    if len(offsets_ms) > 1 and skew > threshold_ms:
        return Finding(
            "warning", f"clock skew of {skew:.0f} ms between primaries {ahead} (ahead) and {behind}",
            "versions are each primary's TIME: after a key moves to a primary whose clock is behind, its changes "
            "within the skew look older than what DynamoDB holds and are dropped as stale",
            "keep every primary's clock synchronised (NTP/chrony); ElastiCache does this for you")
    if abs(worst) - uncertainty_ms > MACHINE_OFFSET_WARN_MS:
        return Finding("warning", f"Redis clock is {worst:.0f} ms off this machine's",
                       "end-to-end latency is measured across the two clocks, and chunks of a big state are "
                       "dropped as abandoned by capture time", "synchronise the clocks (NTP/chrony)")
    spread = f"{skew:.0f} ms apart" if len(offsets_ms) > 1 else f"{worst:.0f} ms from this machine"
    return Finding("ok", f"clock: primaries within {spread}")


def clock_offsets(nodes: list[tuple[str, Any]]) -> tuple[dict[str, float], float]:
    """Each node's TIME minus this machine's clock at the middle of the round trip (ms), and the largest
    uncertainty (half a round trip)."""
    offsets, uncertainty = {}, 0.0
    for name, conn in nodes:
        try:
            before = time.time()
            seconds, micros = conn.time()
            after = time.time()
        except RedisError:
            continue
        offsets[name] = (seconds + micros / 1e6 - (before + after) / 2) * 1000
        uncertainty = max(uncertainty, (after - before) * 500)
    return offsets, uncertainty


def clock_findings(nodes: list[tuple[str, Any]]) -> Finding:
    offsets, uncertainty = clock_offsets(nodes)
    return check_clock_skew(offsets, uncertainty)


# -- reading ---------------------------------------------------------------------------------------------------------


def redis_findings(client: Any, rules: RuleSet, writes_per_second: float | None, node: str) -> list[Finding]:
    """The Redis checks on every primary (a cluster's settings are per node)."""
    primaries = nodes(client, node)
    per_node_rate = writes_per_second / len(primaries) if writes_per_second is not None else None
    findings = []
    for name, conn in primaries:
        findings.append(check_notifications(name, _config_get(conn, "notify-keyspace-events"), rules))
        findings.append(check_pubsub_buffer(name, _config_get(conn, "client-output-buffer-limit"), per_node_rate,
                                            avg_key_bytes=40))
        findings.append(check_eviction(name, _config_get(conn, "maxmemory-policy")))
    findings.append(clock_findings(primaries))
    return findings


def _config_get(client: Node, name: str) -> str | None:
    try:
        value = client.config_get(name).get(name)
    except Refused:  # CONFIG renamed or disabled (ElastiCache, managed services)
        return None
    return value.decode() if isinstance(value, bytes) else value


def table_findings(dynamodb: Any, rules: RuleSet, create_tables: bool) -> list[Finding]:
    findings = []
    for spec in [*rules.tables.values(), *([rules.parts_table] if rules.parts_table else [])]:
        try:
            described = dynamodb.describe_table(TableName=spec.name)["Table"]
        except dynamodb.exceptions.ResourceNotFoundException:
            described = None
        findings.append(check_table(spec, described, create_tables))
    return findings


def kafka_findings(config: Any, appliers: int | None) -> list[Finding]:
    kafka = config.kafka
    try:
        info = broker.check_broker(kafka)
        report = broker.describe_topic(kafka, kafka.topic)
    except BrokerError as exc:
        return [Finding("blocker", "Kafka is unreachable" if exc.retryable else "Kafka cannot be used", str(exc),
                        "check kafka.bootstrap_servers and the kafka security settings")]
    findings = [Finding("ok", f"Kafka {info.version_text} ({info.brokers} broker(s))"),
                check_partitions(kafka.topic, report.partitions if report.exists else None, appliers,
                                 kafka.partitions)]
    return findings + check_topic(kafka, report)


def check_topic(kafka: Any, report: Any) -> list[Finding]:
    """An existing change topic's settings: compaction loses events (blocker); short retention, too few replicas or
    in-sync replicas risk them (warnings)."""
    wanted = topic_configs(kafka)
    findings = []
    for problem in unsafe_topic_settings(kafka, report) if report.exists else []:
        setting, why = problem.split(": ", 1)
        name = setting.split("=")[0].split(" (")[0]
        fix = (f"kafka-configs --alter --entity-type topics --entity-name {report.topic} --add-config "
               f"{name}={wanted[name]}" if name in wanted else "recreate the topic with replication factor 3")
        findings.append(Finding("blocker" if name == "cleanup.policy" else "warning",
                                f"topic {report.topic!r}: {setting}", why, fix))
    return findings


def format_findings(findings: list[Finding]) -> str:
    blockers = sum(f.level == "blocker" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    lines = [f.line() for f in findings]
    lines.append(f"{blockers} blocker(s), {warnings} warning(s)")
    return "\n".join(lines)
