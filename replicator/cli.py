"""``replicator`` command line: listen, apply, snapshot, demo.

Every command reads ``--config FILE`` (YAML) with ``REPLICATOR_<SECTION>_<FIELD>`` env overrides, logs JSON to
stderr, and stops cleanly on SIGTERM/SIGINT (stop reading, finish and commit the batch in flight, flush the producer).
Errors the user can fix print as one line: ``replicator: error: <what>: <why>; <fix>``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from replicator import __version__, logs, metrics, pipeline
from replicator.config import Config, load_config
from replicator.errors import ConfigError, ReplicatorError

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


def _run_until_stopped(args: argparse.Namespace, build: Callable[[pipeline.Context], Any]) -> int:
    """A long-running command: serve metrics, build the stage, run it until SIGTERM/SIGINT."""
    config = _config(args)
    metrics.serve(config.metrics.port)
    stage = build(pipeline.context(config))
    stage.run(_stop_on_signals())
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    return _run_until_stopped(args, pipeline.listener)


def cmd_apply(args: argparse.Namespace) -> int:
    return _run_until_stopped(args, pipeline.applier)


def cmd_snapshot(args: argparse.Namespace) -> int:
    config = _config(args)
    metrics.serve(config.metrics.port)
    loader = pipeline.snapshot_loader(pipeline.context(config))
    report = loader.run(_stop_on_signals())
    print(f"snapshot: {report.keys_scanned} keys scanned, {report.events_published} events published "
          f"in {report.seconds:.1f}s")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from replicator import broker
    from replicator.apply import dead_letters

    config = _config(args)
    caps = broker.detect(config.kafka)
    if args.action == "list":
        letters = dead_letters.list_dead_letters(config.kafka, caps, config.kafka.topic)
        for letter in letters[-args.limit:] if args.limit else letters:
            print(letter.line())
        print(f"{len(letters)} dead letter(s) in {dead_letters.dlq_topic(config.kafka.topic)}")
    else:
        sent = dead_letters.redrive(config.kafka, caps, config.kafka.topic, set(args.reason or ()) or None)
        print(f"re-drove {sent} dead letter(s) to {config.kafka.topic}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from replicator.demo import run_demo

    return run_demo(owners=args.owners, seconds=args.seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replicator", description="Redis → Kafka → DynamoDB change-data-capture.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("listen", cmd_listen, "capture keyspace notifications and publish change events"),
        ("apply", cmd_apply, "consume change events and write them to DynamoDB"),
        ("snapshot", cmd_snapshot, "backfill existing keys through the same path"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", "-c", required=True, help="YAML config file (env: REPLICATOR_<SECTION>_<FIELD>)")
        p.set_defaults(fn=fn)
    dlq = sub.add_parser("dlq", help="list or re-drive the dead-letter topic",
                         description="list the dead-letter topic, or re-publish its records after a fix")
    dlq.add_argument("action", choices=["list", "redrive"])
    dlq.add_argument("--config", "-c", required=True)
    dlq.add_argument("--limit", type=int, default=0, help="list: only the last N")
    dlq.add_argument("--reason", action="append", help="redrive: only these reasons (repeatable)")
    dlq.set_defaults(fn=cmd_dlq)
    demo = sub.add_parser("demo", help="run the whole pipeline on an embedded local stack and report")
    demo.add_argument("--owners", type=int, default=20)
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.set_defaults(fn=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
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
