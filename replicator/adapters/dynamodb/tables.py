"""Creating the DynamoDB tables the rules describe (local stacks and first runs; production tables are often IaC)."""

from __future__ import annotations

import logging
import time
from typing import Any

from replicator.adapters.dynamodb.errors import translate
from replicator.core.errors import SinkError
from replicator.core.mapping import RuleSet, TableSpec

log = logging.getLogger(__name__)


def table_definitions(rules: RuleSet, state_table: str) -> list[dict[str, Any]]:
    """CreateTable parameters for every rule table, the mirror's parts table and the state table. Pure."""
    definitions = [_definition(spec) for spec in rules.tables.values()]
    if rules.parts_table is not None:
        definitions.append(_definition(rules.parts_table))
    definitions.append(_definition(TableSpec(state_table, ("k", "B"), None, {}, ())))
    return definitions


def _definition(spec: TableSpec) -> dict[str, Any]:
    attributes = {spec.partition_key[0]: spec.partition_key[1]}
    key_schema = [{"AttributeName": spec.partition_key[0], "KeyType": "HASH"}]
    if spec.sort_key:
        attributes[spec.sort_key[0]] = spec.sort_key[1]
        key_schema.append({"AttributeName": spec.sort_key[0], "KeyType": "RANGE"})
    params: dict[str, Any] = {"TableName": spec.name, "KeySchema": key_schema, "BillingMode": "PAY_PER_REQUEST"}
    if spec.lsi:
        params["LocalSecondaryIndexes"] = []
        for index, (attr, attr_type) in spec.lsi.items():
            attributes[attr] = attr_type
            params["LocalSecondaryIndexes"].append({
                "IndexName": index,
                "KeySchema": [{"AttributeName": spec.partition_key[0], "KeyType": "HASH"},
                              {"AttributeName": attr, "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            })
    params["AttributeDefinitions"] = [{"AttributeName": a, "AttributeType": t} for a, t in attributes.items()]
    return params


def create_tables(client: Any, rules: RuleSet, state_table: str, timeout: float = 60.0) -> list[str]:
    """Create missing tables, wait until active, enable TTL on the tombstone attribute. Returns the created names."""
    created = []
    for params in table_definitions(rules, state_table):
        name = params["TableName"]
        try:
            client.describe_table(TableName=name)
            continue
        except client.exceptions.ResourceNotFoundException:
            pass
        except Exception as exc:  # unreachable, denied: one line naming the table, not a botocore traceback
            raise translate(exc, f"describing table {name}") from None
        try:
            client.create_table(**params)
        except client.exceptions.ResourceInUseException:
            continue
        except Exception as exc:
            raise translate(exc, f"creating table {name}") from None
        deadline = time.monotonic() + timeout
        while client.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise translate(TimeoutError(f"table {name} not ACTIVE after {timeout:.0f}s"), "creating tables")
            time.sleep(0.2)
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": rules.ttl_attribute}
        )
        log.info("created table", extra={"kv": {"table": name}})
        created.append(name)
    return created


def check_tables(client: Any, rules: RuleSet, state_table: str) -> None:
    """Fail unless every table the rules write (and the state table) exists: a missing one is a setup mistake."""
    for params in table_definitions(rules, state_table):
        name = params["TableName"]
        try:
            client.describe_table(TableName=name)
        except client.exceptions.ResourceNotFoundException:
            raise SinkError(f"DynamoDB table {name} does not exist; create it with the key schema the rules describe "
                            "or set dynamodb.create_tables: true", retryable=False) from None
        except Exception as exc:
            raise translate(exc, f"describing table {name}") from None
