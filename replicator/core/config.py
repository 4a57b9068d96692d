"""The replicator's one typed, frozen configuration.

Read once, from a YAML file, with ``REPLICATOR_*`` environment variables overriding it. Two spellings name a field:

- ``REPLICATOR_<SECTION>_<FIELD>`` for a field of a section (``REPLICATOR_REDIS_URL``,
  ``REPLICATOR_KAFKA_BOOTSTRAP_SERVERS``, ``REPLICATOR_DYNAMODB_ENDPOINT_URL`` ...), as ever;
- ``REPLICATOR_<PATH>`` with ``__`` between every level, for any field however deep (pydantic-settings' nested form):
  ``REPLICATOR_KAFKA__BOOTSTRAP_SERVERS``, ``REPLICATOR_TABLES__MESSAGING__NAME``, ``REPLICATOR_DEFAULT__TABLE``.
  Lists, tuples, mappings and whole sections take JSON: ``REPLICATOR_CAPTURE__RECONNECT_BACKOFF_S='[0.5, 10]'``.
  Names are case-insensitive, so a mapping key given this way (a table's) is lower case. Where both spellings set
  one field, the nested one wins; a mapping given in the environment is merged key by key into the file's.

Nothing else in the package reads the environment. Every validation error becomes one line naming the field path,
e.g. ``rules[1].item.timestamp: unknown placeholder {scor} (known: owner, member, score)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from replicator.core.errors import ConfigError
from replicator.core.templates import Template, glob_to_template

ENV_PREFIX = "REPLICATOR_"
#: Between the levels of a field's path in an environment variable's name (pydantic-settings' env_nested_delimiter).
ENV_NESTED = "__"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
RULE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

AttributeType = Literal["S", "N", "B"]
RuleType = Literal["string", "hash", "set", "zset"]

#: The placeholders a rule's item templates may use besides match's variables and {key}, by rule type.
RULE_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "string": ("value",),
    "hash": ("field", "value"),
    "set": ("member",),
    "zset": ("member", "score"),
}
#: The placeholder that tells a collection's items apart, by rule type (a string rule makes one item per key).
ELEMENT = {"hash": "field", "set": "member", "zset": "member"}
#: Attribute name prefixes the replicator keeps for each group's version and tombstone marker.
RESERVED_ATTR_PREFIXES = ("_v_", "_deleted_")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RedisConfig(_Frozen):
    url: str = "redis://127.0.0.1:6379/0"
    #: Run CONFIG SET notify-keyspace-events at listener start when flags are missing. Off by default because it
    #: changes a shared server setting; ElastiCache forbids it (use the parameter group).
    configure_notifications: bool = False
    #: Name of this node in events (defaults to host:port from the URL).
    node_name: str | None = None
    #: ACL user and password (AUTH); override the URL's. Prefer REPLICATOR_REDIS_PASSWORD to a password in the URL.
    username: str | None = None
    password: SecretStr | None = None
    #: TLS (with a rediss:// URL): CA bundle to verify the server, and a client certificate for mutual TLS.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected redis://host:port/db or rediss://..., got {mask_url(v)!r}")
        return v


class KafkaConfig(_Frozen):
    """Where the change topic lives and how to reach it. Brokers 2.8 and newer (see broker.MINIMUM_BROKER)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "redis.changes"
    #: Partition count used when the replicator creates the topic. Bounds the number of useful appliers.
    partitions: int = Field(default=12, ge=1, le=10000)
    replication_factor: int = Field(default=3, ge=1, le=16)
    #: Topic setting on creation: with acks=all a write needs this many in-sync replicas (never more than the
    #: replication factor; 2 of 3 survives one broker down without losing an acknowledged event).
    min_insync_replicas: int = Field(default=2, ge=1, le=16)
    #: How long the change topic (and the DLQ) keep events: the window a replay can reach back.
    retention_hours: float = Field(default=168, gt=0)
    group_id: str = "replicator-apply"
    #: Static group membership (KIP-345): a stable id per applier pod, so a restart within the session timeout keeps
    #: its partitions without a rebalance. The Helm chart sets it from the pod name.
    group_instance_id: str | None = None
    client_id: str = "redis-dynamodb-replicator"
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    linger_ms: int = Field(default=5, ge=0, le=10000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: TLS: CA bundle to verify the brokers (default: the system's), and a client certificate for mutual TLS.
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_key_password: SecretStr | None = None
    #: SASL: PLAIN, SCRAM-SHA-256/512 with a username and password, or AWS_MSK_IAM (OAUTHBEARER tokens signed with
    #: the usual AWS credential chain: IRSA, instance profile, env), for Amazon MSK.
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "AWS_MSK_IAM"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: AWS_MSK_IAM: the cluster's region (default: the credential chain's region) and an optional role to assume.
    aws_region: str | None = None
    aws_role_arn: str | None = None

    @model_validator(mode="after")
    def _security(self) -> KafkaConfig:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas ({self.min_insync_replicas}) cannot exceed replication_factor "
                             f"({self.replication_factor})")
        if self.sasl_mechanism and not self.security_protocol.startswith("SASL_"):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs security_protocol SASL_SSL (or "
                             f"SASL_PLAINTEXT), not {self.security_protocol}")
        if self.security_protocol.startswith("SASL_") and not self.sasl_mechanism:
            raise ValueError(f"security_protocol {self.security_protocol} needs a sasl_mechanism")
        # The password usually comes from a secret (REPLICATOR_KAFKA_SASL_PASSWORD); the user is part of the config.
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not self.sasl_username:
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username (and sasl_password, "
                             "e.g. from REPLICATOR_KAFKA_SASL_PASSWORD)")
        if self.ssl_key_file and not self.ssl_cert_file:
            raise ValueError("ssl_key_file needs ssl_cert_file")
        return self

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        for server in v.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {v!r}")
        return v


