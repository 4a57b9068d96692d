"""The application's own writes to DynamoDB after cutover: native versions, and Redis values <-> rule items. Pure.

Rule 1 of the cutover (shared/DESIGN.md): **native versions always win.** A replicated version is the Redis
server's ``TIME`` in µs (below 2^53); a write made by the application through the Redis-shaped client carries
``NATIVE_BASE`` + its clock in µs, above every replicated version. Items and heads are written under the applier's
conditions, so no replicated event (late, replayed, repaired, re-snapshotted) can overwrite or resurrect what the
application wrote or deleted (deletions are tombstones, as the applier's are). Native writes among themselves are
compare-and-set on the version each writer read (:class:`Cas`), so two clients changing one key serialize as two
Redis clients do: the loser reads again and runs its command again.

The other half is the inverse of the planner: the items a key's rule produced, read back, are the key's Redis value
again (:func:`entry_of`), and a changed value is planned into item writes by the applier's own planner
(:func:`native_writes`), so the client and the applier can never disagree on what an item holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from replicator.core.commands import WRONGTYPE, Entry
from replicator.core.errors import MappingError
from replicator.core.events import ChangeEvent, KeyType, Op, Origin
from replicator.core.mapping import ItemWrite, KeyState, Rule, RuleKind, RuleSet, desired_items, plan_writes
from replicator.core.values import Attrs, B, ItemKey, L, M, TypedValue

#: Native versions start here: 2^60, far above Redis TIME in µs (about 2^50.6 in 2026, 2^53 in the year 2255).
NATIVE_BASE = 1 << 60


def native_version(now_us: int, floor: int) -> int:
    """The version of a native write made now: above every replicated version, and above ``floor`` (the newest
    version this writer has seen or made), so one writer's writes never go back in time."""
    return max(NATIVE_BASE + now_us, floor + 1)


def is_native(version: int) -> bool:
    return version >= NATIVE_BASE


@dataclass(frozen=True)
class Cas:
    """Compare-and-set: the write applies only if the group's version is still ``version`` (None: it has none)."""

    version: int | None


@dataclass(frozen=True)
class Stored:
    """One item of a key as DynamoDB holds it for one rule: its group's version, tombstone mark and data."""

    version: int | None
    deleted: bool
    attrs: Attrs

    @property
    def live(self) -> bool:
        return not self.deleted and (self.version is not None or bool(self.attrs))


class CannotAnswer(MappingError):
    """The key's rule does not keep what the command needs (a TTL, a member it renders nowhere, another type)."""


_KINDS = {RuleKind.STRING: "string", RuleKind.HASH: "hash", RuleKind.SET: "set", RuleKind.ZSET: "zset"}


# --------------------------------------------------------------------------------------------------------------------
# Items -> Redis value


def entry_of(rule: Rule, items: Mapping[ItemKey, Stored]) -> Entry | None:
    """The Redis value a key's live items stand for; None when none is live (the key does not exist)."""
    live = {key: stored.attrs for key, stored in items.items() if stored.live}
    if not live:
        return None
    if rule.is_mirror:
        ((attrs),) = live.values()
        return mirror_entry(dict(attrs), rule)
    values = [_placeholders(rule, key, attrs) for key, attrs in live.items()]
    kind = _KINDS[rule.type]
    if rule.type is RuleKind.STRING:
        return Entry(kind, _need(rule, values[0], "value"))
    if rule.type is RuleKind.HASH:
        return Entry(kind, {_need(rule, v, "field"): _need(rule, v, "value") for v in values})
    if rule.type is RuleKind.SET:
        return Entry(kind, dict.fromkeys(_need(rule, v, "member") for v in values))
    return Entry(kind, {_need(rule, v, "member"): _score(rule, _need(rule, v, "score")) for v in values})


def _placeholders(rule: Rule, item_key: ItemKey, attrs: Attrs) -> dict[str, bytes]:
    found = rule.unrender_key(item_key) or {}
    for attr, typed in attrs:
        matched = rule.unrender(attr, typed)
        if matched:
            found.update(matched)
    return found


def _need(rule: Rule, values: Mapping[str, bytes], name: str) -> bytes:
    if name not in values:
        raise CannotAnswer(f"rule {rule.name!r} keeps no {{{name}}} in its items: its keys cannot be read back")
    return values[name]


