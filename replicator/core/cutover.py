"""The cutover's plan: which owners are at which stage, and the steps that move shares of them.

Stages (LaunchDarkly's migration stages, the replicator playing the dual write):

- ``redis``: Redis answers and takes the writes; replication keeps DynamoDB equal.
- ``shadow``: Redis answers; DynamoDB's answers are compared (:class:`replicator.dynamo_redis.ShadowRedis`).
- ``switching``: a switch is in progress: writes are held, reads come from Redis (nobody writes these owners now).
- ``returning``: ``cutover back`` is in progress for switched owners: writes held, reads from Redis (checked equal
  to DynamoDB first), while their items are re-based on replicated versions.
- ``dynamodb``: DynamoDB answers and takes the writes (native versions); each accepted write is applied to Redis
  too, best effort, so that Redis stays a warm copy. Appliers skip these owners' events (the fence).
- ``complete``: DynamoDB only.

An owner's place is a stable hash of it (:func:`position`, in [0, 1)); a stage's share is a threshold on it, so the
first 10 % stay the first 10 % as a share grows, and every instance, applier and operator computes the same stage
from the same :class:`Plan`. The plan is one record with an epoch that grows with every change: clients report the
epoch they run on, which is how a switch knows that no client still writes Redis for the owners it moves.

Pure: the record's storage is :mod:`replicator.adapters.dynamodb.cutover`, the steps' waiting is
:mod:`replicator.tools.cutover`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from enum import Enum

from replicator.core.errors import ReplicatorError

# Keys a switch writes to every Redis primary and the listeners delete once they have published everything announced
# before them (the switch's watermark is noted after that; see replicator.tools.cutover). Defined with the rules,
# which never capture them.
from replicator.core.mapping import MARK_PREFIX as MARK_PREFIX


class Stage(str, Enum):
    REDIS = "redis"
    SHADOW = "shadow"
    SWITCHING = "switching"
    DYNAMODB = "dynamodb"
    COMPLETE = "complete"
    RETURNING = "returning"

    @property
    def switched(self) -> bool:
        """DynamoDB is the truth for these owners: replicated events must not touch them."""
        return self in (Stage.DYNAMODB, Stage.COMPLETE)

    @property
    def held(self) -> bool:
        """Writes wait: the owners are changing stores (reads come from Redis, equal to DynamoDB then)."""
        return self in (Stage.SWITCHING, Stage.RETURNING)


class CutoverError(ReplicatorError):
    """A cutover step that cannot be taken from the current plan (one line saying why and what to do)."""


def position(owner: bytes) -> float:
    """The owner's place in [0, 1): the first 64 bits of its SHA-256. Stable across processes and versions (Python's
    ``hash`` is salted per process), uniform enough that a share of 10 % is about 10 % of the owners."""
    return int.from_bytes(hashlib.sha256(owner).digest()[:8], "big") / 2.0**64


def _fraction(percent: float) -> float:
    if not 0 <= percent <= 100:
        raise CutoverError(f"a share is a percentage from 0 to 100, not {percent:g}")
    return percent / 100.0


@dataclass(frozen=True)
class Plan:
    """The control record. Shares are percentages of owners, nested: ``complete <= dynamodb <= shadow``; while a
    switch holds writes, owners from ``dynamodb`` up to ``switching`` are at stage ``switching``."""

    epoch: int = 0
    shadow: float = 0.0
    dynamodb: float = 0.0
    complete: float = 0.0
    switching: float | None = None
    returning: float | None = None
    #: A step is coming or under way: clients read the plan every few tens of ms instead of every refresh, so that
    #: a hold lasts as long as the step's waits, not as long as the slowest client's refresh.
    fast: bool = False

    def stage(self, owner: bytes) -> Stage:
        return self.stage_at(position(owner))

    def stage_at(self, place: float) -> Stage:
        if place < self.complete / 100:
            return Stage.COMPLETE
        if place < self.dynamodb / 100:
            return Stage.RETURNING if self.returning is not None and place >= self.returning / 100 else Stage.DYNAMODB
        if self.switching is not None and place < self.switching / 100:
            return Stage.SWITCHING
        if place < self.shadow / 100:
            return Stage.SHADOW
        return Stage.REDIS

    @property
    def trivial(self) -> bool:
        """Every owner on Redis: clients need not look at owners at all."""
        return self.shadow == 0 and self.switching is None and self.dynamodb == 0

    # -- the steps (each returns the next plan, epoch + 1) ------------------------------------------------------

    def with_shadow(self, percent: float) -> Plan:
        """``shadow --share P``: P % of the owners at least in shadow. Lowering it is the free rollback of shadowing
        (Redis is still the truth there), but never below what is switched."""
        _fraction(percent)
        self._idle("shadow")
        if percent < self.dynamodb:
            raise CutoverError(f"{self.dynamodb:g}% of the owners are switched; a shadow share of {percent:g}% would "
                               f"leave them unswitched: use `cutover back --share {percent:g}` first")
        return replace(self, epoch=self.epoch + 1, shadow=percent)

    def hastened(self, step: str) -> Plan:
        """Before a hold: clients start reading the plan fast (nothing else changes), so that once every client runs
        this epoch, the holding plan reaches all of them within tens of ms."""
        self._idle(step)
        return replace(self, epoch=self.epoch + 1, fast=True)

    def holding(self, percent: float) -> Plan:
        """Step 1 of ``switch --share P``: the owners from the switched share up to P hold their writes."""
        _fraction(percent)
        self._idle("switch")
        if percent <= self.dynamodb:
            raise CutoverError(f"{self.dynamodb:g}% of the owners are already switched; nothing to switch up to "
                               f"{percent:g}%")
        if percent > self.shadow:
            raise CutoverError(f"only {self.shadow:g}% of the owners are in shadow: shadow them before switching "
                               f"(`cutover shadow --share {percent:g}`)")
        return replace(self, epoch=self.epoch + 1, switching=percent, fast=True)

    def switched(self) -> Plan:
        """Step 3 of a switch: the held owners are ``dynamodb``; their writes go to DynamoDB from now on."""
        if self.switching is None:
            raise CutoverError("no switch is in progress")
        return replace(self, epoch=self.epoch + 1, dynamodb=self.switching, switching=None, fast=False)

    def released(self) -> Plan:
        """A switch given up before its last step: the held owners are back in ``shadow``, Redis still the truth."""
        return replace(self, epoch=self.epoch + 1, switching=None, fast=False)

    def returning_to(self, percent: float) -> Plan:
        """Step 1 of ``back --share P``: the switched owners above P hold their writes while they are checked and
        re-based on Redis."""
        _fraction(percent)
        self._idle("back")
        if percent >= self.dynamodb:
            raise CutoverError(f"{self.dynamodb:g}% of the owners are switched; nothing to bring back above "
                               f"{percent:g}%")
        if percent < self.complete:
            raise CutoverError(f"{self.complete:g}% of the owners are complete and cannot go back: Redis is stale "
                               "for them (going back needs replication from DynamoDB to Redis, which is not built)")
        return replace(self, epoch=self.epoch + 1, returning=percent, fast=True)

    def returned(self) -> Plan:
        """The last step of ``back``: the re-based owners are in ``shadow``, Redis their truth again."""
        if self.returning is None:
            raise CutoverError("no `cutover back` is in progress")
        return replace(self, epoch=self.epoch + 1, dynamodb=self.returning, returning=None, fast=False)

    def kept(self) -> Plan:
        """``back`` given up: the owners it held stay switched (DynamoDB their truth, nothing was re-based)."""
        return replace(self, epoch=self.epoch + 1, returning=None, fast=False)

    def with_complete(self, percent: float) -> Plan:
        """``complete --share P``: the first P % of the owners stop being mirrored to Redis. There is no way back
        from it: Redis goes stale for them."""
        _fraction(percent)
        self._idle("complete")
        if percent > self.dynamodb:
            raise CutoverError(f"only {self.dynamodb:g}% of the owners are switched; switch them before completing "
                               f"(`cutover switch --share {percent:g}`)")
        if percent < self.complete:
            raise CutoverError(f"{self.complete:g}% of the owners are complete and cannot go back: Redis is stale "
                               "for them (going back needs replication from DynamoDB to Redis, which is not built)")
        return replace(self, epoch=self.epoch + 1, complete=percent)

    def eased(self) -> Plan:
        """A step given up before its hold: clients go back to their usual refresh."""
        return replace(self, epoch=self.epoch + 1, fast=False) if self.fast else self

    def _idle(self, step: str) -> None:
        if self.switching is not None:
            raise CutoverError(f"a switch up to {self.switching:g}% is in progress (epoch {self.epoch}): let it end "
                               f"or run `cutover abort` before `cutover {step}`")
        if self.returning is not None:
            raise CutoverError(f"`cutover back` to {self.returning:g}% is in progress (epoch {self.epoch}): let it "
                               f"end or run `cutover abort` before `cutover {step}`")

    # -- the record ---------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"epoch": self.epoch, "shadow": self.shadow, "dynamodb": self.dynamodb,
                           "complete": self.complete, "switching": self.switching, "returning": self.returning,
                           "fast": self.fast}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        switching, returning = data.get("switching"), data.get("returning")
        return cls(int(data["epoch"]), float(data["shadow"]), float(data["dynamodb"]), float(data["complete"]),
                   None if switching is None else float(switching), None if returning is None else float(returning),
                   bool(data.get("fast", False)))

    def describe(self) -> str:
        parts = [f"epoch {self.epoch}", f"shadow {self.shadow:g}%", f"dynamodb {self.dynamodb:g}%",
                 f"complete {self.complete:g}%"]
        if self.switching is not None:
            parts.append(f"switching up to {self.switching:g}% (writes held)")
        if self.returning is not None:
            parts.append(f"returning down to {self.returning:g}% (writes held)")
        return ", ".join(parts)


@dataclass(frozen=True)
class Heartbeat:
    """What a client instance last reported: the oldest epoch it may still be acting on, and until when the report
    holds (a client that stops reporting stops counting once it expires)."""

    instance: str
    epoch: int
    at: float
    expires: float
    #: The client's shadow reads so far, ("command", "result") -> count (what `cutover status` sums).
    shadow: tuple[tuple[str, str, int], ...] = ()

    def live(self, now: float) -> bool:
        return self.expires > now


#: The scope of a verify run over every key (of the owners not switched).
WHOLE_KEYSPACE = "every key"


@dataclass(frozen=True)
class VerifyRecord:
    """The last ``replicator verify`` run, as `cutover status` shows it (and its verdict weighs it before a switch)."""

    at: float
    scope: str  # what was compared: WHOLE_KEYSPACE, "a sample of 1000 keys", "owner alice"
    keys_checked: int
    drifted: int
    repaired: int = 0

    @property
    def whole(self) -> bool:
        """A run over every key of the owners not switched (a sample or one owner proves less)."""
        return self.scope == WHOLE_KEYSPACE

    def to_json(self) -> str:
        return json.dumps({"at": self.at, "scope": self.scope, "keys_checked": self.keys_checked,
                           "drifted": self.drifted, "repaired": self.repaired}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VerifyRecord:
        data = json.loads(text)
        return cls(float(data["at"]), str(data["scope"]), int(data["keys_checked"]), int(data["drifted"]),
                   int(data.get("repaired", 0)))


def lagging(heartbeats: list[Heartbeat], epoch: int, now: float) -> list[Heartbeat]:
    """The live clients still acting on a plan older than ``epoch`` (what a switch waits for)."""
    return sorted((h for h in heartbeats if h.live(now) and h.epoch < epoch), key=lambda h: h.instance)
