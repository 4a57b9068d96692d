"""``replicator`` command line: listen, apply, snapshot, dlq, replay, status, verify, plan, preflight, cutover, demo.

Every command reads ``--config FILE`` (YAML) with ``REPLICATOR_<SECTION>_<FIELD>`` env overrides, logs JSON to
stderr, and stops cleanly on SIGTERM/SIGINT (stop reading, finish and commit the batch in flight, flush the producer).
Errors the user can fix print as one line: ``replicator: error: <what>: <why>; <fix>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from prometheus_client import REGISTRY, write_to_textfile

from replicator import __version__, health, logs, pipeline, retry
from replicator.adapters.dynamodb.calls import make_client
from replicator.adapters.dynamodb.capacity import ReadCapacity
from replicator.adapters.dynamodb.errors import translate
from replicator.adapters.kafka import broker, dead_letters
from replicator.adapters.redis.client import RedisError, is_cluster_client
from replicator.adapters.redis.cluster import dbsize
from replicator.capture.reconcile import PendingReconciles
from replicator.core.config import Config
from replicator.core.cutover import WHOLE_KEYSPACE, Stage, VerifyRecord
from replicator.core.errors import ConfigError, ReplicatorError
from replicator.core.verification import merge_shards
from replicator.loading import load_config
from replicator.local.demo import run_demo
from replicator.tools import dlq, plan, preflight, replay, status, verify
from replicator.tools.progress import Progress

log = logging.getLogger("replicator")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"kv": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    log.info("config", extra={"kv": {"config": config.masked()}})
    return config


def _start(build: Callable[[], Any], ready: health.Health, stop: threading.Event) -> Any:
    """Build a stage, retrying while a service does not answer (reported on /readyz); None if stopped first.

    A pod whose Kafka or Redis is not up yet waits, not-ready, instead of crash-looping; mistakes (a missing table,
    a bad config) still fail at once.
    """
    if stop.is_set():
        return None
    try:
        stage = retry.call(build, retry.SERVICE_START, stop=stop,
                           on_retry=lambda exc: ready.set("dependencies", str(exc)))
    except retry.Stopped:
        return None
    ready.set("dependencies", None)
    return stage


@contextlib.contextmanager
def _serving(ready: health.Health, port: int | None) -> Iterator[None]:
    """/metrics, /healthz and /readyz on ``port`` (if set) while the block runs."""
    endpoints = health.serve(ready, port)
    try:
        yield
    finally:
        if endpoints is not None:
            endpoints.close()


def _show_progress(args: argparse.Namespace) -> bool:
    return args.progress if args.progress is not None else sys.stderr.isatty()


def _progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress line on stderr (default: when stderr is a terminal)")


def _run_until_stopped(args: argparse.Namespace, build: Callable[[pipeline.Context], Any],
                       readiness: Callable[[Any, health.Health], None]) -> int:
    """A long-running command: serve the endpoints, build the stage, run it until SIGTERM/SIGINT."""
    config = _config(args)
    stop = _stop_on_signals()
    ready = health.Health()
    ready.set("dependencies", "starting")
    ready.when("running", lambda: not stop.is_set(), "shutting down")
    with _serving(ready, config.metrics.port):
        stage = _start(lambda: build(pipeline.context(config)), ready, stop)
        if stage is not None:
            readiness(stage, ready)
            stage.run(stop)
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    def readiness(listener: Any, ready: health.Health) -> None:
        ready.when("subscribed", listener.subscribed.is_set, "not subscribed to Redis keyspace notifications")

    return _run_until_stopped(args, pipeline.listener, readiness)


def cmd_apply(args: argparse.Namespace) -> int:
    def readiness(applier: Any, ready: health.Health) -> None:
        ready.when("assigned", applier.assigned.is_set, "no partitions assigned (more appliers than partitions, "
                   "or the group is rebalancing)")

    return _run_until_stopped(args, pipeline.applier, readiness)


def cmd_snapshot(args: argparse.Namespace) -> int:

    config = _config(args)
    stop = _stop_on_signals()
    ready = health.Health()
    ready.set("snapshot", None)
    with _serving(ready, config.metrics.port):
        loader = pipeline.snapshot_loader(pipeline.context(config), args.max_keys_per_second)
        progress = Progress("snapshot", loader.keys_estimate()) if _show_progress(args) else None
        report = loader.run(stop, resume=args.resume, progress=progress)
        if progress:
            progress.close()
    print(f"snapshot: {report.keys_scanned} keys scanned, {report.events_published} events published "
          f"in {report.seconds:.1f}s" + (" (interrupted: run again with --resume)" if stop.is_set() else ""))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:

    config = _config(args)
    broker.check_broker(config.kafka)
    if args.action == "list":
        letters = dlq.list_dead_letters(config.kafka, config.kafka.topic)
        for letter in letters[-args.limit:] if args.limit else letters:
            print(letter.line())
        print(f"{len(letters)} dead letter(s) in {dead_letters.dlq_topic(config.kafka.topic)}")
    else:
        sent = dlq.redrive(config.kafka, config.kafka.topic, set(args.reason or ()) or None)
        print(f"re-drove {sent} dead letter(s) to {config.kafka.topic}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:

    config = _config(args)
    broker.check_broker(config.kafka)
    if args.to_offset is not None:
        target = replay.Target("offset", args.to_offset)
    elif args.to_earliest:
        target = replay.Target("earliest")
    elif args.to_latest:
        target = replay.Target("latest")
    elif args.to_timestamp:
        target = replay.Target("timestamp", replay.parse_timestamp(args.to_timestamp))
    else:
        since = datetime.now(timezone.utc) - replay.parse_duration(args.by_duration)
        target = replay.Target("timestamp", int(since.timestamp() * 1000))
    group = args.group or config.kafka.group_id
    topic = args.topic or config.kafka.topic
    partitions = args.partitions
    moves = replay.reset_offsets(config.kafka, group, topic, target, partitions, dry_run=args.dry_run)
    print(replay.format_moves(moves, group, topic, target, args.dry_run))
    return 0


def cmd_status(args: argparse.Namespace) -> int:

    config = _config(args)
    group = args.group or config.kafka.group_id
    broker.check_broker(config.kafka)
    found = status.group_status(config.kafka, group, args.topic or config.kafka.topic)
    print(status.format_status(found))
    try:
        pending = PendingReconciles(make_client(config.dynamodb), config.dynamodb.state_table).list()
    except Exception as exc:  # status must work while DynamoDB does not answer
        print(f"reconciles: unknown ({translate(exc, 'reading the state table')})")
    else:
        print(status.format_reconciles(pending, found))
    return 0


def cmd_cutover(args: argparse.Namespace) -> int:
    config = _config(args)
    steps = pipeline.cutover(pipeline.context(config))
    if args.action != "status" and args.action != "abort" and args.share is None:
        raise ConfigError(f"cutover {args.action} needs --share P (the percentage of owners at or past the stage)")
    if args.action == "shadow":
        print(f"epoch {steps.shadow(args.share).epoch}: {args.share:g}% of the owners in shadow (clients follow "
              f"within {config.cutover.refresh_s:g}s)")
    elif args.action == "switch":
        steps.switch(args.share, timeout_s=args.timeout)
    elif args.action == "complete":
        print(f"epoch {steps.complete(args.share).epoch}: {args.share:g}% of the owners complete; Redis is no longer "
              "written for them")
    elif args.action == "back":
        steps.back(args.share, force=args.force, timeout_s=args.timeout)
    elif args.action == "abort":
        print(f"epoch {steps.abort().epoch}: no switch or back in progress")
    for line in steps.status().lines():
        print(line)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0: no drift; 1: drift (or keys an error left unchecked); 2: a usage or config error; 3: not finished
    (interrupted, or shards missing); 4: the run failed (a store unreachable): a Job retries it, --resume goes on."""
    try:
        return _verify_command(args)
    except ConfigError:
        raise
    except (ReplicatorError, RedisError, OSError) as exc:
        # Not an answer about the data: never 1 (drift), which a Job does not retry.
        print(f"replicator: error: verify failed: {exc}", file=sys.stderr)
        return 4


