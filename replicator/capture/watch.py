"""Changes keyspace notifications never announce, seen in ``INFO``.

FLUSHDB, FLUSHALL and SWAPDB change every key without a single notification; a restarted Redis (empty, or loaded
from an older RDB/AOF) and a failover to a replica that missed writes do the same. What does show is in INFO: the
command counters (``cmdstat_flushdb`` ...), the server's ``run_id`` and the replication id. The listener reads them
every ``capture.watch_interval_s`` and at every (re)subscription; any difference is a gap with its own reason,
healed like every gap (re-snapshot + reconcile, which for a flush tombstones what Redis no longer has).

CONFIG RESETSTAT zeroes the counters, so a flush right after it could hide behind the reset: the total command count
going down is itself a gap ("resetstat").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Commands that change keys without notifications; each is its own gap reason.
UNANNOUNCED_COMMANDS = ("flushall", "flushdb", "swapdb", "debug")


@dataclass(frozen=True)
class ServerMarks:
    run_id: str
    replication_id: str
    commands_processed: int
    calls: Mapping[str, int]


def read_marks(client: Any) -> ServerMarks:
    """One round trip: INFO server, replication, stats and commandstats of the node ``client`` talks to."""
    pipe = client.pipeline(transaction=False)
    for section in ("server", "replication", "stats", "commandstats"):
        pipe.info(section)
    server, replication, stats, commandstats = pipe.execute()
    calls = {name: int(commandstats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in UNANNOUNCED_COMMANDS}
    return ServerMarks(str(server.get("run_id", "")), str(replication.get("master_replid", "")),
                       int(stats.get("total_commands_processed", 0)), calls)


def unannounced_change(before: ServerMarks | None, after: ServerMarks) -> str | None:
    """The reason of a gap between two readings, or None when nothing unannounced happened in between."""
    if before is None:
        return None
    if after.run_id != before.run_id:
        return "restart"
    if after.replication_id != before.replication_id:
        return "failover"
    if after.commands_processed < before.commands_processed:
        return "resetstat"
    for name in UNANNOUNCED_COMMANDS:
        if after.calls.get(name, 0) > before.calls.get(name, 0):
            return name
    return None
