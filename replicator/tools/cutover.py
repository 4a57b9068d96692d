"""``replicator cutover``: the operator's steps of the owner-by-owner cutover, and where it stands.

A switch (``switch --share P``) is exact because of what it waits for, in this order:

1. the new plan marks the owners from the switched share up to P ``switching``: clients hold their writes;
2. every live client reports that epoch (a client's heartbeat names the oldest epoch any of its commands still runs
   on, so a Redis write that started before the hold has ended);
3. a marker key is written to every Redis primary; each listener deletes it once everything that node announced
   before it is published and acknowledged (the last Redis writes of the held owners among it);
4. the change topic's end offsets are noted and the appliers must commit past them: DynamoDB then holds the held
   owners' last Redis states;
5. the owners become ``dynamodb``: clients write DynamoDB, appliers skip their events.

Interrupted (Ctrl-C, a timeout, a failure) before step 5, the held owners go back to ``shadow``: Redis is still
their truth, nothing was written to DynamoDB for them.

``back --share P`` is a switch in reverse for the switched owners above P: their writes held the same way, their
Redis copy (the warm copy the clients keep) compared with DynamoDB, then their *native* item groups re-based: the
version moves from the native space to Redis' clock now, the data stays. A replicated event older than that instant
is still refused (no late or replayed event resurrects what the application deleted); every Redis write after it
wins, as before the switch. Interrupted, the owners stay switched.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from replicator.adapters.dynamodb.cutover import ControlStore, NativeGroups
from replicator.adapters.redis.client import is_cluster_client, nodes
from replicator.core.cutover import MARK_PREFIX, CutoverError, Heartbeat, Plan, Stage, VerifyRecord, lagging
from replicator.core.watermark import GroupProgress, Watermark

#: How long a listener has to acknowledge a switch's marker before the switch gives up (and releases its hold).
MARK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Status:
    plan: Plan
    clients: list[Heartbeat]
    now: float
    lag: int | None  # events the appliers have not committed, None when Kafka could not be read
    dead_letters: int | None = None
    reconciles: int | None = None  # gap reconciles waiting for their watermark
    verified: VerifyRecord | None = None  # the last verify run on record

    def shadow(self) -> dict[str, Counter[str]]:
        """Shadow reads per command and result, summed over the clients' heartbeats."""
        found: dict[str, Counter[str]] = {}
        for h in self.clients:
            for command, result, n in h.shadow:
                found.setdefault(command, Counter())[result] += n
        return found

    def lines(self) -> list[str]:
        plan = self.plan
        shares = [("complete", plan.complete), ("dynamodb", plan.dynamodb - plan.complete)]
        if plan.returning is not None:
            shares[1] = ("dynamodb", plan.returning - plan.complete)
            shares.append(("returning (writes held)", plan.dynamodb - plan.returning))
        if plan.switching is not None:
            shares.append(("switching (writes held)", plan.switching - plan.dynamodb))
        shares += [("shadow", plan.shadow - max(plan.dynamodb, plan.switching or 0)), ("redis", 100 - plan.shadow)]
        out = [f"plan: epoch {plan.epoch}"]
        out += [f"  {name:<24} {share:g}% of owners" for name, share in shares if share > 0]
        live = [h for h in self.clients if h.live(self.now)]
        out.append(f"clients: {len(live)} live" + (f", {len(self.clients) - len(live)} expired"
                                                    if len(live) < len(self.clients) else ""))
        for h in live:
            behind = " (behind: still acting on an older plan)" if h.epoch < plan.epoch else ""
            out.append(f"  {h.instance}: epoch {h.epoch}, seen {self.now - h.at:.1f}s ago{behind}")
        out.append("appliers: " + ("lag unknown (Kafka unreadable)" if self.lag is None
                                   else f"{self.lag} event(s) not yet committed"))
        if self.dead_letters is not None:
            out.append(f"dead letters: {self.dead_letters}")
        if self.reconciles is not None:
            out.append(f"gap reconciles pending: {self.reconciles}")
        v = self.verified
        out.append("verify: none on record" if v is None else
                   f"verify: {_ago(self.now - v.at)} ago over {v.scope}: {v.keys_checked} key(s), {v.drifted} "
                   f"drifted" + (f", {v.repaired} repaired" if v.repaired else ""))
        shadow = self.shadow()
        if shadow:
            out.append("shadow reads (clients' totals):")
            for command, results in sorted(shadow.items()):
                total = sum(results.values())
                rate = results["match"] + results["lag"]
                out.append(f"  {command:<18} {total} read(s), {100 * rate / total:.2f}% equal, "
                           + ", ".join(f"{n} {r}" for r, n in sorted(results.items())))
        out.append(f"verdict: {self.verdict()}")
        return out

    def verdict(self) -> str:
        plan = self.plan
        waiting = lagging(self.clients, plan.epoch, self.now)
        if plan.switching is not None or plan.returning is not None:
            step = (f"a switch up to {plan.switching:g}%" if plan.switching is not None
                    else f"`cutover back` to {plan.returning:g}%")
            return (f"{step} is in progress"
                    + (f"; waiting for {', '.join(h.instance for h in waiting)}" if waiting else ""))
        if waiting:
            return f"clients on an older plan: {', '.join(h.instance for h in waiting)} (they refresh within seconds)"
        mismatches = sum(results["mismatch"] for results in self.shadow().values())
        if mismatches and plan.dynamodb < plan.shadow:
            return (f"{mismatches} shadow mismatch(es): do not switch; the clients log each with its key "
                    "(`replicator verify --owner` to see why)")
        if self.reconciles:
            return "a gap's reconcile is pending: switch once it is done (DynamoDB may still hold deleted keys)"
        v = self.verified
        if v is not None and v.drifted > v.repaired and plan.dynamodb < plan.shadow:
            return (f"the last verify found {v.drifted - v.repaired} drifted key(s) it did not repair: "
                    "`replicator verify --repair`, then verify again before switching")
        if plan.shadow == 0:
            return "ready: start shadow reads (`cutover shadow --share 100`)"
        if plan.dynamodb < plan.shadow:
            unproven = "" if v is not None and v.whole else " (no verify of every key on record: run one first)"
            return f"ready to switch up to {plan.shadow:g}% (`cutover switch --share P`){unproven}"
        if plan.complete < plan.dynamodb:
            return "ready to complete (`cutover complete --share P`) once the switched owners are verified"
        return "ready: shadow more owners" if plan.shadow < 100 else "complete: every owner is on DynamoDB"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Rebasing:
    """What ``back`` needs besides the plan: the drifted keys of some owners (verify), the native groups, and a way
    to publish keys' Redis states as REPAIR events (acknowledged by Kafka when it returns)."""

    drifted: Callable[[Callable[[bytes], bool]], list[bytes]]
    natives: NativeGroups
    repair: Callable[[list[bytes]], int]