def _verify_command(args: argparse.Namespace) -> int:
    config = _config(args)
    ctx = pipeline.context(config)
    ddb = pipeline.dynamodb(ctx)
    shard, shards = _shard(args)
    scope = "switched" if args.switched else ""
    checkpoints = verify.VerifyCheckpoints(ddb, config.dynamodb.state_table, scope)
    if args.report:
        return _verify_report(args, ctx, checkpoints, shards)
    scoped = bool(args.sample or args.owner)
    if scoped and (shards > 1 or args.resume):
        raise ConfigError("verify --sample/--owner check a few keys: they take no --shard or --resume")
    client, node, db = pipeline.redis_client(config)
    offsets = pipeline.group_offsets(ctx)
    capacity = ReadCapacity(ddb, args.max_rcu)
    verifier = verify.Verifier(client, ddb, ctx.rules, config.dynamodb.state_table,
                               config.capture.max_inline_members, node, db, progress=offsets, capacity=capacity)
    plan_now = pipeline.cutover_plan(ctx)
    if args.switched and args.repair:
        raise ConfigError("verify --switched --repair: a switched owner's truth is DynamoDB, so there is nothing "
                          "to repair from Redis (its events are fenced); `cutover back` re-bases owners on Redis")
    owners, skipped_what = None, ""
    if args.switched:
        owners, skipped_what = (lambda o: plan_now.stage(o) is Stage.DYNAMODB), "of owners not switched"
    elif plan_now.dynamodb > 0:
        owners = lambda o: not plan_now.stage(o).switched  # noqa: E731
        skipped_what = "of owners switched to DynamoDB (verify --switched compares their Redis copy)"
    options = verify.VerifyOptions(
        sample=args.sample, owner=args.owner.encode() if args.owner else None, settle_s=args.settle_seconds,
        rechecks=args.rechecks, workers=args.workers, max_keys_per_second=args.max_keys_per_second,
        examples=args.examples, owners=owners, shard=shard, shards=shards, segments=args.segments,
        checkpoint_s=args.checkpoint_seconds, run=args.run or "")
    if args.dry_run:
        cost = verifier.estimate(options, plan.Planner(client, ctx.rules, config.capture.max_inline_members).plan(
            sample=10_000), args.max_rcu)
        if offsets is not None:
            offsets.close()
        print(json.dumps(cost.to_json(), indent=2) if args.json else cost.format())
        return 0
    estimate = args.sample or max(1, dbsize(client) // shards)
    progress = Progress("verify", estimate) if _show_progress(args) else None
    repair = (lambda keys: pipeline.repair(ctx, client, node, db, keys)) if args.repair else None
    try:
        report = verifier.run(options, _stop_on_signals(), progress, None if scoped else checkpoints,
                              resume=args.resume, repair=repair)
        report.skipped_what = skipped_what
    finally:
        if offsets is not None:
            offsets.close()
    if progress:
        progress.close()
    if not args.switched and shards == 1 and report.complete:  # the readiness `cutover status` weighs
        what = (f"owner {args.owner}" if args.owner else f"a sample of {args.sample} keys" if args.sample
                else WHOLE_KEYSPACE)
        pipeline.note_verify(ctx, VerifyRecord(time.time(), what, report.keys_checked,
                                               report.drift_keys + report.error_count, report.repaired))
    if args.metrics_file:
        write_to_textfile(args.metrics_file, REGISTRY)
    print(verify.report_json(report) if args.json else report.format())
    return _verify_exit(report)


def _verify_report(args: argparse.Namespace, ctx: pipeline.Context, checkpoints: verify.VerifyCheckpoints,
                   shards: int) -> int:
    """verify --report: the merged report of one run's shards (noted for `cutover status` once complete)."""
    records = checkpoints.all(args.shards or shards)
    report = merge_shards(records, args.examples, args.run)
    if report.complete and not args.switched:
        pipeline.note_verify(ctx, VerifyRecord(max(r.updated for r in records if r is not None), WHOLE_KEYSPACE,
                                               report.keys_checked, report.drift_keys + report.error_count,
                                               report.repaired))
    print(verify.report_json(report) if args.json else report.format())
    return _verify_exit(report)


def _verify_exit(report: verify.VerifyReport) -> int:
    """3: not finished (whatever was found so far); 1: drift, or keys an error left unchecked; 0: proven equal."""
    if not report.complete:
        return 3
    return 0 if report.proven else 1


def _shard(args: argparse.Namespace) -> tuple[int, int]:
    """``--shard I/N`` as (I, N); (0, 1) without it."""
    if not args.shard:
        return 0, 1
    text = args.shard
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text}: expected I/N, e.g. 0/4") from None
    if not 0 <= shard < shards:
        raise ConfigError(f"--shard {text}: I must be at least 0 and below N")
    return shard, shards


