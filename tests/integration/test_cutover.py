"""The cutover, owner by owner, under live traffic: shadow, switch 10 → 50 → 100 %, and nothing replicated afterwards
(an intruder's Redis write, a replay from the beginning, a snapshot) changes what the application wrote.

The application is two ``MigratingRedis`` instances, each driven by its own thread over its own owners, and every
command that succeeded is also run on an in-memory model of Redis (the pure command core): the model is what the
application wrote, whichever store took it. Each read the application makes is compared with the model as it
happens (a read of a switched owner answered from DynamoDB must already see every write, a read of a held owner must
see Redis' last state), and at the end both stores are compared with the model completely.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from redis.commands.core import DataAccessCommands

from replicator import pipeline
from replicator.adapters.dynamodb.cutover import PRUNE_AFTER_S, ControlStore
from replicator.adapters.dynamodb.tables import create_tables
from replicator.core.cutover import CutoverError, Heartbeat, Stage, position
from replicator.cutover import MigratingRedis
from replicator.local.demo import Workload, canonical_number, dynamodb_view, redis_view
from tests.redis_calls import InMemoryRedis
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    config_file,
    ddb,
    eventually,
    fully_committed,
    messaging_config,
    messaging_table,
    mirror_dynamodb_view,
    mirror_redis_view,
    reset_to_earliest,
    run_cli,
)

pytestmark = pytest.mark.slow

CUTOVER = {"refresh_s": 0.3, "heartbeat_ttl_s": 2.0, "hold_timeout_s": 20.0}


def _counter(name: str, **labels: str) -> float:
    return sum(s.value for f in REGISTRY.collect() for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


class Recorded(DataAccessCommands):  # type: ignore[misc]
    """The application: commands through MigratingRedis (retried while held), then on the model once they succeed;
    sorted-set reads are compared with the model's answer."""

    def __init__(self, client: MigratingRedis, model: InMemoryRedis) -> None:
        self.client, self.model = client, model
        self.held = 0
        self.wrong: list[tuple[Any, Any, Any]] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        while True:
            try:
                answer = self.client.execute_command(*args, **options)
                break
            except redis.exceptions.TryAgainError:
                self.held += 1
        expected = self.model.execute_command(*args, **options)
        if str(args[0]).upper() == "ZRANGE" and answer != expected:
            self.wrong.append((args, answer, expected))
        return answer


def _traffic(app: Recorded, owners: list[str], seed: int, stop: threading.Event, steps: list[int]) -> None:
    """The demo's messaging workload, in the commands its rules can hold once switched (a string rule keeps no TTL),
    and a read of a sorted set after each write."""
    rng = random.Random(seed)
    clock = 1_800_000_000_000 + seed * 10_000_000
    while not stop.is_set():
        owner = rng.choice(owners)
        opponent = f"peer{rng.randrange(12):03d}"
        zset, meta = f"opponents:{owner}", f"meta:{owner}:{opponent}"
        clock += rng.randint(1, 1000)
        roll = rng.random()
        if roll < 0.40:
            app.zadd(zset, {opponent: clock})
        elif roll < 0.50:
            app.zincrby(zset, 0.5, opponent)
        elif roll < 0.62:
            app.zrem(zset, opponent)
        elif roll < 0.82:
            app.set(meta, json.dumps({"nick": opponent, "unread": rng.randrange(100)}))
        elif roll < 0.90:
            app.delete(meta)
        elif roll < 0.97:
            session = f"session:{owner}"  # the default mirror: its TTL too
            if rng.random() < 0.7:
                app.set(session, f"token-{clock}", ex=rng.randint(600, 3600))
            else:
                app.persist(session)
        else:
            app.delete(zset)
        app.zrange(f"opponents:{rng.choice(owners)}", 0, -1, withscores=True)
        steps[0] += 1
        stop.wait(0.002)


