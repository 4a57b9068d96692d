"""The Redis client as the rest of the replicator holds it: its types, the errors it acts on, and its nodes.

Stages and tools call Redis commands (SCAN, INFO, a pipeline) on the client they are handed, but never import
redis-py: they name its types and catch its errors through this module, and ask it whether a client is a
cluster's. Changing the client library, or how a failure is classified, is then one file.
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

#: A client of one server (one node of a cluster, or a standalone server). Binary-safe: replies are bytes.
Node = redis.Redis
#: A client of a standalone server or of a whole cluster.
Client = redis.Redis | RedisCluster

#: Redis cannot be reached right now (connection refused or lost, a timeout): retry, it is not about the data.
UNAVAILABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
#: Redis answered with an error: a command refused (renamed, disabled, a wrong type).
Refused = redis.ResponseError
#: Refused by the user's ACL.
NoPermission = redis.exceptions.NoPermissionError
#: Anything redis-py raises.
RedisError = redis.RedisError


def is_cluster_client(client: Client) -> bool:
    """Whether ``client`` is a cluster client (routes each key to its slot's owner)."""
    return isinstance(client, RedisCluster)


def nodes(client: Client, name: str) -> list[tuple[str, Node]]:
    """The primaries to scan, subscribe to or check, as (name, client of that node alone): every primary of a
    cluster, or the server itself under ``name``."""
    if isinstance(client, RedisCluster):
        return [(node.name, client.get_redis_connection(node)) for node in client.get_primaries()]
    return [(name, client)]