def cmd_plan(args: argparse.Namespace) -> int:

    config = _config(args)
    client, _node, _db = pipeline.redis_client(config)
    planner = plan.Planner(client, pipeline.context(config).rules, config.capture.max_inline_members)
    rate, owners = args.write_rate, None
    if args.measure_seconds:
        measured, owners = planner.measure(args.measure_seconds)
        rate = rate if rate is not None else measured
    result = planner.plan(args.sample, args.backfill_hours, rate, owners)
    print(plan.plan_json(result) if args.json else result.format())
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:

    config = _config(args)
    rules = pipeline.context(config).rules
    client, node, db = pipeline.redis_client(config)
    if args.acl:

        acl = preflight.minimal_acl(rules, db, is_cluster_client(client), config.redis.configure_notifications)
        print(f"ACL SETUSER {config.redis.username or 'replicator'} on >PASSWORD {acl}")
        return 0
    findings = preflight.redis_findings(client, rules, args.write_rate, node)
    findings += preflight.kafka_findings(config, args.appliers)
    findings += preflight.table_findings(make_client(config.dynamodb), rules, config.dynamodb.create_tables)
    print(preflight.format_findings(findings if args.all else [f for f in findings if f.level != "ok"]))
    return 1 if any(f.level == "blocker" for f in findings) else 0