def _model_views(model: InMemoryRedis) -> tuple[dict, dict]:
    """The model as dynamodb_view and mirror_dynamodb_view show a store."""
    now = int(time.time() * 1000)
    messaging: dict = {}
    mirror: dict = {}
    for key, entry in model.entries.items():
        if not entry.alive(now):
            continue
        if key.startswith(b"opponents:"):
            owner = key.split(b":", 1)[1].decode()
            for member, score in entry.value.items():
                messaging.setdefault((owner, member.decode()), {})["timestamp"] = canonical_number(repr(score))
        elif key.startswith(b"meta:"):
            _, owner, opponent = key.decode().split(":", 2)
            messaging.setdefault((owner, opponent), {})["metadata"] = entry.value.decode()
        else:
            assert entry.kind == "string", key
            mirror[key] = (entry.kind, entry.value, entry.expire_at_ms)
    return messaging, mirror


def _same_mirror(want: dict, got: dict) -> bool:
    """Equal, expiries within 2 s (the model's clock is the test's, DynamoDB's the client's)."""
    return set(want) == set(got) and all(
        want[k][:2] == got[k][:2] and (want[k][2] is None) == (got[k][2] is None)
        and (want[k][2] is None or abs(want[k][2] - got[k][2]) < 2000) for k in want)


