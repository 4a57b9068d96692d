"""Shared fixtures: one real local stack per test session, unique names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from replicator.local.stack import LocalStack
from tests.support import Process


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
