"""The endpoints every long-running command serves, over real HTTP on a loopback port."""

from __future__ import annotations

import json

from replicator import health, metrics
from tests.support import http_get


def test_readyz_names_the_failing_checks_and_healthz_stays_up():
    ready = health.Health()
    endpoints = health.Endpoints(ready, 0, host="127.0.0.1")
    try:
        assert http_get(endpoints.port, "/healthz") == (200, "ok\n")
        status, body = http_get(endpoints.port, "/readyz")
        assert (status, json.loads(body)) == (503, {"ready": False, "checks": {}})  # nothing started yet

        subscribed = []
        ready.set("dependencies", "cannot reach Redis at redis://127.0.0.1:1/0")
        ready.when("subscribed", lambda: bool(subscribed), "not subscribed")
        status, body = http_get(endpoints.port, "/readyz")
        assert status == 503
        assert json.loads(body)["checks"] == {"dependencies": "cannot reach Redis at redis://127.0.0.1:1/0",
                                              "subscribed": "not subscribed"}

        ready.set("dependencies", None)
        subscribed.append(True)
        assert http_get(endpoints.port, "/readyz") == (200, '{"checks": {"dependencies": "ok", "subscribed": "ok"}, '
                                                            '"ready": true}\n')
        ready.check("broken", lambda: 1 / 0)
        status, body = http_get(endpoints.port, "/readyz")
        assert status == 503 and "ZeroDivisionError" in json.loads(body)["checks"]["broken"]
        assert http_get(endpoints.port, "/nope")[0] == 404
    finally:
        endpoints.close()


def test_metrics_are_served_in_the_prometheus_text_format():
    ready = health.Health()
    endpoints = health.Endpoints(ready, 0, host="127.0.0.1")
    try:
        metrics.DLQ_EVENTS.labels(reason="unit-test").inc()
        status, text = http_get(endpoints.port, "/metrics")
        assert status == 200
        assert 'replicator_dlq_events_total{reason="unit-test"} 1.0' in text
    finally:
        endpoints.close()