def cmd_demo(args: argparse.Namespace) -> int:

    return run_demo(owners=args.owners, seconds=args.seconds, cutover=args.cutover)


def _group_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("--group", help="consumer group (default: kafka.group_id)")
    parser.add_argument("--topic", help="topic (default: kafka.topic)")


def _partition_list(text: str) -> list[int]:
    try:
        return sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of partition numbers like 0,3,7") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replicator", description="Redis → Kafka → DynamoDB change-data-capture.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="default: INFO for listen, apply, snapshot and demo; WARNING for the one-shot commands, "
                             "whose output is their table")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("listen", cmd_listen, "capture keyspace notifications and publish change events"),
        ("apply", cmd_apply, "consume change events and write them to DynamoDB"),
        ("snapshot", cmd_snapshot, "backfill existing keys through the same path (every primary of a cluster)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", "-c", required=True, help="YAML config file (env: REPLICATOR_<SECTION>_<FIELD>)")
        p.set_defaults(fn=fn)
        if name == "snapshot":
            p.add_argument("--resume", action="store_true",
                           help="continue an interrupted snapshot from each node's checkpoint")
            p.add_argument("--max-keys-per-second", type=float, metavar="R", help="rate limit over all nodes")
            _progress_argument(p)
    _operate_parsers(sub)
    _verify_parser(sub)
    _tool_parsers(sub)
    return parser