def test_owners_switch_share_by_share_under_live_traffic_and_nothing_replicated_undoes_the_application(
        stack, uid, tmp_path, request):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid, cutover=CUTOVER)
    path = config_file(stack, uid, tmp_path, cutover=CUTOVER)
    create_tables(client, config.rule_set, config.dynamodb.state_table)
    owners = [f"user{i:04d}" for i in range(40)]
    seeding = Workload(r, owners=40, seed=5)
    seeding.seed()
    model = InMemoryRedis()
    seeding_model = Workload(model, owners=40, seed=5)
    seeding_model.seed()
    out: list[str] = []
    steps = pipeline.cutover(pipeline.context(config), out=out.append)
    with Running(config) as run:
        run.start_applier().start_listener()
        apps = [Recorded(MigratingRedis(redis.Redis.from_url(stack.redis_url), config, client, instance=f"app-{i}"),
                         model) for i in range(2)]
        for app in apps:
            request.addfinalizer(app.client.close)
        stop, counts = threading.Event(), [[0], [0]]
        threads = [threading.Thread(target=_traffic, args=(apps[i], owners[i::2], 30 + i, stop, counts[i]),
                                    daemon=True) for i in range(2)]
        mismatches = _counter("replicator_shadow_reads_total", result="mismatch")
        try:
            for t in threads:
                t.start()
            steps.shadow(100)
            eventually(lambda: min(c[0] for c in counts) > 300, 60, message="traffic in shadow")
            status = steps.status()
            assert {h.instance for h in status.clients if h.live(time.time())} >= {"app-0", "app-1"}
            assert status.dead_letters == 0 and status.reconciles == 0
            eventually(lambda: steps.status().shadow().get("zrange", {}).get("match", 0) > 100, 30,
                       message="the clients' shadow reads in status")
            assert "shadow reads (clients' totals):" in "\n".join(steps.status().lines())

            for share in (10, 50, 100):
                mark = sum(c[0] for c in counts)
                plan = steps.switch(share, timeout_s=120)
                assert plan.dynamodb == share and plan.switching is None
                eventually(lambda m=mark: sum(c[0] for c in counts) > m + 200, 60, message=f"traffic at {share}%")
            eventually(lambda: "verdict: ready to complete" in "\n".join(steps.status().lines()), 10,
                       message="status: ready to complete")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert [w for app in apps for w in app.wrong] == []
        assert _counter("replicator_shadow_reads_total", result="mismatch") == mismatches
        assert any("switched to DynamoDB; writes were held" in line for line in out), out

        # Every owner is switched: what happens in Redis no longer reaches DynamoDB.
        fenced = _counter("replicator_events_applied_total", result="switched")
        r.set("meta:user0003:peer001", "intruder")
        r.zadd("opponents:user0004", {"intruder": 1})
        r.delete("opponents:user0005")
        eventually(lambda: fully_committed(config), 60, message="the intruder's events consumed")
        report = run.snapshot()
        assert report.events_published > 40
        eventually(lambda: fully_committed(config), 60, message="the snapshot consumed")
    # A replay from the beginning, and a listener restart (a gap: its start re-snapshot publishes Redis' states,
    # the intruder's among them).
    reset_to_earliest(config.kafka, config.kafka.group_id, config.kafka.topic)
    with Running(config) as run:
        run.start_applier().start_listener()
        eventually(lambda: fully_committed(config), 120, message="the replay and the re-snapshot consumed")
    assert _counter("replicator_events_applied_total", result="switched") > fenced + 40

    state: dict[str, Any] = {}

    def equal() -> bool:
        want_messaging, want_mirror = _model_views(model)  # short TTLs of the workload pass meanwhile
        state["messaging"] = dynamodb_view(client, messaging_table(config))
        state["mirror"] = mirror_dynamodb_view(client, config.default.table)
        return state["messaging"] == want_messaging and _same_mirror(want_mirror, state["mirror"])

    eventually(equal, 30, interval=0.5, message="DynamoDB equal to what the application wrote")
    # Redis is the warm copy: equal too, but for what the intruder did there.
    want_messaging, want_mirror = _model_views(model)
    warm = {k: dict(v) for k, v in want_messaging.items()}
    warm.setdefault(("user0003", "peer001"), {})["metadata"] = "intruder"
    warm[("user0004", "intruder")] = {"timestamp": "1"}
    for key in [k for k in warm if k[0] == "user0005"]:
        warm[key].pop("timestamp", None)
        if not warm[key]:
            del warm[key]
    assert redis_view(r) == warm

    # verify leaves switched owners out; --switched compares their Redis copy and finds what the intruder did.
    everyone = run_cli("verify", "--config", str(path), "--settle-seconds", "0.2", "--json")
    assert everyone.returncode == 0, everyone.stdout + everyone.stderr
    assert json.loads(everyone.stdout)["keys_checked"] == 0 and json.loads(everyone.stdout)["skipped_keys"] > 40
    switched = run_cli("verify", "--config", str(path), "--settle-seconds", "0.2", "--switched")
    assert switched.returncode == 1, switched.stdout + switched.stderr
    assert "3 drifted" in switched.stdout, switched.stdout
    for key in ("meta:user0003:peer001", "opponents:user0004", "opponents:user0005"):
        assert key in switched.stdout, switched.stdout
    # A repair has nothing to repair there (switched owners are left out), and status shows the last whole verify.
    repaired = run_cli("verify", "--config", str(path), "--settle-seconds", "0.2", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    eventually(equal, 30, interval=0.5, message="DynamoDB still equal to what the application wrote")
    verified = steps.status().verified
    assert verified is not None and verified.whole and (verified.keys_checked, verified.drifted) == (0, 0)
    assert _same_mirror(want_mirror, {k: v for k, v in mirror_redis_view(r).items()})


def test_a_switch_waits_for_a_client_on_an_older_plan_and_gives_up_to_shadow(stack, uid, tmp_path):
    """A client that stops refreshing (a stuck process whose heartbeat still counts) holds a switch up: the switch
    names it, times out and leaves the owners in shadow; once its heartbeat expires, nobody waits for it."""
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid, cutover=CUTOVER)
    path = config_file(stack, uid, tmp_path, cutover=CUTOVER)
    create_tables(client, config.rule_set, config.dynamodb.state_table)
    r.zadd("opponents:user0001", {"a": 1})
    out: list[str] = []
    steps = pipeline.cutover(pipeline.context(config), out=out.append)
    control = ControlStore(client, config.dynamodb.state_table)
    with Running(config) as run:
        run.start_applier().start_listener()
        refused = run_cli("cutover", "switch", "--share", "50", "--config", str(path))
        assert refused.returncode == 1 and "shadow them before switching" in refused.stderr, refused.stderr
        shadowed = run_cli("cutover", "shadow", "--share", "100", "--config", str(path))
        assert shadowed.returncode == 0, shadowed.stderr
        assert "epoch 1: 100% of the owners in shadow" in shadowed.stdout
        assert "ready to switch up to 100%" in shadowed.stdout, shadowed.stdout
        stuck = MigratingRedis(redis.Redis.from_url(stack.redis_url), config, client, instance="stuck")
        stuck._stop.set()  # its heartbeat thread ends: the last heartbeat stays until it expires
        stuck._heart.join(5)
        with pytest.raises(CutoverError, match="stuck"):
            steps.switch(50, timeout_s=1.0)
        assert any("waiting for clients on an older plan: stuck" in line for line in out), out
        plan = control.plan()
        assert plan.switching is None and plan.dynamodb == 0 and plan.shadow == 100
        assert "stuck" in "\n".join(steps.status().lines())
        eventually(lambda: steps.switch(50, timeout_s=60).dynamodb == 50, 30, interval=1.0,
                   message="a switch once the stuck client's heartbeat expired")
        assert control.plan().stage(b"user0001") is (Stage.DYNAMODB if position(b"user0001") < 0.5 else Stage.SHADOW)