class DynamoDBConfig(_Frozen):
    region: str = "us-east-1"
    endpoint_url: str | None = None
    #: Static credentials, for DynamoDB Local only; in AWS use the default chain (IRSA, instance profile).
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    #: Create missing tables (key schema, LSIs, TTL) from ``tables``; meant for local stacks and first runs.
    create_tables: bool = False
    #: Holds each collection key's head version so diff-only writes stay safe against late stale events.
    state_table: str = "replicator_state"

    @field_validator("access_key_id")
    @classmethod
    def _access_key(cls, v: str | None) -> str | None:
        if v is not None and not v.isalnum():
            raise ValueError("must be alphanumeric (DynamoDB Local rejects other characters)")
        return v


class CaptureConfig(_Frozen):
    #: Most keys read in one pipelined round trip.
    batch_size: int = Field(default=500, ge=1, le=100000)
    #: How long notifications are gathered before a read; a burst on one key within it costs one read.
    coalesce_ms: int = Field(default=5, ge=0, le=10000)
    #: Collections with more members are read in pages (ZSCAN/HSCAN/SSCAN/LRANGE) instead of in one reply that
    #: would block Redis, and published as chunks of one version.
    max_inline_members: int = Field(default=10_000, ge=1)
    #: Largest value published in one event; bigger states are split into chunks (keep it well under the
    #: broker's message.max.bytes, 1 MB by default).
    chunk_bytes: int = Field(default=512 * 1024, ge=1024, le=64 * 1024 * 1024)
    #: Re-snapshot (in the background, while capturing live) after every gap: listener start, lost subscription.
    #: Notifications are fire-and-forget, so without it changes made while nobody listened are never replicated.
    resnapshot_on_gap: bool = True
    #: How often INFO is read for changes no notification announces (FLUSHDB, FLUSHALL, SWAPDB, CONFIG RESETSTAT,
    #: a restart or failover); each is a gap, healed by a re-snapshot and a reconcile.
    watch_interval_s: float = Field(default=1.0, ge=0.05, le=3600)
    #: Reconnect backoff after a lost subscription (full jitter, retry.REDIS_SUBSCRIPTION): the first wait averages
    #: the first value, no wait exceeds the second.
    reconnect_backoff_s: tuple[float, float] = (0.2, 10.0)
    #: Redis Cluster: how often the primaries are listed again (failover, resharding, added primaries).
    topology_refresh_s: float = Field(default=10.0, ge=0.1, le=3600)
    #: Capture by several processes: each reads and publishes only the owners of its ``shard`` (0 to shards - 1).
    #: Run one listener per shard when a primary takes more writes than one listener can publish.
    shards: int = Field(default=1, ge=1, le=1024)
    shard: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _shard_in_range(self) -> CaptureConfig:
        if self.shard >= self.shards:
            raise ValueError(f"shard is {self.shard} but must be below shards ({self.shards}): shards are numbered "
                             "from 0")
        return self