def _operate_parsers(sub: Any) -> None:
    """dlq, replay, cutover and status: the commands an operator runs against a running pipeline."""
    dlq = sub.add_parser("dlq", help="list or re-drive the dead-letter topic",
                         description="list the dead-letter topic, or re-publish its records after a fix")
    dlq.add_argument("action", choices=["list", "redrive"])
    dlq.add_argument("--config", "-c", required=True)
    dlq.add_argument("--limit", type=int, default=0, help="list: only the last N")
    dlq.add_argument("--reason", action="append", help="redrive: only these reasons (repeatable)")
    dlq.set_defaults(fn=cmd_dlq, quiet=True)
    replay = sub.add_parser(
        "replay", help="move the applier group's committed offsets to re-apply from there",
        description="Move a consumer group's committed offsets; the appliers re-apply from there when started. "
                    "Safe: writes are versioned, so re-applied old events change nothing newer. The group must "
                    "have no active members.")
    _group_arguments(replay)
    replay.add_argument("--partitions", type=_partition_list, help="comma-separated partition numbers (default: all)")
    replay.add_argument("--dry-run", action="store_true", help="print the moves, commit nothing")
    where = replay.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-offset", type=int, metavar="N", help="this offset in every chosen partition (clamped)")
    where.add_argument("--to-earliest", action="store_true", help="the oldest record Kafka still holds")
    where.add_argument("--to-latest", action="store_true", help="the end: skip everything not applied yet")
    where.add_argument("--to-timestamp", metavar="ISO8601",
                       help="first record at or after this time (UTC unless an offset is given)")
    where.add_argument("--by-duration", metavar="DURATION", help="this long ago, e.g. 2h, 90m, 7d")
    replay.set_defaults(fn=cmd_replay, quiet=True)
    steps = sub.add_parser(
        "cutover", help="move owners from Redis to DynamoDB, share by share: status, shadow, switch, back, complete",
        description="Stages per owner: redis -> shadow -> dynamodb -> complete (see the README's 'Cutting over'). "
                    "--share P is the percentage of owners the step leaves at or past its stage.")
    steps.add_argument("action", choices=["status", "shadow", "switch", "back", "complete", "abort"],
                       help="back: return switched owners to shadow (checked, re-based on Redis); abort: give up a "
                            "switch or back whose command was killed")
    steps.add_argument("--force", action="store_true",
                       help="back: make DynamoDB follow Redis for keys whose warm copy differs, instead of refusing")
    steps.add_argument("--config", "-c", required=True, help="YAML config file")
    steps.add_argument("--share", type=float, metavar="P", help="percentage of owners (0-100)")
    steps.add_argument("--timeout", type=float, default=600.0,
                       help="seconds a switch may wait for clients and appliers before it gives up (default 600)")
    steps.set_defaults(fn=cmd_cutover, quiet=True)
    status_ = sub.add_parser("status", help="lag per partition, last event times, members and DLQ size of the group")
    _group_arguments(status_)
    status_.set_defaults(fn=cmd_status, quiet=True)


def _verify_parser(sub: Any) -> None:
    """verify: its scope, sharding, resuming, pacing and reporting options."""
    check = sub.add_parser(
        "verify", help="compare Redis with DynamoDB through the rules; exit 1 on drift",
        description="Compare every captured Redis key (or a sample, or one owner's) with the DynamoDB items the rules "
                    "map it to, and report drift by kind. Tolerates live writes: differing keys are re-read before "
                    "they count. A whole-keyspace run saves where it is in the state table: --resume continues it, "
                    "--shard I/N splits it, --report merges the shards. Exit 0 without drift, 1 with drift, 2 on a "
                    "usage or config error, 3 when the run did not finish, 4 when it failed (a store unreachable).")
    check.add_argument("--config", "-c", required=True)
    check.add_argument("--switched", action="store_true",
                       help="during a cutover: compare only the owners switched to DynamoDB (their Redis copy "
                            "against DynamoDB, the check `cutover back` needs); by default they are skipped")
    scope = check.add_mutually_exclusive_group()
    scope.add_argument("--sample", type=int, metavar="N", help="N random keys instead of all")
    scope.add_argument("--owner", metavar="ID", help="only this owner's keys")
    check.add_argument("--repair", action="store_true",
                       help="re-publish drifted keys as REPAIR events through Kafka (the appliers fix DynamoDB), "
                            "chunk by chunk as they are found")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--workers", type=int, default=4, help="parallel readers (default 4)")
    check.add_argument("--max-keys-per-second", type=float, metavar="R", help="rate limit on both stores")
    check.add_argument("--max-rcu", type=float, metavar="R",
                       help="at most R DynamoDB read capacity units per second (as DynamoDB reports them)")
    check.add_argument("--shard", metavar="I/N",
                       help="verify shard I of N (owners by hash, Scan segments in turn); run N of them side by "
                            "side and merge them with --report")
    check.add_argument("--resume", action="store_true",
                       help="continue this shard's last unfinished run of the same --run, rules and Redis "
                            "primaries from its last checkpoint (anything else starts over)")
    check.add_argument("--report", action="store_true",
                       help="print the merged report of the last sharded run (--shards N); exit 3 while a shard "
                            "has not finished")
    check.add_argument("--shards", type=int, metavar="N", help="with --report: how many shards the run has")
    check.add_argument("--run", metavar="ID",
                       help="the run these shards belong to (the Helm Job passes its uid): a shard resumes, and "
                            "--report merges, only records of this run (default: --report takes the newest run)")
    check.add_argument("--dry-run", action="store_true",
                       help="state the Redis reads, DynamoDB read capacity and time the run would take, and stop")
    check.add_argument("--segments", type=int, default=4,
                       help="Scan segments per shard for the keys only DynamoDB holds (default 4)")
    check.add_argument("--checkpoint-seconds", type=float, default=30.0,
                       help="how often a run saves where it is, to resume from (default 30)")
    check.add_argument("--settle-seconds", type=float, default=2.0,
                       help="wait before re-reading a differing key (default 2)")
    check.add_argument("--rechecks", type=int, default=3, help="re-reads of a differing key (default 3)")
    check.add_argument("--examples", type=int, default=5, help="examples shown per kind (default 5)")
    _progress_argument(check)
    check.add_argument("--metrics-file", metavar="PATH",
                       help="write replicator_verify_drift_keys (Prometheus text format) for a textfile collector")
    check.set_defaults(fn=cmd_verify, quiet=True)


