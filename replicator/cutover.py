"""``MigratingRedis``: the application's client during the cutover, routing each command by its owner's stage.

The application swaps ``redis.Redis(...)`` for ``MigratingRedis(redis.Redis(...), "replicator.yaml")`` once, and
the operator moves shares of owners with ``replicator cutover`` (see :mod:`replicator.core.cutover` for the stages)
without redeploying it:

- ``redis``: the command goes to Redis; ``shadow``: to Redis, reads compared with DynamoDB (``ShadowRedis``);
- ``switching`` (and ``returning``, while ``cutover back`` runs): reads go to Redis; writes are held until the step
  ends (at most ``cutover.hold_timeout_s``, then redis-py's ``TryAgainError``, which the application may retry);
- ``dynamodb``: the command runs on DynamoDB (``DynamoRedis``, native versions); a write DynamoDB took is then run on
  Redis too, best effort (``replicator_cutover_mirror_failures_total`` and a log line with the key when it fails),
  so that Redis stays a warm copy;
- ``complete``: DynamoDB only.

A command whose keys are at stages that need different stores (one switched, one not) is refused with a one-line
``CROSSSTAGE`` error, as Redis Cluster refuses keys of different slots: no store could answer it exactly.
Keys no rule captures are not replicated, so they stay on Redis.

**Epochs.** Each command runs on the plan it read when it started; the client reports, in a heartbeat item, the
oldest epoch a command of its is still running on. A switch waits for every live client to report its new epoch,
so when it goes on, no Redis write to the owners it moves is in flight anywhere.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import DataAccessCommands

from replicator import metrics
from replicator.adapters.dynamodb.calls import make_client
from replicator.adapters.dynamodb.cutover import ControlStore, PlanWatch
from replicator.adapters.redis.shaped import QueuedPipeline, encode
from replicator.core import commands
from replicator.core.config import Config, CutoverConfig
from replicator.core.cutover import Heartbeat, Plan, Stage
from replicator.core.mapping import RuleSet
from replicator.dynamo_redis import DynamoRedis, ShadowRedis
from replicator.loading import load_config

log = logging.getLogger(__name__)

#: How often a client reads the plan while a cutover step is under way (``Plan.fast``).
_FAST_S = 0.05
#: Where a command goes.
_REDIS, _SHADOW, _HOLD, _DYNAMO = "redis", "shadow", "hold", "dynamodb"


class MigratingRedis(DataAccessCommands):  # type: ignore[misc]
    """redis-py's data commands, each sent where its owner's cutover stage says (see the module docstring).

    Thread-safe; one per process, like the ``redis.Redis`` it wraps. :meth:`close` stops its heartbeat.
    """

    def __init__(self, redis_client: Any, config: str | os.PathLike[str] | Config, dynamodb_client: Any = None,
                 instance: str | None = None) -> None:
        loaded = config if isinstance(config, Config) else load_config(config)
        client = dynamodb_client or make_client(loaded.dynamodb)
        self._redis = redis_client
        self._rules: RuleSet = loaded.rule_set
        self._dynamo = DynamoRedis.from_config(loaded, client)
        self._shadow = ShadowRedis.from_config(redis_client, loaded, self._dynamo)
        self._settings: CutoverConfig = loaded.cutover
        self._control = ControlStore(client, loaded.dynamodb.state_table)
        self._watch = PlanWatch(self._control, self._settings.refresh_s)
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._running: Counter[int] = Counter()  # epoch -> commands running on it
        self._stop = threading.Event()
        self._beat()  # before the first command: a switch starting now waits for this client
        self._heart = threading.Thread(target=self._beating, name="cutover-heartbeat", daemon=True)
        self._heart.start()

    # -- the application's calls ---------------------------------------------------------------------------------

    def execute_command(self, *args: Any, **options: Any) -> Any:
        (answer,) = self._run([(args, options)])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def pipeline(self, transaction: bool = False, shard_hint: Any = None) -> _MigratingPipeline:
        """Commands queued and answered together; each store gets its share as one pipeline. ``transaction=True``
        is refused, as by ``DynamoRedis``: MULTI/EXEC's isolation cannot span Redis and DynamoDB."""
        if transaction:
            raise redis.exceptions.RedisError("pipeline(transaction=True) is not supported: use transaction=False")
        return _MigratingPipeline(self)

    def plan(self) -> Plan:
        """The plan this client runs on now (refreshed every ``cutover.refresh_s``)."""
        return self._watch.current()

    def close(self) -> None:
        """Stop the heartbeat and remove it (a switch stops waiting for this client at once)."""
        self._stop.set()
        self._heart.join(5)
        self._shadow.close()
        try:
            self._control.forget(self.instance)
        except Exception as exc:  # it expires by itself
            log.warning("cannot remove the cutover heartbeat", extra={"kv": {"instance": self.instance,
                                                                            "error": str(exc)}})

    def __enter__(self) -> MigratingRedis:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    # -- routing -------------------------------------------------------------------------------------------------

    def _run(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        """The answers of ``calls`` in order (errors in their places), each from the store its route names."""
        encoded = [encode(args) for args, _options in calls]
        writing = any(commands.writes(args) for args in encoded)
        plan = self._enter(encoded, writing)
        try:
            routes = [self._route(plan, args) for args in encoded]
            answers: list[Any] = [None] * len(calls)
            for route in (_REDIS, _SHADOW, _DYNAMO):
                chosen = [i for i, r in enumerate(routes) if r == route]
                if chosen:
                    self._send(route, [calls[i] for i in chosen], answers, chosen)
            for i, route in enumerate(routes):
                if isinstance(route, Exception):
                    answers[i] = route
            return answers
        finally:
            with self._lock:
                self._running[plan.epoch] -= 1
                if not self._running[plan.epoch]:
                    del self._running[plan.epoch]

    def _enter(self, encoded: list[list[bytes]], writing: bool) -> Plan:
        """The plan these commands run on, counted as running until they end; writes to owners being switched wait
        here for the switch to end (reads go to Redis meanwhile, which nobody writes then)."""
        held_since = None
        while True:
            with self._lock:
                plan = self._watch.current()
                held = writing and any(self._stage(plan, k).held for args in encoded for k in _keys(args))
                if not held:
                    self._running[plan.epoch] += 1
                    if held_since is not None:
                        metrics.CUTOVER_HOLD_SECONDS.observe(time.monotonic() - held_since)
                    return plan
            now = time.monotonic()
            held_since = now if held_since is None else held_since
            if now - held_since >= self._settings.hold_timeout_s:
                metrics.CUTOVER_HOLD_SECONDS.observe(now - held_since)
                raise redis.exceptions.TryAgainError(
                    "TRYAGAIN the owners of these keys are changing stores (cutover; writes held "
                    f"{self._settings.hold_timeout_s:g}s)")
            time.sleep(0.05)
            self._watch.current(fresh=True)

    def _stage(self, plan: Plan, key: bytes) -> Stage:
        if plan.trivial:
            return Stage.REDIS
        owner = self._rules.owner_of(key)
        return Stage.REDIS if owner is None else plan.stage(owner)

    def _route(self, plan: Plan, args: list[bytes]) -> str | Exception:
        keys = _keys(args)
        if not keys:
            return _DYNAMO if plan.complete >= 100 else _REDIS
        stages = {self._stage(plan, k) for k in keys}
        if all(s.switched for s in stages):
            return _DYNAMO
        if any(s.switched for s in stages):
            return redis.exceptions.ResponseError(
                "CROSSSTAGE keys of one command are at different cutover stages (some switched to DynamoDB, some "
                "not): no single store holds all of them")
        return _SHADOW if Stage.SHADOW in stages else _REDIS

    def _send(self, route: str, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], answers: list[Any],
              places: Sequence[int]) -> None:
        target = {_REDIS: self._redis, _SHADOW: self._shadow, _DYNAMO: self._dynamo}[route]
        if route == _DYNAMO:  # the same expiry in DynamoDB and in the warm copy, whenever each runs the write
            now_ms = time.time_ns() // 1_000_000
            calls = [(_absolute(args, now_ms), options) for args, options in calls]
        got = _pipelined(target, calls)
        for place, answer in zip(places, got, strict=True):
            answers[place] = answer
        if route == _DYNAMO:
            self._mirror([(call, answer) for call, answer in zip(calls, got, strict=True)])

    def _mirror(self, done: list[tuple[tuple[tuple[Any, ...], dict[str, Any]], Any]]) -> None:
        """Run on Redis the writes DynamoDB took, for owners still mirrored (``dynamodb``, not ``complete``)."""
        plan = self._watch.current()
        writes = [(args, options) for (args, options), answer in done
                  if not isinstance(answer, Exception) and commands.writes(encode(args))
                  and any(self._stage(plan, k) is Stage.DYNAMODB for k in _keys(encode(args)))]
        if not writes:
            return
        try:
            results = _pipelined(self._redis, writes)
        except Exception as exc:
            results = [exc] * len(writes)
        for (args, _options), result in zip(writes, results, strict=True):
            if isinstance(result, Exception):
                metrics.CUTOVER_MIRROR_FAILURES.inc()
                log.warning("a write DynamoDB took could not be mirrored to Redis: `cutover back` will refuse these "
                            "owners until they are equal again", extra={"kv": {
                                "command": str(args[0]), "keys": [k.decode("utf-8", "replace")[:200]
                                                                  for k in _keys(encode(args))],
                                "error": str(result)[:200]}})

    # -- heartbeat -----------------------------------------------------------------------------------------------

    def _beating(self) -> None:
        """Read the plan every refresh (every ``_FAST_S`` while a step is under way) and report it: at once when the
        reported epoch changed, else once a refresh."""
        reported, beat_at = -1, time.monotonic()
        while not self._stop.wait(_FAST_S if self._watch.current().fast else self._settings.refresh_s):
            self._watch.current(fresh=True)
            with self._lock:
                epoch = min([self._watch.current().epoch, *self._running])
            if epoch == reported and time.monotonic() - beat_at < self._settings.refresh_s:
                continue
            try:
                self._beat()
                reported, beat_at = epoch, time.monotonic()
            except Exception as exc:  # DynamoDB away: the heartbeat expires, a switch stops waiting for us
                log.warning("cannot record the cutover heartbeat", extra={"kv": {"error": str(exc)}})

    def _beat(self) -> None:
        with self._lock:
            plan = self._watch.current()
            epoch = min([plan.epoch, *self._running])
        now = time.time()
        shadow = tuple((command, result, n) for (command, result), n in sorted(self._shadow.tallies.items()))
        self._control.beat(Heartbeat(self.instance, epoch, now, now + self._settings.heartbeat_ttl_s, shadow))


