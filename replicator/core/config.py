"""The replicator's one typed, frozen configuration: its schema, and the parsing of a mapping into it.

Read once (:func:`replicator.loading.load_config`: a YAML file, with ``REPLICATOR_*`` environment variables
overriding it; :func:`overlay_env` merges them, here, over a mapping it is handed). Two spellings name a field:

- ``REPLICATOR_<SECTION>_<FIELD>`` for a field of a section (``REPLICATOR_REDIS_URL``,
  ``REPLICATOR_KAFKA_BOOTSTRAP_SERVERS``, ``REPLICATOR_DYNAMODB_ENDPOINT_URL`` ...), as ever;
- ``REPLICATOR_<PATH>`` with ``__`` between every level, for any field however deep (pydantic-settings' nested form):
  ``REPLICATOR_KAFKA__BOOTSTRAP_SERVERS``, ``REPLICATOR_TABLES__MESSAGING__NAME``, ``REPLICATOR_DEFAULT__TABLE``.
  Lists, tuples, mappings and whole sections take JSON: ``REPLICATOR_CAPTURE__RECONNECT_BACKOFF_S='[0.5, 10]'``.
  Names are case-insensitive, so a mapping key given this way (a table's) is lower case. Where both spellings set
  one field, the nested one wins; a mapping given in the environment is merged key by key into the file's.

Nothing but the loading reads the environment. Every validation error becomes one line naming the field path,
e.g. ``rules[1].item.timestamp: unknown placeholder {scor} (known: owner, member, score)`` (the rules' checks are
in :mod:`replicator.core.rules`, which compiles them in the same pass).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from replicator.core.errors import ConfigError
from replicator.core.mapping import RuleSet
from replicator.core.rules import RULE_NAME_RE, compile_rules
from replicator.core.templates import Template

ENV_PREFIX = "REPLICATOR_"
#: Between the levels of a field's path in an environment variable's name (pydantic-settings' env_nested_delimiter).
ENV_NESTED = "__"

AttributeType = Literal["S", "N", "B"]
RuleType = Literal["string", "hash", "set", "zset"]



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

    #: The rules compiled when the config was validated (see :attr:`rule_set`).
    _rule_set: RuleSet | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _rules_valid(self) -> Config:
        # Checked and compiled at load time, in one pass: every rule mistake is a one-line error naming its field,
        # at whichever command, and every user of the config takes these compiled rules.
        self._rule_set = compile_rules(self)
        return self

    @property
    def rule_set(self) -> RuleSet:
        """The rules, tables and default mirror, compiled for matching and planning."""
        assert self._rule_set is not None  # set by validation; a Config is only made by validating one
        return self._rule_set

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


def parse_config(data: Mapping[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_one_line(exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def overlay_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
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