def test_a_command_across_stages_is_refused_and_a_held_write_times_out_retryably(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid, cutover={**CUTOVER, "hold_timeout_s": 0.5})
    create_tables(client, config.rule_set, config.dynamodb.state_table)
    control = ControlStore(client, config.dynamodb.state_table)
    plan = control.plan()
    switched = plan.with_shadow(100).holding(50).switched()
    control.replace(plan, switched)
    inside = next(o for o in (b"user%04d" % i for i in range(100)) if switched.stage(o) is Stage.DYNAMODB)
    outside = next(o for o in (b"user%04d" % i for i in range(100)) if switched.stage(o) is Stage.SHADOW)
    app = MigratingRedis(redis.Redis.from_url(stack.redis_url), config, client)
    try:
        with pytest.raises(redis.exceptions.ResponseError, match="CROSSSTAGE"):
            app.delete(b"meta:" + inside + b":x", b"meta:" + outside + b":x")
        app.set(b"meta:" + inside + b":x", "dynamodb")
        app.set(b"meta:" + outside + b":x", "redis")
        assert r.get(b"meta:" + inside + b":x") == b"dynamodb"  # the warm copy
        assert app.get(b"meta:" + outside + b":x") == b"redis"
        holding = switched.with_shadow(100).holding(100)
        control.replace(switched, holding)
        eventually(lambda: app.plan().epoch == holding.epoch, 10, message="the client on the holding plan")
        assert app.get(b"meta:" + outside + b":x") == b"redis"  # reads go on, from Redis
        with pytest.raises(redis.exceptions.TryAgainError, match="TRYAGAIN"):
            app.set(b"meta:" + outside + b":x", "held")
        assert r.get(b"meta:" + outside + b":x") == b"redis"
        assert app.set(b"meta:" + inside + b":x", "still dynamodb")  # switched owners are not held
    finally:
        app.close()