def _score(rule: Rule, raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        raise CannotAnswer(f"rule {rule.name!r}: {raw[:40]!r} is not a score") from None


def mirror_entry(attrs: Mapping[str, TypedValue], rule: Rule) -> Entry:
    """A default-mirror item's value as a Redis value (see mapping._mirror_attrs for the layout)."""
    kind = attrs["type"].as_bytes().decode() if "type" in attrs else ""
    value = attrs.get("value")
    expire = attrs.get("expire_at")
    expire_at_ms = int(expire.as_bytes()) if expire is not None else None
    if kind == "string" and isinstance(value, B):
        return Entry(kind, value.value, expire_at_ms)
    if isinstance(value, L):
        elements = value.value
        if kind == "hash":
            fields: dict[bytes, bytes] = {}
            for pair in elements:
                if isinstance(pair, L) and len(pair.value) == 2:
                    fields[pair.value[0].as_bytes()] = pair.value[1].as_bytes()
            return Entry(kind, fields, expire_at_ms)
        if kind == "list":
            return Entry(kind, [v.as_bytes() for v in elements], expire_at_ms)
        if kind == "set":
            return Entry(kind, dict.fromkeys(v.as_bytes() for v in elements), expire_at_ms)
        if kind == "zset":
            scores: dict[bytes, float] = {}
            for element in elements:
                if isinstance(element, M):
                    pairs = dict(element.value)
                    scores[pairs["member"].as_bytes()] = float(pairs["score"].as_bytes())
            return Entry(kind, scores, expire_at_ms)
    raise CannotAnswer(f"mirror table {rule.table}: a {kind or 'typeless'} item is not answered as a Redis value")


# --------------------------------------------------------------------------------------------------------------------
# Redis value -> item writes


def event_of(rules: RuleSet, rule: Rule, variables: Mapping[str, bytes], key: bytes, entry: Entry | None,
             version: int) -> ChangeEvent:
    """The change event the applier would plan for this value of the key (a DELETE when it is gone)."""
    owner = rules.owner(rule, key, variables)
    if entry is None:
        return ChangeEvent(key, KeyType.NONE, Op.DELETE, Origin.LIVE, version, 0, owner, None)
    if entry.kind == "string":
        value: object = entry.value
    elif entry.kind in ("list", "set"):
        value = tuple(entry.value)
    else:  # hash: (field, value) pairs; zset: (member, score) pairs
        value = tuple(entry.value.items())
    return ChangeEvent(key, KeyType(entry.kind.upper()), Op.UPSERT, Origin.LIVE, version, 0, owner,
                       value, entry.expire_at_ms)  # type: ignore[arg-type]


def check_answerable(rule: Rule, entry: Entry | None, command: str) -> None:
    """Refuse a change the rule cannot hold: another type than the rule's, or a TTL on a key no mirror keeps."""
    if entry is None or rule.is_mirror:
        return
    if entry.kind != _KINDS[rule.type]:
        raise CannotAnswer(WRONGTYPE)
    if entry.expire_at_ms is not None:
        raise CannotAnswer(f"rule {rule.name!r} keeps no TTL ({command} would set one); only the default mirror "
                           "keeps TTLs")


def native_writes(rules: RuleSet, rule: Rule, variables: Mapping[str, bytes], key: bytes, after: Entry | None,
                  stored: Mapping[ItemKey, Stored], version: int,
                  before: Entry | None = None) -> list[tuple[ItemWrite, Cas]]:
    """The item writes taking the key from its stored items to ``after``, each compare-and-set on what was read.

    Returns (ItemWrite, Cas) pairs; the planner is the applier's, so the items are the ones replication makes.
    Given ``before`` (the value the stored items stand for), a collection that stays a collection is planned for
    its changed elements only: a ZADD of one member to a sorted set of thousands renders one item, not thousands.
    """
    if rule.is_collection and before is not None and after is not None and before.kind == after.kind:
        changed = _changed(before.value, after.value)
        before = Entry(before.kind, {e: before.value[e] for e in changed if e in before.value})
        after = Entry(after.kind, {e: after.value[e] for e in changed if e in after.value})
        rendered = desired_items(rule, variables, event_of(rules, rule, variables, key, before, 0)) \
            if before.value else {}
        previous = KeyState(-1, {k: stored[k].attrs for k in rendered if k in stored and stored[k].live})
    else:
        previous = KeyState(-1, {k: s.attrs for k, s in stored.items() if s.live})
    plan = plan_writes(rule, variables, event_of(rules, rule, variables, key, after, version), previous)
    out: list[tuple[ItemWrite, Cas]] = []
    for write in plan.writes:
        found = stored.get(write.key)
        out.append((write, Cas(found.version if found is not None else None)))
    return out


def _changed(before: Mapping[bytes, object], after: Mapping[bytes, object]) -> list[bytes]:
    """Elements added, removed, or holding another value (field value, score)."""
    return [e for e in {**before, **after} if before.get(e, _ABSENT) != after.get(e, _ABSENT)]


_ABSENT = object()