def _tool_parsers(sub: Any) -> None:
    """plan, preflight and demo."""
    planning = sub.add_parser(
        "plan", help="predict DynamoDB items, sizes and capacity from a sample of Redis",
        description="Sample the keyspace, map it through the rules and predict items, item sizes, the WCU for the "
                    "backfill and for the live write rate, and owners that would exceed one partition's limits.")
    planning.add_argument("--config", "-c", required=True)
    planning.add_argument("--sample", type=int, default=100_000,
                          help="keys to read (default 100000); a smaller keyspace is read whole: exact counts")
    planning.add_argument("--backfill-hours", type=float, default=24.0, help="time for the backfill (default 24)")
    planning.add_argument("--write-rate", type=float, metavar="R", help="Redis writes per second at peak")
    planning.add_argument("--measure-seconds", type=float, metavar="S",
                          help="measure the write rate (INFO commandstats) and per-owner rates (keyspace "
                               "notifications) for S seconds")
    planning.add_argument("--json", action="store_true")
    planning.set_defaults(fn=cmd_plan, quiet=True)
    checks = sub.add_parser(
        "preflight", help="check Redis, Kafka and DynamoDB settings before a migration; exit 1 on blockers",
        description="Check notify-keyspace-events, the pubsub output buffer, maxmemory-policy (on every primary), "
                    "the topic's partitions and the tables' key schemas and LSIs. One line per finding: what, why, "
                    "how to fix. Exit 1 when a blocker is found.")
    checks.add_argument("--config", "-c", required=True)
    checks.add_argument("--write-rate", type=float, metavar="R", help="peak Redis writes/s, to size the pubsub buffer")
    checks.add_argument("--appliers", type=int, metavar="N", help="applier replicas you plan to run")
    checks.add_argument("--all", action="store_true", help="also print the checks that passed")
    checks.add_argument("--acl", action="store_true",
                        help="print the least-privilege ACL SETUSER for the replicator's Redis user, and exit")
    checks.set_defaults(fn=cmd_preflight, quiet=True)
    demo = sub.add_parser("demo", help="run the whole pipeline on an embedded local stack and report")
    demo.add_argument("--owners", type=int, default=20)
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--cutover", action="store_true",
                      help="then move the application to DynamoDB owner by owner under live traffic (shadow, switch "
                           "10/50/100 %%) and compare DynamoDB with Redis' warm copy")
    demo.set_defaults(fn=cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level or ("WARNING" if getattr(args, "quiet", False) else "INFO"))
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"replicator: error: {exc}", file=sys.stderr)
        return 2
    except ReplicatorError as exc:
        print(f"replicator: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