def test_back_returns_switched_owners_to_redis_and_replication_holds_them_again(stack, uid, tmp_path, request):
    """After a switch and the application's own writes (native versions), ``back`` refuses while the warm copy
    differs, then with ``--force`` and live traffic re-bases the owners on Redis: Redis writes replicate again, also
    to the items the application wrote, and a replay from the beginning changes nothing."""
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid, cutover=CUTOVER)
    create_tables(client, config.rule_set, config.dynamodb.state_table)
    owners = [f"user{i:04d}" for i in range(12)]
    for owner in owners:
        r.zadd(f"opponents:{owner}", {"peer000": 1, "peer001": 2, "peer002": 3})
        r.set(f"meta:{owner}:peer000", "redis")
    r.set("session:user0000", "token", ex=3600)
    out: list[str] = []
    with Running(config) as run:
        run.start_applier().start_listener()
        steps = pipeline.cutover(pipeline.context(config), out=out.append)
        app = MigratingRedis(redis.Redis.from_url(stack.redis_url), config, client, instance="app")
        request.addfinalizer(app.close)
        steps.shadow(100)
        steps.switch(100, timeout_s=120)
        for owner in owners:
            app.zadd(f"opponents:{owner}", {"app": 5})
            app.zrem(f"opponents:{owner}", "peer001")
            app.set(f"meta:{owner}:app", "app")
            app.delete(f"meta:{owner}:peer000")
        app.set("session:user0000", "app-token", ex=600)
        r.set("meta:user0002:app", "diverged")  # a mirror write that failed, as far as DynamoDB knows

        with pytest.raises(CutoverError, match="meta:user0002:app"):
            steps.back(0, timeout_s=60)
        plan = steps.status().plan
        assert (plan.dynamodb, plan.returning) == (100, None)
        assert any("back abandoned; the held owners stay switched" in line for line in out), out
        eventually(lambda: app.plan().epoch == plan.epoch, 10, message="the client on the plan back gave up")
        assert app.get("meta:user0002:app") == b"app"  # DynamoDB is still the truth there

        # Live traffic on other owners from a second instance while the owners go back.
        busy = MigratingRedis(redis.Redis.from_url(stack.redis_url), config, client, instance="busy")
        request.addfinalizer(busy.close)
        stop, writes = threading.Event(), [0, 0]  # done, held (retried)
        traffic = threading.Thread(target=_live_writes, args=(busy, owners[6:], stop, writes), daemon=True)
        traffic.start()
        try:
            eventually(lambda: writes[0] > 50, 30, message="live writes before back")
            before = writes[0]
            done = steps.back(0, force=True, timeout_s=120)
            eventually(lambda: writes[0] > before + 100, 30, message="live writes after back")
        finally:
            stop.set()
            traffic.join(30)
        assert (done.dynamodb, done.returning, done.shadow) == (0, None, 100)
        assert any("re-based" in line for line in out), out
        eventually(lambda: app.plan().epoch == done.epoch, 10, message="the client on the final plan")
        assert app.get("meta:user0002:app") == b"diverged"  # Redis answers again, and DynamoDB followed it

        # Redis is the truth again: its writes replicate, to the items the application wrote too.
        r.zadd("opponents:user0001", {"app": 1})
        r.delete("meta:user0003:app")
        r.zrem("opponents:user0004", "app")
        r.set("session:user0000", "redis-token", ex=900)
        app.set("meta:user0005:app", "written through redis again")  # shadow: the client writes Redis
        assert r.get("meta:user0005:app") == b"written through redis again"
        assert_converged(r, client, config)
    reset_to_earliest(config.kafka, config.kafka.group_id, config.kafka.topic)
    with Running(config) as run:
        run.start_applier()
        eventually(lambda: fully_committed(config), 120, message="the replay consumed")
        assert_converged(r, client, config)


def _live_writes(app: MigratingRedis, owners: list[str], stop: threading.Event, writes: list[int]) -> None:
    """Zset and string-rule writes to ``owners`` until stopped; a held write (TryAgainError) is counted and retried."""
    rng = random.Random(3)
    while not stop.is_set():
        owner = rng.choice(owners)
        try:
            if rng.random() < 0.6:
                app.zadd(f"opponents:{owner}", {f"live{rng.randrange(5)}": writes[0]})
            else:
                app.set(f"meta:{owner}:live", f"v{writes[0]}")
            writes[0] += 1
        except redis.exceptions.TryAgainError:
            writes[1] += 1
        stop.wait(0.005)