def _absolute(args: tuple[Any, ...], now_ms: int) -> tuple[Any, ...]:
    """``args`` with a relative expiry made absolute (see commands.absolute_expiry); the command name stays a str,
    which redis-py's reply callbacks are looked up by."""
    encoded = encode(args)
    rewritten = commands.absolute_expiry(encoded, now_ms)
    if rewritten is encoded or rewritten == encoded:
        return args
    return (rewritten[0].decode("latin-1"), *rewritten[1:])


def _keys(args: list[bytes]) -> list[bytes]:
    return commands.keys_of(args) if commands.known(args[0].decode("latin-1")) else []


def _pipelined(target: Any, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
    """Answers of ``calls`` on a redis-py-shaped client, errors in their places."""
    if len(calls) == 1:
        args, options = calls[0]
        try:
            return [target.execute_command(*args, **options)]
        except redis.exceptions.RedisError as exc:
            if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                raise
            return [exc]
    pipe = target.pipeline(transaction=False)
    for args, options in calls:
        pipe.execute_command(*args, **options)
    return list(pipe.execute(raise_on_error=False))


class _MigratingPipeline(QueuedPipeline):
    """redis-py's non-transactional pipeline over :class:`MigratingRedis`."""

    def __init__(self, client: MigratingRedis) -> None:
        super().__init__()
        self._client = client

    def _answers(self, queued: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        return self._client._run(queued)