class ApplyConfig(_Frozen):
    max_batch: int = Field(default=1000, ge=1, le=100000)
    poll_timeout_ms: int = Field(default=500, ge=10, le=60000)
    #: Concurrent DynamoDB requests per applier. Items of one key are still written before its head version.
    write_concurrency: int = Field(default=16, ge=1, le=256)
    #: Keys whose last applied state is cached (per applier, dropped on partition revoke).
    cache_keys: int = Field(default=100_000, ge=0)
    #: How item writes are sent, each conditional on its version whatever the mode (see replicator.apply.sink).
    #: "batch": 25 PartiQL statements per BatchExecuteStatement, 1 WCU per item. "transaction": up to 100 per
    #: TransactWriteItems, 2 WCU per item. "item": one UpdateItem per write, 1 WCU, one round trip each.
    write_mode: Literal["batch", "item", "transaction"] = "batch"
    #: Chunks of a big state are dropped once an event read this much later has been consumed from the same
    #: partition: the rest were never published (a listener died mid-state), and they would hold commits forever.
    #: Above the producer's delivery timeout (120 s) plus the clock skew between listener hosts.
    abandon_chunks_after_s: float = Field(default=300.0, ge=130.0)


class TombstoneConfig(_Frozen):
    #: How long a deleted item's version is kept (DynamoDB TTL) so late stale events cannot resurrect it.
    retention_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    ttl_attribute: str = "_expires"


class TableConfig(_Frozen):
    #: Physical table name; defaults to the key under ``tables``.
    name: str | None = None
    partition_key: str
    sort_key: str | None = None
    #: Local secondary indexes: index name → sort attribute.
    lsi: dict[str, str] = Field(default_factory=dict)
    #: Attribute types; default S, except attributes filled by exactly "{score}" (N).
    types: dict[str, AttributeType] = Field(default_factory=dict)

    @property
    def key_attrs(self) -> tuple[str, ...]:
        """The partition key, then the sort key when there is one."""
        return (self.partition_key, *((self.sort_key,) if self.sort_key else ()))

    def attribute_type(self, attr: str, template: Template) -> str:
        """The declared type, else N for an attribute filled by exactly "{score}", else S."""
        return self.types.get(attr, "N" if template.single == "score" else "S")


class RuleConfig(_Frozen):
    match: str
    type: RuleType
    table: str
    item: dict[str, str]
    #: Names the rule's attribute group (its version attribute is ``_v_<name>``). Default: the match's literal prefix.
    name: str | None = None
    #: Kafka key; default "{owner}" when the pattern has that variable, else the whole Redis key.
    owner: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not RULE_NAME_RE.match(v):
            raise ValueError(f"{v!r} must start with a letter and hold only letters, digits and '_'")
        return v

    @property
    def rule_name(self) -> str:
        """The explicit name, else the match's literal prefix as an identifier ("" when it has none)."""
        if self.name:
            return self.name
        prefix = self.match.split("{", 1)[0]
        return re.sub(r"[^A-Za-z0-9_]+", "_", prefix).strip("_")

    def owner_text(self, variables: tuple[str, ...]) -> str:
        """The owner template: the explicit one, else "{owner}" when match has that variable, else the whole key."""
        return self.owner or ("{owner}" if "owner" in variables else "{key}")


class DefaultRuleConfig(_Frozen):
    """Mirror rule for keys no rule matches: one item per key (pk = key as binary, type, value, expire_at)."""

    table: str = "redis_mirror"
    #: Glob of keys to mirror; "*" mirrors every key.
    match: str = "*"


class MetricsConfig(_Frozen):
    #: Port of /metrics, /healthz and /readyz (0: any free port; unset: not served).
    port: int | None = Field(default=None, ge=0, le=65535)
    #: How often the applier refreshes replicator_consumer_lag (log end offset - committed offset).
    lag_interval_s: float = Field(default=15.0, ge=0.1, le=3600)