def test_a_switch_waits_for_appliers_thousands_of_events_behind(stack, uid, request):
    """The appliers are stopped while the application writes thousands of changes in shadow: the switch holds the
    writes until they have applied every one, and the first reads from DynamoDB see all of them."""
    clean_redis(stack)
    client = ddb(stack)
    config = messaging_config(stack, uid, cutover=CUTOVER)
    create_tables(client, config.rule_set, config.dynamodb.state_table)
    out: list[str] = []
    steps = pipeline.cutover(pipeline.context(config), out=out.append)
    model = InMemoryRedis()
    app = Recorded(MigratingRedis(redis.Redis.from_url(stack.redis_url), config, client, instance="app"), model)
    request.addfinalizer(app.client.close)
    owners = [f"user{i:04d}" for i in range(30)]
    with Running(config) as capture:
        capture.start_listener()
        steps.shadow(100)
        for i in range(3000):
            owner = owners[i % len(owners)]
            app.zadd(f"opponents:{owner}", {f"peer{i % 47:03d}": 1_800_000_000_000 + i})
            if i % 7 == 0:
                app.set(f"meta:{owner}:peer{i % 13:03d}", f"v{i}")
            if i % 11 == 0:
                app.zrem(f"opponents:{owner}", f"peer{(i + 5) % 47:03d}")
        eventually(lambda: (steps.status().lag or 0) > 2000, 60, message="thousands of events waiting")
        result: dict[str, Any] = {}
        switching = threading.Thread(target=lambda: result.setdefault("plan", steps.switch(100, timeout_s=300)),
                                     daemon=True)
        switching.start()
        eventually(lambda: any(line.startswith("appliers:") for line in out), 60, message="the switch waiting")
        assert "plan" not in result and steps.status().plan.switching == 100
        with Running(config) as apply:
            apply.start_applier()
            switching.join(300)
            assert result["plan"].dynamodb == 100, out
            eventually(lambda: app.client.plan().epoch == result["plan"].epoch, 10, message="client switched")
            for owner in owners:  # answered by DynamoDB now, compared with the model by Recorded
                app.zrange(f"opponents:{owner}", 0, -1, withscores=True)
            assert app.wrong == []
            want, _mirror = _model_views(model)
            assert dynamodb_view(client, messaging_table(config)) == want


def test_reading_every_clients_heartbeat_is_one_request_and_long_gone_clients_are_pruned(stack, uid):
    """A switch polls the heartbeats while it holds writes, and the state table holds a head for every key: reading
    them is one BatchGetItem, never a Scan. A client that closed is gone at once; one that died is pruned later."""
    client = ddb(stack)
    config = messaging_config(stack, uid)
    create_tables(client, config.rule_set, config.dynamodb.state_table)
    control = ControlStore(client, config.dynamodb.state_table)
    now = time.time()
    for i in range(40):
        control.beat(Heartbeat(f"app-{i:02d}", 3, now, now + 15, (("zrange", "match", i),)))
    control.beat(Heartbeat("app-05", 4, now + 1, now + 16, ()))  # a later beat replaces the earlier one
    control.beat(Heartbeat("died", 2, now - PRUNE_AFTER_S - 60, now - PRUNE_AFTER_S - 45, ()))
    control.beat(Heartbeat("lagging", 1, now - 30, now - 15, ()))  # expired, not yet pruned: status shows it
    control.forget("app-07")
    calls: list[str] = []

    def count(model: Any = None, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-call.dynamodb", count)
    try:
        beats = {h.instance: h for h in control.heartbeats()}
        assert calls == ["BatchGetItem", "UpdateItem"]  # the read, and the dead client's entry removed
        assert sorted(beats) == sorted([f"app-{i:02d}" for i in range(40) if i != 7] + ["lagging"])
        assert beats["app-05"].epoch == 4 and beats["app-05"].shadow == ()
        assert beats["app-12"] == Heartbeat("app-12", 3, round(now, 3), round(now + 15, 3), (("zrange", "match", 12),))
        assert not beats["lagging"].live(now)
        calls.clear()
        assert sorted(h.instance for h in control.heartbeats()) == sorted(beats)
        assert calls == ["BatchGetItem"]
    finally:
        client.meta.events.unregister("before-call.dynamodb", count)
