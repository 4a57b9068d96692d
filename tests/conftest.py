"""Shared fixtures: one real local stack per test session, unique names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from replicator.localstack import LocalStack


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """redis-server, Kafka and DynamoDB Local: from env vars, testcontainers, or local processes (in that order)."""
    with LocalStack(kafka_partitions=4, environ=dict(os.environ)) as started:
        yield started


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]