class CutoverConfig(_Frozen):
    """The owner-by-owner cutover (``replicator cutover``, ``replicator.cutover.MigratingRedis``)."""

    #: How often clients and appliers read the control record: a step takes effect within it.
    refresh_s: float = Field(default=2.0, gt=0, le=300)
    #: How long a client holds a write to an owner being switched before a retryable TryAgainError.
    hold_timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: How long a client's heartbeat counts: a client silent for longer (killed, partitioned) is not waited for.
    heartbeat_ttl_s: float = Field(default=15.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _heartbeat_outlives_refresh(self) -> CutoverConfig:
        if self.heartbeat_ttl_s <= 2 * self.refresh_s:
            raise ValueError(f"heartbeat_ttl_s ({self.heartbeat_ttl_s:g}) must be more than twice refresh_s "
                             f"({self.refresh_s:g}): a live client would otherwise drop out between two heartbeats")
        return self


class Config(_Frozen):
    redis: RedisConfig = RedisConfig()
    kafka: KafkaConfig = KafkaConfig()
    dynamodb: DynamoDBConfig = DynamoDBConfig()
    capture: CaptureConfig = CaptureConfig()
    apply: ApplyConfig = ApplyConfig()
    tombstones: TombstoneConfig = TombstoneConfig()
    metrics: MetricsConfig = MetricsConfig()
    cutover: CutoverConfig = CutoverConfig()
    tables: dict[str, TableConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)
    default: DefaultRuleConfig | None = None

    @model_validator(mode="after")
    def _rules_valid(self) -> Config:
        # Checked at load time so every rule mistake is a one-line error naming its field, at whichever command;
        # the rules are compiled later, once, by replicator.core.mapping.compile_rules (which trusts these checks).
        check_rules(self)
        return self

    def table_name(self, logical: str) -> str:
        table = self.tables[logical]
        return table.name or logical

    def redis_kwargs(self) -> dict[str, Any]:
        """Connection options for redis-py beyond the URL (credentials and TLS)."""
        r = self.redis
        kwargs: dict[str, Any] = {}
        if r.username:
            kwargs["username"] = r.username
        if r.password:
            kwargs["password"] = r.password.get_secret_value()
        if urlsplit(r.url).scheme == "rediss":
            kwargs["ssl_cert_reqs"] = "required" if r.tls_verify else "none"
            if r.tls_ca_file:
                kwargs["ssl_ca_certs"] = r.tls_ca_file
            if r.tls_cert_file:
                kwargs["ssl_certfile"] = r.tls_cert_file
                kwargs["ssl_keyfile"] = r.tls_key_file
        return kwargs

    def masked(self) -> dict[str, Any]:
        """A dump safe for logs: passwords masked, URL credentials removed."""
        data = self.model_dump(mode="json")
        data["redis"]["url"] = mask_url(self.redis.url)
        return data


def mask_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` → ``redis://user:***@host:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


# --------------------------------------------------------------------------------------------------------------------
# Rule checks: everything about the rules that one field's validator cannot see. They build nothing (mapping's
# compile_rules builds the RuleSet from a config that passed them), and raise the first problem in the order a user
# reads the file: rules in order, then tables, then the default mirror.


@dataclass
class _SeenRules:
    """What the rules checked so far claimed, for the checks across rules."""

    names: dict[str, int] = field(default_factory=dict)  # rule name -> index
    data_owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, attribute) -> rule name
    attr_types: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, attribute) -> type


def check_rules(config: Config) -> None:
    """Raise a one-line ConfigError naming the field of the first rule, table or default-mirror mistake."""
    seen = _SeenRules()
    for i, rc in enumerate(config.rules):
        _check_rule(config, f"rules[{i}]", i, rc, seen)
    for logical in config.tables:
        physical = config.table_name(logical)
        if not NAME_RE.fullmatch(physical):
            raise ConfigError(f"tables.{logical}.name: {physical!r} is not a valid DynamoDB table name "
                              "(3-255 of a-z A-Z 0-9 _ - .)")
    if config.default is not None:
        _check_default(config, config.default)


def _check_rule(config: Config, where: str, i: int, rc: RuleConfig, seen: _SeenRules) -> None:
    variables = _check_match(where, rc)
    table = config.tables.get(rc.table)
    if table is None:
        known = ", ".join(sorted(config.tables)) or "none defined under 'tables'"
        raise ConfigError(f"{where}.table: unknown table {rc.table!r} (known: {known})")
    name = _check_name(where, i, rc, seen)
    item = _check_item(where, rc, variables, config.tombstones.ttl_attribute)
    _check_item_key(where, rc, table, item, variables)
    _check_shared_attributes(where, name, config.table_name(rc.table), rc, table, item, seen)
    _check_owner(where, rc, variables)


def _parse(where: str, text: str) -> Template:
    try:
        return Template.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_match(where: str, rc: RuleConfig) -> tuple[str, ...]:
    """The match's variables; a match without one would map every key to one item."""
    variables = _parse(f"{where}.match", rc.match).placeholders
    if not variables:
        raise ConfigError(f"{where}.match: {rc.match!r} has no placeholder; write e.g. 'opponents:{{owner}}'")
    return variables


def _check_name(where: str, i: int, rc: RuleConfig, seen: _SeenRules) -> str:
    """The rule's name, which must be unique: it names the rule's version attribute."""
    name = rc.rule_name
    if not name:
        raise ConfigError(f"{where}.name: cannot derive a rule name from {rc.match!r}; set 'name'")
    if name in seen.names:
        raise ConfigError(f"{where}.name: rule name {name!r} is already used by rules[{seen.names[name]}]; "
                          "give one an explicit 'name'")
    seen.names[name] = i
    return name


def _check_item(where: str, rc: RuleConfig, variables: tuple[str, ...], ttl_attribute: str) -> dict[str, Template]:
    """Each item template parses and uses only placeholders the rule offers; no reserved attribute names."""
    allowed = (*variables, *RULE_PLACEHOLDERS[rc.type], "key")
    item: dict[str, Template] = {}
    for attr, text in rc.item.items():
        if attr.startswith(RESERVED_ATTR_PREFIXES) or attr == ttl_attribute:
            raise ConfigError(f"{where}.item.{attr}: attribute names starting with _v_/_deleted_ or "
                              f"{ttl_attribute!r} are reserved for versions and tombstones")
        template = _parse(f"{where}.item.{attr}", str(text))
        for placeholder in template.placeholders:
            if placeholder not in allowed:
                raise ConfigError(
                    f"{where}.item.{attr}: unknown placeholder {{{placeholder}}} (known: {', '.join(allowed)})"
                )
        item[attr] = template
    return item


def _check_item_key(where: str, rc: RuleConfig, table: TableConfig, item: Mapping[str, Template],
                    variables: tuple[str, ...]) -> None:
    """The item key tells apart every Redis key (and, for a collection, every element) the rule maps."""
    key_attrs = table.key_attrs
    for key_attr in key_attrs:
        if key_attr not in item:
            raise ConfigError(f"{where}.item: missing the table's key attribute {key_attr!r}")
    key_placeholders = {p for a in key_attrs for p in item[a].placeholders}
    missing = [v for v in variables if v not in key_placeholders and v != "key"]
    if missing:
        raise ConfigError(
            f"{where}.item: variable {{{missing[0]}}} of match is not in the item key, so different Redis keys "
            f"would overwrite one item; use it in {' or '.join(key_attrs)}"
        )
    element = ELEMENT.get(rc.type)
    if element is None:
        foreign = sorted(key_placeholders - {*variables, "key"})
        if foreign:
            raise ConfigError(f"{where}.item: a {rc.type} rule makes one item per key, so its key attributes may "
                              f"only use variables of match, not {{{foreign[0]}}}")
        return
    if element not in key_placeholders:
        raise ConfigError(
            f"{where}.item: a {rc.type} rule makes one item per {element}, so {{{element}}} must be in "
            f"the item key ({' or '.join(key_attrs)})"
        )
    foreign = [p for p in item[key_attrs[0]].placeholders if p not in variables]
    if foreign:
        raise ConfigError(
            f"{where}.item.{key_attrs[0]}: the partition key may only use variables of match, so a key's "
            f"items share one partition; move {{{foreign[0]}}} to the sort key"
        )


def _check_shared_attributes(where: str, name: str, physical: str, rc: RuleConfig, table: TableConfig,
                             item: Mapping[str, Template], seen: _SeenRules) -> None:
    """Rules sharing a table share its key attributes only, and agree on every attribute's type."""
    key_attrs = table.key_attrs
    for attr in item:
        if attr in key_attrs:
            continue
        other = seen.data_owner.setdefault((physical, attr), name)
        if other != name:
            raise ConfigError(f"{where}.item.{attr}: attribute is also written by rule {other!r}; "
                              "give each rule its own attributes")
    for attr, template in item.items():
        attr_type = table.attribute_type(attr, template)
        other_type = seen.attr_types.setdefault((physical, attr), attr_type)
        if other_type != attr_type:
            raise ConfigError(f"{where}.item.{attr}: type {attr_type} differs from {other_type} used by another "
                              f"rule; set tables.{rc.table}.types.{attr}")


def _check_owner(where: str, rc: RuleConfig, variables: tuple[str, ...]) -> None:
    owner = _parse(f"{where}.owner", rc.owner_text(variables))
    for placeholder in owner.placeholders:
        if placeholder not in (*variables, "key"):
            raise ConfigError(f"{where}.owner: unknown placeholder {{{placeholder}}} "
                              f"(known: {', '.join((*variables, 'key'))})")


def _check_default(config: Config, default: DefaultRuleConfig) -> None:
    """The mirror needs a valid table of its own and a glob it supports."""
    if any(config.table_name(logical) == default.table for logical in config.tables):
        raise ConfigError(f"default.table: {default.table!r} is also a rule table; the mirror needs a table of its own")
    if not NAME_RE.fullmatch(default.table):
        raise ConfigError(f"default.table: {default.table!r} is not a valid DynamoDB table name")
    try:
        glob_to_template(default.match)
    except ValueError as exc:
        raise ConfigError(f"default.match: {exc}") from None


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (optional), overlay ``REPLICATOR_*`` env vars, validate. Raises ConfigError (one line)."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "is not valid YAML"
            raise ConfigError(f"config file {path}{where}: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path}: expected a mapping of sections at the top, got {type(loaded).__name__}"
            )
        data = loaded
    data = _overlay_env(data, environ)
    return parse_config(data, source=str(path) if path else "environment")


def parse_config(data: Mapping[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_one_line(exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _overlay_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with the ``REPLICATOR_*`` variables of ``environ`` merged over it (see the module docstring)."""
    try:
        overrides = _Environment(environ)()
    except SettingsError as exc:
        raise ConfigError(f"environment: {exc}; lists, tuples and mappings take JSON, e.g. "
                          f"{ENV_PREFIX}CAPTURE{ENV_NESTED}RECONNECT_BACKOFF_S='[0.5, 10]'") from None
    return _merged(data, overrides, "")


class _Environment(EnvSettingsSource):
    """pydantic-settings' reader of nested variables, over the given mapping, with the section_field names too.

    Only its parsing is used (names to a nested dict, JSON for complex fields): the file and the environment are
    merged here, env over file, and validated once by :func:`parse_config` for one-line errors.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        # Config is a BaseModel, not a BaseSettings (parse_config must never read the environment): the source only
        # reads its fields.
        super().__init__(Config, case_sensitive=False, env_prefix=ENV_PREFIX,  # type: ignore[arg-type]
                         env_nested_delimiter=ENV_NESTED)
        variables = {name.lower(): value for name, value in environ.items()}
        for name, value in list(variables.items()):
            nested = _nested_name(name)
            if nested is not None:
                variables.setdefault(nested, value)
        self.env_vars = variables


def _nested_name(name: str) -> str | None:
    """``replicator_kafka_bootstrap_servers`` → ``replicator_kafka__bootstrap_servers``; None when ``name`` is not
    ``<prefix><section>_<field>`` for a field of a section."""
    prefix = ENV_PREFIX.lower()
    if not name.startswith(prefix) or ENV_NESTED in name:
        return None
    rest = name[len(prefix):]
    for section, section_field in Config.model_fields.items():
        model, field_name = section_field.annotation, rest[len(section) + 1:]
        if (rest.startswith(f"{section}_") and isinstance(model, type) and issubclass(model, BaseModel)
                and field_name in model.model_fields):
            return f"{prefix}{section}{ENV_NESTED}{field_name}"
    return None


def _merged(data: Mapping[str, Any], overrides: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``data`` with ``overrides`` merged in: mappings key by key, any other value the environment sets replaces the
    file's."""
    merged = dict(data)
    for key, value in overrides.items():
        where = f"{path}.{key}" if path else key
        current = merged.get(key)
        if not isinstance(value, dict) or current is None:
            merged[key] = value
        elif isinstance(current, dict):
            merged[key] = _merged(current, value, where)
        else:
            raise ConfigError(f"{where}: expected a mapping, got {type(current).__name__}")
    return merged


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    path = ""
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field (check its spelling and section)"
    elif first["type"] == "missing":
        message = "required field is missing"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path or 'config'}: {message}{suffix}"
