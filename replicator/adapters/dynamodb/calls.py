"""The DynamoDB client and its requests, translated: paginated Query and Scan, single and batched reads, the
replicator's own unconditional records. Nothing here knows what an item means (that is :mod:`.store`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig

from replicator import metrics, retry
from replicator.adapters.dynamodb.errors import Kind, kind, translate
from replicator.core.config import DynamoDBConfig
from replicator.core.errors import SinkError

#: Keys per BatchGetItem (DynamoDB's limit).
BATCH_GET_KEYS = 100


def make_client(config: DynamoDBConfig) -> Any:
    kwargs: dict[str, Any] = {
        "region_name": config.region,
        # Requests are built by code, and DynamoDB validates them anyway: botocore's client-side validation only
        # costs CPU on every write (about a tenth of a transaction's client time).
        "config": BotoConfig(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=64,
                             connect_timeout=5, read_timeout=30, parameter_validation=False),
    }
    if config.endpoint_url:
        kwargs["endpoint_url"] = config.endpoint_url
    if config.access_key_id:
        kwargs["aws_access_key_id"] = config.access_key_id
        kwargs["aws_secret_access_key"] = (
            config.secret_access_key.get_secret_value() if config.secret_access_key else "local"
        )
    client = boto3.client("dynamodb", **kwargs)
    # botocore retries throttling itself before we ever see it; count every throttled response, retried or not.
    client.meta.events.register("needs-retry.dynamodb", _count_throttle)
    client.meta.events.register("before-call.dynamodb", _count_request)
    return client


def _count_request(model: Any = None, **_kwargs: Any) -> None:
    if model is not None:
        metrics.DYNAMODB_REQUESTS.labels(operation=model.name).inc()


def _count_throttle(response: Any = None, **_kwargs: Any) -> None:
    if response is not None and kind(response[1].get("Error", {}).get("Code", "")) is Kind.THROTTLED:
        metrics.DYNAMODB_THROTTLES.inc()


def frozen_key(key: Mapping[str, Any]) -> frozenset[Any]:
    """A DynamoDB key (wire form) as a dict key: binary values as bytes (boto3 may return them as bytearray)."""
    return frozenset((a, kind, bytes(raw) if kind == "B" else raw) for a, v in key.items() for kind, raw in v.items())


def projection_of(attrs: Sequence[str], names: dict[str, str]) -> str:
    """A ProjectionExpression of ``attrs``, each through a placeholder added to ``names`` (any attribute name is
    safe, reserved words included)."""
    for i, attr in enumerate(attrs):
        names[f"#p{i}"] = attr
    return ", ".join(f"#p{i}" for i in range(len(attrs)))


class DynamoCalls:
    """Requests to DynamoDB, each failure raised as a one-line SinkError (see :func:`.errors.translate`).
    Thread-safe (boto3 clients are)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        #: botocore builds a paginator class on every get_paginator (~15 µs): one per operation is enough.
        self._paginators: dict[str, Any] = {}

    # -- Query and Scan ------------------------------------------------------------------------------------------

    def pages(self, operation: str, where: str, **params: Any) -> Iterator[list[dict[str, Any]]]:
        """The items of a ``query`` or ``scan``, one page at a time, through boto3's paginator.

        A page is requested only when the previous one has been consumed, so a caller that stops early (once it
        has what it needs) saves the rest. A failed request raises translated (see :func:`translate`).
        """
        paginator = self._paginators.get(operation)
        if paginator is None:
            paginator = self._paginators[operation] = self.client.get_paginator(operation)
        pages = iter(paginator.paginate(**params))
        while True:
            try:
                page = next(pages, None)
            except Exception as exc:
                raise translate(exc, where) from None
            if page is None:
                return
            yield page["Items"]

    def items(self, operation: str, where: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a ``query`` or ``scan``, across its pages (see :meth:`pages`)."""
        for page in self.pages(operation, where, **params):
            yield from page

    # -- single reads --------------------------------------------------------------------------------------------

    def get(self, table: str, key: Mapping[str, Any], where: str) -> dict[str, Any] | None:
        """One item (strongly consistent), None when there is none."""
        try:
            return self.client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        except Exception as exc:
            raise translate(exc, where) from None

    def batch_get(self, keys: Sequence[tuple[str, dict[str, Any]]], where: str, attrs: Sequence[str] = (),
                  ) -> dict[tuple[str, frozenset[Any]], dict[str, Any]]:
        """Items of any tables by key (table, DynamoDB key), strongly consistent, 100 distinct keys per
        BatchGetItem; found ones under (table, :func:`frozen_key` of their key). ``attrs``: only these attributes
        (the keys' own among them). Keys DynamoDB leaves unprocessed (throttled, over its response size) are asked
        for again through retry.UNPROCESSED_KEYS, then a retryable SinkError."""
        found: dict[tuple[str, frozenset[Any]], dict[str, Any]] = {}
        distinct = list({(table, frozen_key(k)): (table, k) for table, k in keys}.values())
        key_names = {table: tuple(k) for table, k in distinct}
        names: dict[str, str] = {}
        only = {"ProjectionExpression": projection_of(attrs, names), "ExpressionAttributeNames": names} if attrs else {}
        for i in range(0, len(distinct), BATCH_GET_KEYS):
            pending: dict[str, Any] = {}
            for table, k in distinct[i:i + BATCH_GET_KEYS]:
                pending.setdefault(table, {"Keys": [], "ConsistentRead": True, **only})["Keys"].append(k)
            unprocessed = retry.Backoff(retry.UNPROCESSED_KEYS)
            while True:
                try:
                    response = self.client.batch_get_item(RequestItems=pending)
                except Exception as exc:
                    raise translate(exc, where) from None
                for table, items in response.get("Responses", {}).items():
                    for item in items:
                        found[(table, frozen_key({a: item[a] for a in key_names[table]}))] = item
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                left = sum(len(request.get("Keys", ())) for request in pending.values())
                if not unprocessed.wait(f"{left} keys unprocessed", where=where):
                    raise SinkError(f"{where} still unprocessed after {unprocessed.retries + 1} tries",
                                    retryable=True)
        return found

    def put(self, table: str, item: Mapping[str, Any], where: str) -> None:
        """Write one of the replicator's own records (a snapshot checkpoint, a pending reconcile), unconditionally:
        each has one writer. Item writes of replicated data go through :class:`DynamoWriter`, conditionally."""
        try:
            self.client.put_item(TableName=table, Item=item)
        except Exception as exc:
            raise translate(exc, where) from None

    def update(self, where: str, **request: Any) -> bool:
        """One conditional UpdateItem; False when its condition refused it (the caller says what that means), any
        other failure raised translated."""
        try:
            self.client.update_item(**request)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise translate(exc, where) from None
        except Exception as exc:
            raise translate(exc, where) from None
        return True

    def delete(self, table: str, key: Mapping[str, Any], where: str) -> None:
        """Remove one of the replicator's own records (see :meth:`put`)."""
        try:
            self.client.delete_item(TableName=table, Key=key)
        except Exception as exc:
            raise translate(exc, where) from None
