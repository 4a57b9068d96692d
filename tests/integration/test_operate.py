"""What an operator watches: /metrics, /healthz and /readyz of `listen` and `apply` running as processes."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from replicator.local.stack import free_port
from tests.support import (
    assert_converged,
    clean_redis,
    config_file,
    ddb,
    eventually,
    http_get,
    messaging_config,
    metric_sum,
    scrape,
)

OWNERS, OPPONENTS = 10, 5


def test_metrics_count_what_was_written_and_lag_drains_to_zero(stack, uid, tmp_path, processes):
    r, client = clean_redis(stack), ddb(stack)
    listen_port, apply_port = free_port(), free_port()
    settings = {"metrics": {"lag_interval_s": 0.5}}
    applier = processes("apply", config_file(stack, uid, tmp_path, **settings), tmp_path,
                        env={"REPLICATOR_METRICS_PORT": str(apply_port)})
    listener = processes("listen", config_file(stack, uid, tmp_path, **settings), tmp_path,
                         env={"REPLICATOR_METRICS_PORT": str(listen_port)})
    for port in (listen_port, apply_port):
        eventually(lambda port=port: http_get(port, "/readyz")[0] == 200, 60, message=f"ready on {port}")
    # The listener's start is a gap: wait for its re-snapshot and reconcile (of empty stores) before writing.
    eventually(lambda: metric_sum(scrape(listen_port), "replicator_gap_resnapshots_total") == 1, 30,
               message="start re-snapshot done")

    for owner in range(OWNERS):  # one command per key: every key is one notification and one event
        r.zadd(f"opponents:{owner}", {f"o{o}": 1_700_000_000 + o for o in range(OPPONENTS)})
        for opponent in range(OPPONENTS):
            r.set(f"meta:{owner}:o{opponent}", f"meta {owner}/{opponent}")
    keys = OWNERS * (1 + OPPONENTS)
    assert_converged(r, client, messaging_config(stack, uid))

    def drained():
        listened, applied = scrape(listen_port), scrape(apply_port)
        lags = [v for k, v in applied.items() if k.startswith("replicator_consumer_lag{")]
        return (metric_sum(applied, "replicator_events_applied_total") == keys
                and len(lags) == stack.kafka_partitions and not any(lags)) and (listened, applied)

    listened, applied = eventually(drained, 30, message="every event applied and the lag at 0 on every partition")
    assert metric_sum(listened, "replicator_events_captured_total", origin="LIVE") == keys
    assert metric_sum(listened, "replicator_events_captured_total") == keys  # the start re-snapshot found nothing
    assert metric_sum(listened, "replicator_events_published_total") == keys
    assert metric_sum(listened, "replicator_notifications_gaps_total", reason="start") == 1
    assert metric_sum(applied, "replicator_events_applied_total", result="applied") == keys
    assert metric_sum(applied, "replicator_end_to_end_latency_seconds_count") == keys
    assert 0 < metric_sum(applied, "replicator_end_to_end_latency_seconds_sum") < keys * 30
    assert metric_sum(applied, "replicator_apply_batch_seconds_count") >= 1
    assert metric_sum(applied, "replicator_dlq_events_total") == 0
    assert listener.terminate() == 0 and applier.terminate() == 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_readyz_is_503_until_redis_answers_then_200(stack, uid, tmp_path, processes):
    port, redis_port = free_port(), free_port()
    path = config_file(stack, uid, tmp_path, redis={"url": f"redis://127.0.0.1:{redis_port}/0"},
                       metrics={"port": port})
    listener = processes("listen", path, tmp_path)
    eventually(lambda: http_get(port, "/healthz") == (200, "ok\n"), 30, message="/healthz up")
    status, body = eventually(lambda: (reply := http_get(port, "/readyz"))[0] and reply, 30, message="/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["dependencies"].startswith(f"cannot reach Redis at redis://127.0.0.1:{redis_port}")

    server = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        status, body = eventually(lambda: (reply := http_get(port, "/readyz"))[0] == 200 and reply, 60,
                                  message="ready once Redis answers")
        assert json.loads(body) == {"ready": True, "checks": {"dependencies": "ok", "running": "ok",
                                                              "subscribed": "ok"}}
        assert listener.terminate() == 0, listener.output()[-2000:]
    finally:
        server.kill()
        server.wait(10)
