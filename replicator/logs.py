"""Structured JSON logs: one object per line, fields under ``extra={"kv": {...}}``.

Never log a secret: configs are logged through ``Config.masked()``, URLs through ``mask_url``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "kv", None) or {})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=_printable)


def _printable(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def setup(level: str = "INFO", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python's network layer logs every lost connection and reconnect attempt at ERROR (a broker restart is
    # dozens of lines, a refused login a line per retry); the failures that matter reach our code as exceptions,
    # which say them once. Its group coordinator's warnings (a rejected assignment, a slow rebalance) stay visible.
    debug = level.upper() == "DEBUG"
    logging.getLogger("kafka").setLevel(logging.DEBUG if debug else logging.WARNING)
    for noisy in ("kafka.net", "kafka.cluster", "kafka.conn", "kafka.client_async"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.CRITICAL)
    logging.getLogger("botocore").setLevel(logging.WARNING)
