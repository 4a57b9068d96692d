"""Nothing lost, nothing stale, whatever happens on the way: killed processes, lost connections, paused services.

Faults are real: processes killed with SIGKILL, Redis connections killed with CLIENT KILL, services frozen with
SIGSTOP. Only DynamoDB throttling is injected at the botocore level, because DynamoDB Local never throttles.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from replicator import metrics
from replicator.local.demo import Workload
from replicator.local.stack import free_port
from tests.support import (
    Running,
    assert_converged,
    clean_redis,
    config_file,
    ddb,
    dead_letter_records,
    eventually,
    fully_committed,
    messaging_config,
    metric_sum,
    scrape,
    writing,
)


def _scrape(port, name):
    """Sum of a metric's samples on a process's /metrics; 0 while the process is not serving yet."""
    return metric_sum(scrape(port), name)


def test_a_lost_redis_subscription_is_a_gap_and_the_resnapshot_recovers_what_it_missed(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid, capture={"reconnect_backoff_s": [1.0, 2.0]})
    url = urlsplit(stack.redis_url)  # the listener names its node after the URL's host and port
    gaps = metrics.NOTIFICATION_GAPS.labels(node=f"{url.hostname}:{url.port or 6379}", reason="disconnect")
    before = gaps._value.get()
    with Running(config) as run:
        run.start_applier().start_listener()
        Workload(r, owners=10).seed(opponents=3)
        assert_converged(r, client, config)
        r.client_kill_filter(_type="pubsub")
        # Written while the listener is disconnected (it waits at least 0.5 s): no notification will ever say so.
        r.zadd("opponents:during-gap", {"p1": 1, "p2": 2})
        r.set("meta:during-gap:p1", "written in the gap")
        r.delete("opponents:user0001")
        assert_converged(r, client, config)
    assert gaps._value.get() >= before + 1


def test_listener_killed_and_restarted_while_writes_continue_loses_nothing(stack, uid, tmp_path, processes):
    r, client = clean_redis(stack), ddb(stack)
    port = free_port()
    path = config_file(stack, uid, tmp_path, metrics={"port": port})
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier()
        listener = processes("listen", path, tmp_path)
        eventually(lambda: _scrape(port, "replicator_notifications_gaps_total") >= 1, 60,
                   message="first listener subscribed")
        with writing(stack) as written:
            eventually(lambda: written[0] > 200, 30, message="writes before the kill")
            listener.kill()
            mark = written[0]
            eventually(lambda: written[0] > mark + 300, 30, message="writes while no listener runs")
            listener = processes("listen", path, tmp_path)
            eventually(lambda: _scrape(port, "replicator_notifications_gaps_total") >= 1, 60,
                       message="restarted listener subscribed")
            eventually(lambda: written[0] > mark + 600, 30, message="writes after the restart")
        assert_converged(r, client, config, timeout=90)
        assert _scrape(port, 'replicator_notifications_gaps_total') >= 1
        assert listener.terminate() == 0


def test_applier_killed_mid_stream_and_restarted_converges(stack, uid, tmp_path, processes):
    r, client = clean_redis(stack), ddb(stack)
    path = config_file(stack, uid, tmp_path, apply={"max_batch": 50, "poll_timeout_ms": 100})
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_listener()
        applier = processes("apply", path, tmp_path)
        with writing(stack, owners=40) as written:
            eventually(lambda: written[0] > 1500, 60, message="a first stream of events")
            applier.kill()
            eventually(lambda: written[0] > 3500, 60, message="more events while no applier runs")
        applier = processes("apply", path, tmp_path)
        assert_converged(r, client, config, timeout=120)
        eventually(lambda: fully_committed(config), 60, message="everything committed")
        assert applier.terminate() == 0


def test_sigterm_finishes_the_batch_commits_and_exits_cleanly(stack, uid, tmp_path, processes):
    r, client = clean_redis(stack), ddb(stack)
    path = config_file(stack, uid, tmp_path)
    config = messaging_config(stack, uid)
    listener = processes("listen", path, tmp_path)
    applier = processes("apply", path, tmp_path)
    eventually(lambda: "subscribed" in listener.output(), 60, message="listener subscribed")
    Workload(r, owners=15).seed(opponents=5)
    assert_converged(r, client, config, timeout=90)
    eventually(lambda: fully_committed(config), 60, message="everything committed")
    assert listener.terminate() == 0, listener.output()[-2000:]
    assert applier.terminate() == 0, applier.output()[-2000:]
    assert fully_committed(config)
    assert '"level": "error"' not in listener.output() + applier.output()


@pytest.mark.slow
@pytest.mark.parametrize(("service", "fault"), [
    ("dynamodb", "paused"),  # DynamoDB Local is in-memory: freezing is the faithful "stop" (a restart loses data)
    ("kafka", "paused"),
    ("kafka", "stopped"),  # stopped, then restarted on the same port and log directory
])
def test_a_service_down_for_seconds_while_writes_continue_loses_nothing(stack, uid, service, fault):
    if stack.origins[service] != "process":
        pytest.skip(f"{service} is the one an environment variable names, not the stack's own process")
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()
        with writing(stack) as written:
            eventually(lambda: written[0] > 200, 30, message="writes before the fault")
            with getattr(stack, fault)(service):
                mark = written[0]
                eventually(lambda: written[0] > mark + 500, 30, message=f"writes while {service} is {fault}")
            eventually(lambda: written[0] > mark + 1000, 60, message="writes after it is back")
        assert_converged(r, client, config, timeout=180)
        eventually(lambda: fully_committed(config), 90, message="everything committed")


def test_frozen_dynamodb_holds_the_offsets_back(stack, uid):
    if stack.origins["dynamodb"] != "process":
        pytest.skip("DYNAMODB_ENDPOINT_URL names the endpoint; only the stack's own process can be frozen")
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    from tests.support import committed_and_end

    def committed_total():
        return sum(c or 0 for c in committed_and_end(config)[0].values())

    with Running(config) as run:
        run.start_applier().start_listener()
        Workload(r, owners=5).seed(opponents=2)
        eventually(lambda: fully_committed(config), 60, message="seed committed")
        with stack.paused("dynamodb"):
            base = committed_total()
            Workload(r, owners=5, seed=99).seed(opponents=4)
            eventually(lambda: sum(committed_and_end(config)[1].values()) > base, 30, message="events published")
            # Asserting that something does not happen needs a duration: watch the offsets for two seconds.
            watch_until = time.monotonic() + 2
            while time.monotonic() < watch_until:
                assert committed_total() == base, "offsets moved while DynamoDB could not take the writes"
        assert_converged(r, client, config, timeout=120)
        eventually(lambda: fully_committed(config), 60, message="committed after the thaw")


def test_throttled_writes_are_retried_with_backoff_and_nothing_is_lost(stack, uid):
    """DynamoDB Local never throttles, so ThrottlingException is injected at the botocore level."""
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    throttles = metrics.DYNAMODB_THROTTLES._value.get()
    with Running(config) as run:
        run.start_applier()
        injected = _inject_throttles(run.applier._sink.writer.client, 12)
        run.start_listener()
        Workload(r, owners=8).seed(opponents=4)
        assert_converged(r, client, config, timeout=120)
    assert injected["n"] == 0
    assert metrics.DYNAMODB_THROTTLES._value.get() >= throttles + 12  # every throttled attempt is counted


def _inject_throttles(client, count):
    """Make the next ``count`` write requests answer ThrottlingException (DynamoDB Local never throttles)."""
    import botocore.awsrequest

    left = {"n": count}

    def throttle(**_kwargs):
        if left["n"] <= 0:
            return None
        left["n"] -= 1
        body = b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}'
        return botocore.awsrequest.AWSResponse("http://local", 400, {"x-amzn-requestid": "x"}, _Raw(body))

    for operation in ("UpdateItem", "BatchExecuteStatement"):
        client.meta.events.register(f"before-send.dynamodb.{operation}", throttle)
    return left


def test_a_retried_batch_dead_letters_its_poison_record_once(stack, uid):
    from kafka import KafkaProducer

    from replicator import pipeline
    from replicator.adapters.kafka import broker

    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_listener()
        r.zadd("opponents:amy", {"p1": 1})
        eventually(lambda: len(_records(config)) >= 1, 30, message="the event on the topic")
        producer = KafkaProducer(**broker.client_kwargs(config.kafka))
        producer.send(config.kafka.topic, key=b"amy", value=b"poison").get(30)
        producer.close()
    with Running(config) as run:
        applier = pipeline.applier(run.ctx)
        # Enough to exhaust botocore's own attempts once: the whole batch is then retried by the applier.
        left = _inject_throttles(applier._sink.writer.client, 6)
        run._spawn("applier", applier.run)
        assert_converged(r, client, config)
        eventually(lambda: fully_committed(config), 30, message="batch committed")
    assert left["n"] == 0
    assert len(dead_letter_records(config)) == 1


def _records(config):
    from tests.support import topic_records

    return topic_records(config)


class _Raw:
    def __init__(self, body):
        self._body = body

    def stream(self, **_kwargs):
        yield self._body

    def read(self, *_args, **_kwargs):
        body, self._body = self._body, b""
        return body

