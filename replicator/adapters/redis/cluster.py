"""Redis Cluster: telling a cluster from a single server, and reading keys from the primaries that own them.

A cluster pipeline cannot run scripts, so the atomic reader runs one plain pipeline per primary, with the keys whose
slots that primary owns. When a slot moved meanwhile (MOVED/ASK, or a primary gone after a failover), the slot map is
refreshed and the keys of that primary are read again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from replicator import retry
from replicator.adapters.redis.states import READ_STATES, RawState, StateReader, parse_reply

#: Errors that mean "the slot map moved": refresh it and read again.
_TOPOLOGY_ERRORS = (MovedError, ClusterDownError, TryAgainError)


def is_cluster(client: redis.Redis) -> bool:
    """Whether the server runs in cluster mode (``cluster_enabled:1``)."""
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.ResponseError:  # managed servers may hide INFO sections
        return False


def cluster_client(url: str, **options: Any) -> RedisCluster:
    return RedisCluster.from_url(url, decode_responses=False, socket_keepalive=True, **options)


def dbsize(client: redis.Redis | RedisCluster) -> int:
    """Keys in the database: summed over every primary of a cluster (a plain DBSIZE asks one node)."""
    if isinstance(client, RedisCluster):
        return int(sum(n.dbsize() for _name, n in primaries(client)))
    return int(client.dbsize())


def primaries(cluster: RedisCluster) -> list[tuple[str, redis.Redis]]:
    """Every primary as (host:port, a client of that node alone)."""
    return [(node.name, cluster.get_redis_connection(node)) for node in cluster.get_primaries()]


class ClusterStateReader:
    """:class:`StateReader` for a cluster: the same atomic script, run on each key's primary."""

    def __init__(self, cluster: RedisCluster, max_inline_members: int = 10_000) -> None:
        self._cluster = cluster
        self._max_inline = max_inline_members
        self._readers: dict[str, StateReader] = {}

    def read(self, keys: Sequence[bytes]) -> list[RawState]:
        by_node: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            by_node[self._cluster.get_node_from_key(key).name].append(i)
        states: list[RawState | None] = [None] * len(keys)
        for positions in by_node.values():
            for i, state in zip(positions, self._read_group([keys[i] for i in positions]), strict=True):
                states[i] = state
        return [s for s in states if s is not None]

    def _read_group(self, keys: list[bytes]) -> list[RawState]:
        topology = retry.Backoff(retry.CLUSTER_TOPOLOGY)
        while True:
            node = self._cluster.get_node_from_key(keys[0])
            owners = {self._cluster.get_node_from_key(k).name for k in keys}
            if len(owners) > 1:  # the map changed under us: split the group again
                return ClusterStateReader.read(self, keys)
            try:
                return self._reader(node).read(keys)
            except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError) as exc:
                if isinstance(exc, AskError):
                    # A slot is being migrated: keys already moved are read on the target, one by one.
                    try:
                        return [self._read_one(key) for key in keys]
                    except (AskError, *_TOPOLOGY_ERRORS) as again:
                        exc = again
                if isinstance(exc, redis.ResponseError) and not isinstance(exc, (AskError, *_TOPOLOGY_ERRORS)):
                    raise
                self._readers.pop(node.name, None)
                if not topology.wait(exc, node=node.name):
                    raise exc
                self._cluster.nodes_manager.initialize()

    def _read_one(self, key: bytes) -> RawState:
        """One key during a migration: on its owner, or after ASKING on the node the owner points to."""
        node = self._cluster.get_node_from_key(key)
        try:
            return self._reader(node).read([key])[0]
        except AskError as exc:
            host, port = exc.host, int(exc.port)
        target_node = self._cluster.get_node(host=host, port=port)
        if target_node is None:  # a node the map does not know yet
            raise MovedError(f"0 {host}:{port}")
        target = self._cluster.get_redis_connection(target_node)
        pipe = target.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        # EVAL, not the cached script: ASKING applies to the very next command only.
        pipe.execute_command("EVAL", READ_STATES, 1, key, self._max_inline)
        _ok, (reply,) = pipe.execute()
        if reply[4] is None and reply[5] > self._max_inline:  # too big to read inline while it moves: once it has
            raise TryAgainError("the key is migrating")
        return parse_reply(key, reply)

    def _reader(self, node: Any) -> StateReader:
        reader = self._readers.get(node.name)
        if reader is None:
            # One key per script call: the keys of a call must share a slot.
            reader = StateReader(self._cluster.get_redis_connection(node), self._max_inline, keys_per_call=1)
            self._readers[node.name] = reader
        return reader


def state_reader(client: redis.Redis | RedisCluster, max_inline_members: int = 10_000) -> Any:
    """The atomic reader for a single server or a cluster (same ``read(keys)``)."""
    if isinstance(client, RedisCluster):
        return ClusterStateReader(client, max_inline_members)
    return StateReader(client, max_inline_members)


def slot_primaries(cluster: RedisCluster) -> dict[str, tuple[str, int]]:
    """The primaries owning slots now (CLUSTER SLOTS from any node), as host:port → (host, port)."""
    return {f"{host}:{port}": (host, int(port))
            for info in cluster.cluster_slots().values() for host, port in [info["primary"]]}


def reload_slots(cluster: RedisCluster) -> None:
    """Reload the client's slot map (after the primaries changed)."""
    cluster.nodes_manager.initialize()