class Cutover:
    """The steps, on the control record, the clients' heartbeats, Redis (markers) and the applier group."""

    def __init__(self, control: ControlStore, progress: GroupProgress | None, redis_client: Any,
                 out: Callable[[str], None] = print, poll_s: float = 0.05, rebasing: Rebasing | None = None,
                 extras: Callable[[], tuple[int | None, int | None]] | None = None) -> None:
        self._extras = extras  # (dead letters, pending gap reconciles), for status
        #: How long the last switch held writes (from its holding plan to the switched one).
        self.last_hold_s = 0.0
        self._control = control
        self._progress = progress
        self._redis = redis_client
        self._out = out
        self._poll_s = poll_s
        self._rebasing = rebasing

    def status(self) -> Status:
        lag = None
        if self._progress is not None:
            try:
                lag = Watermark(self._progress.end()).remaining(self._progress.committed())
            except Exception:  # status shows what it can
                lag = None
        dead, reconciles = self._extras() if self._extras is not None else (None, None)
        return Status(self._control.plan(), self._control.heartbeats(), time.time(), lag, dead, reconciles,
                      self._control.last_verify())

    def shadow(self, percent: float) -> Plan:
        return self._step(lambda plan: plan.with_shadow(percent))

    def complete(self, percent: float) -> Plan:
        return self._step(lambda plan: plan.with_complete(percent))

    def abort(self) -> Plan:
        """Give up a switch or a back left in progress (its command was killed): a switch's owners go back to
        shadow, a back's stay switched. Safe either way: neither changed a store before its last step but the
        re-basing, which is idempotent and leaves the data as it was."""
        return self._step(lambda plan: plan.released() if plan.switching is not None
                          else plan.kept() if plan.returning is not None else plan.eased())

    def back(self, percent: float, force: bool = False, timeout_s: float = 600.0,
             stop: threading.Event | None = None) -> Plan:
        """Return the switched owners above ``percent`` to ``shadow`` (Redis their truth again).

        Under a write hold (as a switch's), once every client runs the holding plan: their Redis copy is compared
        with DynamoDB (a failed mirror write makes them differ: refused, naming the keys, unless ``force``); their
        native groups are re-based on a replicated version read from Redis' clock now; with ``force``, the differing
        keys are published from Redis as REPAIR events and applied; then the hold is released.
        """
        if self._rebasing is None:
            raise CutoverError("cutover back needs Redis, DynamoDB and Kafka (the verifier and a publisher)")
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout_s
        fast = self._hasten(lambda plan: plan.returning_to(percent), "back", deadline, stop)
        held = self._step(lambda plan: plan.returning_to(percent), expect=fast)
        self._out(f"epoch {held.epoch}: writes of switched owners above {percent:g}% held")
        try:
            self._wait_clients(held.epoch, deadline, stop)

            def returning(owner: bytes) -> bool:
                return held.stage(owner) is Stage.RETURNING

            drifted = self._rebasing.drifted(returning)
            if drifted and not force:
                shown = ", ".join(repr(k)[:80] for k in drifted[:10])
                raise CutoverError(f"{len(drifted)} key(s) of these owners differ between Redis and DynamoDB (a "
                                   f"failed mirror write?): {shown}; `verify --switched` shows how; `cutover back "
                                   "--force` makes DynamoDB follow Redis for them")
            groups = [g for g in self._rebasing.natives.find() if g.owner is None or returning(g.owner)]
            unknown = [g.where for g in groups if g.owner is None]
            if unknown:
                raise CutoverError(f"cannot tell whose items these are (their keys do not name the owner): "
                                   f"{', '.join(unknown[:5])}; back is not possible with this rule")
            in_parts = [g.where for g in groups if g.in_parts]
            if in_parts:
                raise CutoverError(f"values kept in parts cannot be re-based yet: {', '.join(in_parts[:5])}; "
                                   "rewrite them through the application's client while switched, below "
                                   "350 KB, or ask for help")
            seconds, micros = self._redis.time()
            instant = int(seconds) * 1_000_000 + int(micros)
            moved = sum(self._rebasing.natives.rebase(g, instant) for g in groups)
            self._out(f"re-based {moved} item group(s) the application wrote on Redis' clock ({instant} µs)")
            if drifted:
                published = self._rebasing.repair(drifted)
                self._out(f"published {published} REPAIR event(s) from Redis for the differing keys")
                self._wait_appliers(deadline, stop)
            done = self._step(lambda plan: plan.returned(), expect=held)
        except BaseException:
            kept = self._step(lambda plan: plan.kept(), expect=held)
            self._out(f"epoch {kept.epoch}: back abandoned; the held owners stay switched to DynamoDB")
            raise
        self._out(f"epoch {done.epoch}: owners above {percent:g}% are back in shadow: Redis is their truth again")
        return done

    def switch(self, percent: float, timeout_s: float = 600.0, stop: threading.Event | None = None) -> Plan:
        """Move the owners up to ``percent`` to ``dynamodb`` (see the module docstring). Returns the final plan."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout_s
        fast = self._hasten(lambda plan: plan.holding(percent), "switch", deadline, stop)
        started = time.monotonic()
        held = self._step(lambda plan: plan.holding(percent), expect=fast)
        self._out(f"epoch {held.epoch}: writes of owners up to {percent:g}% held")
        try:
            self._wait_clients(held.epoch, deadline, stop)
            self._mark_listeners(min(deadline, time.monotonic() + MARK_TIMEOUT_S), stop)
            self._wait_appliers(deadline, stop)
            done = self._step(lambda plan: plan.switched(), expect=held)
        except BaseException:
            released = self._step(lambda plan: plan.released(), expect=held)
            self._out(f"epoch {released.epoch}: switch abandoned; the held owners are back in shadow on Redis")
            raise
        self.last_hold_s = time.monotonic() - started
        self._out(f"epoch {done.epoch}: owners up to {percent:g}% switched to DynamoDB; writes were held "
                  f"{self.last_hold_s:.2f}s")
        return done

    def _hasten(self, step: Callable[[Plan], Plan], name: str, deadline: float, stop: threading.Event) -> Plan:
        """Before a hold: check that the step can be taken (a refused one changes nothing), then have every client
        read the plan fast, so that the hold reaches all of them within tens of ms instead of one refresh."""
        step(self._control.plan())
        fast = self._step(lambda plan: plan.hastened(name))
        self._out(f"epoch {fast.epoch}: clients read the plan fast now (nothing held yet)")
        try:
            self._wait_clients(fast.epoch, deadline, stop)
        except BaseException:
            self._step(lambda plan: plan.eased(), expect=fast)
            raise
        return fast

    # -- the waits -----------------------------------------------------------------------------------------------

    def _wait_clients(self, epoch: int, deadline: float, stop: threading.Event) -> None:
        shown = None
        while True:
            waiting = lagging(self._control.heartbeats(), epoch, time.time())
            if not waiting:
                return
            names = ", ".join(f"{h.instance} (epoch {h.epoch})" for h in waiting)
            if names != shown:
                self._out(f"waiting for clients on an older plan: {names}")
                shown = names
            self._pause(deadline, stop, f"clients still on an older plan: {names}")

    def _mark_listeners(self, deadline: float, stop: threading.Event) -> None:
        markers = []
        for client, name in _primaries(self._redis):
            marker = MARK_PREFIX + uuid.uuid4().hex.encode() + _tag_for(self._redis, name)
            client.set(marker, b"1", px=int(MARK_TIMEOUT_S * 10_000))  # gone by itself if nobody listens
            client.pexpire(marker, int(MARK_TIMEOUT_S * 10_000))  # a generic event: announced whatever the rules
            markers.append((client, name, marker))
        for client, name, marker in markers:
            while client.exists(marker):
                self._pause(deadline, stop, f"the listener of {name} did not take the switch's marker "
                                            f"({marker.decode()}): is it running, and may its Redis user "
                                            f"subscribe to and delete the markers (replicator preflight --acl)?")
        self._out("listeners: every change announced before the hold is published")

    def _wait_appliers(self, deadline: float, stop: threading.Event) -> None:
        if self._progress is None:
            raise CutoverError("cannot read the applier group's progress: a switch needs Kafka")
        watermark = Watermark(self._progress.end())
        shown_at = 0.0
        while (left := watermark.remaining(self._progress.committed())) > 0:
            if time.monotonic() - shown_at >= 1.0:  # polled every poll_s, told once a second
                self._out(f"appliers: {left} event(s) to commit before the switch")
                shown_at = time.monotonic()
            self._pause(deadline, stop, f"the appliers still have {left} event(s) to commit")
        self._out("appliers: DynamoDB holds every change published before the hold")

    def _pause(self, deadline: float, stop: threading.Event, waiting_for: str) -> None:
        if time.monotonic() >= deadline:
            raise CutoverError(f"switch timed out: {waiting_for}")
        if stop.wait(self._poll_s):
            raise CutoverError(f"switch interrupted while {waiting_for}")

    def _step(self, change: Callable[[Plan], Plan], expect: Plan | None = None) -> Plan:
        current = self._control.plan()
        if expect is not None and current.epoch != expect.epoch:
            raise CutoverError(f"the plan moved to epoch {current.epoch} during the switch (another operator?)")
        new = change(current)
        if new.epoch != current.epoch:
            self._control.replace(current, new)
        return new


def _primaries(client: Any) -> list[tuple[Any, str]]:
    """Where markers go: the cluster client once per primary (keys tagged to land on it), else the one server."""
    if is_cluster_client(client):
        return [(client, name) for name, _node in nodes(client, "")]
    kwargs = client.connection_pool.connection_kwargs
    return [(client, f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}")]


def _tag_for(client: Any, node_name: str) -> bytes:
    """A hash tag whose slot the primary ``node_name`` serves (empty outside a cluster)."""
    if not is_cluster_client(client):
        return b""
    for i in range(100_000):
        tag = b"{m%d}" % i
        if client.get_node_from_key(tag).name == node_name:
            return tag
    raise CutoverError(f"no hash slot found for cluster node {node_name}")
