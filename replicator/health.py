"""``/metrics``, ``/healthz`` and ``/readyz`` on one port, for every long-running command.

``/healthz`` answers 200 while the process serves at all: a liveness probe that restarts a pod waiting for Kafka would
only turn an outage into a crash loop. ``/readyz`` answers 200 only when every named check passes (services reached,
partitions assigned or keyspace subscribed) and 503 with the failing checks otherwise, so ``kubectl describe`` and the
PodDisruptionBudget see which replicas do work.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

#: A readiness check: None when it passes, else why not (one line).
Check = Callable[[], "str | None"]


class Health:
    """Named readiness checks. Thread-safe; checks run on every ``/readyz`` request, so they must be cheap."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}

    def set(self, name: str, reason: str | None) -> None:
        """A fixed answer for ``name``: None passes, a string is why it does not."""
        self.check(name, lambda: reason)

    def check(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def when(self, name: str, passes: Callable[[], bool], otherwise: str) -> None:
        self.check(name, lambda: None if passes() else otherwise)

    def status(self) -> tuple[bool, dict[str, str]]:
        """(ready, {check: "ok" or why not}). Not ready without any check: nothing has been started yet."""
        with self._lock:
            checks = dict(self._checks)
        report: dict[str, str] = {}
        for name, check in checks.items():
            try:
                reason = check()
            except Exception as exc:  # a broken check must not take the endpoint down
                reason = f"check failed: {type(exc).__name__}: {exc}"
            report[name] = "ok" if reason is None else reason
        return bool(report) and all(v == "ok" for v in report.values()), report


class Endpoints:
    """The HTTP server behind the three paths, on a daemon thread."""

    def __init__(self, health: Health, port: int, host: str = "0.0.0.0") -> None:
        handler = type("Handler", (_Handler,), {"health": health})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="endpoints", daemon=True)
        self._thread.start()
        log.info("serving /metrics /healthz /readyz", extra={"kv": {"port": self.port}})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(health: Health, port: int | None) -> Endpoints | None:
    """Serve on ``port`` (0: a free one; None: not at all)."""
    return None if port is None else Endpoints(health, port)


class _Handler(BaseHTTPRequestHandler):
    health: Health

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            names = parse_qs(url.query).get("name[]")
            registry = REGISTRY.restricted_registry(names) if names else REGISTRY
            self._reply(200, encoder(registry), content_type)
        elif url.path == "/healthz":
            self._reply(200, b"ok\n", "text/plain; charset=utf-8")
        elif url.path == "/readyz":
            ready, report = self.health.status()
            body = json.dumps({"ready": ready, "checks": report}, sort_keys=True).encode() + b"\n"
            self._reply(200 if ready else 503, body, "application/json")
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Probes hit these paths every few seconds: no access log."""
