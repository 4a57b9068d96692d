"""Loaded by the applier processes the mixed benchmark starts (PYTHONPATH): counts their DynamoDB requests and the
items those requests write, by operation, the same way for any commit of the replicator (older ones have no
request metric). Written to $BENCH_DYNAMODB_COUNTS as JSON when the process exits, and the time of the first
request as soon as it is made (the drain is timed from there: start-up and joining the group are not throughput).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections import Counter

_OUT = os.environ.get("BENCH_DYNAMODB_COUNTS")
_ITEMS = {"UpdateItem": lambda p: 1, "PutItem": lambda p: 1, "DeleteItem": lambda p: 1,
          "TransactWriteItems": lambda p: len(p.get("TransactItems", ())),
          "BatchExecuteStatement": lambda p: len(p.get("Statements", ())),
          "BatchWriteItem": lambda p: sum(len(v) for v in p.get("RequestItems", {}).values())}

if _OUT:
    import boto3

    _lock = threading.Lock()
    _requests: Counter[str] = Counter()
    _items: Counter[str] = Counter()
    _first: list[float] = []

    def _count(model=None, params=None, **_kwargs):  # type: ignore[no-untyped-def]
        with _lock:
            _requests[model.name] += 1
            if model.name in _ITEMS:
                _items[model.name] += _ITEMS[model.name](params or {})
            if not _first:
                _first.append(time.time())
                with open(_OUT + ".first", "w") as f:
                    f.write(str(_first[0]))

    def _write() -> None:
        with open(_OUT, "w") as f:
            json.dump({"requests": _requests, "items": _items}, f)

    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-parameter-build.dynamodb", _count)  # type: ignore[union-attr]
    atexit.register(_write)
