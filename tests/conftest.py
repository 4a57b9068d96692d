"""Shared fixtures: one real local stack per test session, unique names per test; the ``integration`` and ``slow``
markers put on by collection (see pyproject.toml)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.local.stack import LocalStack
from tests.support import Process

INTEGRATION = Path(__file__).parent / "integration"
#: Fixtures that start services: a test asking for one is an integration test wherever it lives.
SERVICE_FIXTURES = {"stack", "redis_cluster", "kafka_cluster", "processes"}
#: Fixtures that start a 3-node cluster on top of the stack (a JVM or redis-server each): slow.
CLUSTER_FIXTURES = {"redis_cluster", "kafka_cluster"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``integration`` on everything under tests/integration/ and on any test asking for a service; ``slow`` on tests
    that start a cluster, besides the long fault tests marked by hand. ``pytest -m "not integration"`` is then the
    service-free lane."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if INTEGRATION in item.path.parents or fixtures & SERVICE_FIXTURES:
            item.add_marker(pytest.mark.integration)
        if fixtures & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """redis-server, Kafka and DynamoDB Local: the services REDIS_URL, KAFKA_BOOTSTRAP_SERVERS and
    DYNAMODB_ENDPOINT_URL name, else local processes (replicator/local/stack.py)."""
    with LocalStack(kafka_partitions=4, environ=dict(os.environ)) as started:
        yield started


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def processes():
    """Start replicator commands in processes: ``processes("apply", config_path, tmp_path)``; all killed at the end."""
    started: list[Process] = []
    yield lambda *args, **kwargs: started.append(Process(*args, **kwargs)) or started[-1]
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def redis_cluster(stack):
    """A 3-primary Redis Cluster (redis-server processes), started once when a test first asks; its seed URL."""
    return stack.redis_cluster()


@pytest.fixture(scope="session")
def kafka_cluster(stack):
    """A 3-broker KRaft cluster (replication factor 3, min.insync.replicas=2), started once when a test first asks;
    its bootstrap servers."""
    return stack.kafka_cluster()
