"""Redis commands evaluated on in-memory values, answering exactly what a Redis 7 server answers. Pure.

The DynamoDB-backed client (:mod:`replicator.dynamo_redis`) does not re-implement redis-py: it inherits redis-py's
command methods, which encode the arguments and call ``execute_command(*args)``, and then parses the raw reply with
redis-py's own response callbacks. What it needs in between is a server: this module. It takes a command as Redis
receives it (``[b"ZADD", b"k", b"NX", b"1.5", b"m"]``), the current values of the keys it names, and the time, and
returns the reply in RESP2 shape (int, bytes, None, list, :class:`Error`) and the keys' new values. So method names,
argument names, defaults, argument encoding and return types are redis-py's by construction, and the semantics
(ranges, exclusive bounds, ties, missing keys, WRONGTYPE, error texts) are tested against a real Redis.

Values (:class:`Entry`): a string is bytes, a hash a dict, a list a list, a set a dict of members (insertion-ordered
like a small Redis set), a sorted set a dict member -> score. A collection never stays empty: Redis deletes a key
whose last element goes, and so does :func:`execute`. An expired entry is absent (the caller passes ``now_ms``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

#: The reply shapes of RESP2: integer, bulk string (or a status such as OK, as bytes), nil, array, error.
Reply = Any

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
SYNTAX = "ERR syntax error"
OK = b"OK"
INT64 = (-(2**63), 2**63 - 1)

KINDS = ("string", "hash", "list", "set", "zset")


@dataclass(frozen=True)
class Error:
    """An error reply, worded as Redis words it (``ERR ...``, ``WRONGTYPE ...``)."""

    message: str


class CommandError(Exception):
    """Raised inside a command; becomes an :class:`Error` reply. No change of that command is kept."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Entry:
    """A Redis key's value: its type, its data (see the module docstring) and its expiry (Unix ms, or None)."""

    kind: str
    value: Any
    expire_at_ms: int | None = None

    def alive(self, now_ms: int) -> bool:
        return self.expire_at_ms is None or self.expire_at_ms > now_ms


# --------------------------------------------------------------------------------------------------------------------
# Which keys a command reads and whether it writes


#: Command -> (how its keys are found, writes?). "first": args[1]; "all": args[1:]; "none": no key.
_SHAPES: dict[str, tuple[str, bool]] = {}


def keys_of(args: Sequence[bytes]) -> tuple[bytes, ...]:
    """The keys a command names (what must be loaded before :func:`execute` runs it)."""
    shape = _SHAPES.get(args[0].upper().decode("latin-1")) if args else None
    if shape is None or len(args) < 2:
        return ()
    return tuple(args[1:]) if shape[0] == "all" else (args[1],)


def writes(args: Sequence[bytes]) -> bool:
    shape = _SHAPES.get(args[0].upper().decode("latin-1")) if args else None
    return bool(shape and shape[1])


def known(name: str) -> bool:
    return name.upper() in _SHAPES


# --------------------------------------------------------------------------------------------------------------------
# Running one command


class _Keys:
    """The keys a command sees: the loaded entries (expired ones absent) and what the command changed."""

    def __init__(self, entries: Mapping[bytes, Entry | None], now_ms: int) -> None:
        self.now_ms = now_ms
        self._entries = entries
        self.changed: dict[bytes, Entry | None] = {}

    def get(self, key: bytes) -> Entry | None:
        entry = self.changed[key] if key in self.changed else self._entries.get(key)
        return entry if entry is not None and entry.alive(self.now_ms) else None

    def typed(self, key: bytes, kind: str) -> Entry | None:
        entry = self.get(key)
        if entry is not None and entry.kind != kind:
            raise CommandError(WRONGTYPE)
        return entry

    def put(self, key: bytes, entry: Entry | None) -> None:
        if entry is not None and entry.kind != "string" and not entry.value:
            entry = None  # an emptied collection is no key at all
        self.changed[key] = entry


Handler = Callable[[_Keys, list[bytes]], Reply]
_HANDLERS: dict[str, Handler] = {}


def _command(name: str, keys: str, writes: bool, arity: int) -> Callable[[Handler], Handler]:
    """Register a handler. ``arity`` as Redis states it: N exactly, -N at least N (the name included)."""

    def register(fn: Handler) -> Handler:
        def checked(ks: _Keys, args: list[bytes]) -> Reply:
            if (arity >= 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
                raise CommandError(f"ERR wrong number of arguments for '{name.lower()}' command")
            return fn(ks, args)

        _HANDLERS[name] = checked
        _SHAPES[name] = (keys, writes)
        return fn

    return register


def execute(args: Sequence[bytes], entries: Mapping[bytes, Entry | None],
            now_ms: int) -> tuple[Reply, dict[bytes, Entry | None]]:
    """Run one command on the entries of the keys it names; its reply and the keys it changed (None: deleted).

    ``entries`` must hold every key of :func:`keys_of` (None or absent: no such key). An error changes nothing.
    """
    if not args:
        return Error("ERR empty command"), {}
    name = args[0].upper().decode("latin-1")
    handler = _HANDLERS.get(name)
    if handler is None:
        shown = args[0].decode("utf-8", "replace")
        return Error(f"ERR unknown command '{shown}', with args beginning with: "
                     + "".join(f"'{a.decode('utf-8', 'replace')}' " for a in args[1:])), {}
    keys = _Keys(entries, now_ms)
    try:
        return handler(keys, list(args)), keys.changed
    except CommandError as exc:
        return Error(exc.message), {}


# --------------------------------------------------------------------------------------------------------------------
# Argument parsing, as Redis parses


def _int(raw: bytes, message: str = NOT_INTEGER) -> int:
    """A signed 64-bit integer written as Redis accepts it (no spaces, no '+', no leading zeros, no '-0')."""
    text = raw.decode("latin-1")
    ok = text.isascii() and (text == "0" or (text.lstrip("-").isdigit() and not text.lstrip("-").startswith("0")
                                             and text.count("-") <= 1 and (text[0] == "-" or text[0].isdigit())))
    if not ok:
        raise CommandError(message)
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise CommandError(message)
    return value


def _float(raw: bytes, message: str = NOT_FLOAT) -> float:
    """A double as Redis' strtod takes it: inf/-inf/+inf spelled out, no NaN, no surrounding space."""
    text = raw.decode("latin-1")
    if not text or text != text.strip() or "_" in text:
        raise CommandError(message)
    try:
        value = float(text)
    except ValueError:
        raise CommandError(message) from None
    if math.isnan(value) or text.lower() in ("nan", "+nan", "-nan"):
        raise CommandError(message)
    if math.isinf(value) and text.lower().lstrip("+-") not in ("inf", "infinity"):
        raise CommandError(message)  # 1e999 overflows strtod: Redis refuses it
    return value


def format_float(value: float) -> bytes:
    """A score as Redis writes it: the shortest text that reads back as the same double; inf and -inf."""
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    if value == int(value) and abs(value) < 1e17:
        return str(int(value)).encode()
    return repr(value).encode()


def _score_bound(raw: bytes) -> tuple[float, bool]:
    """A ZRANGEBYSCORE bound: (value, exclusive)."""
    exclusive = raw.startswith(b"(")
    try:
        return _float(raw[1:] if exclusive else raw, "ERR min or max is not a float"), exclusive
    except CommandError:
        raise CommandError("ERR min or max is not a float") from None


def _in_range(score: float, low: tuple[float, bool], high: tuple[float, bool]) -> bool:
    (lo, lo_ex), (hi, hi_ex) = low, high
    return (score > lo if lo_ex else score >= lo) and (score < hi if hi_ex else score <= hi)


def _index_range(start: int, stop: int, n: int) -> range:
    """Redis' rank range: negative indexes from the end, clamped; empty when start > stop after that."""
    if start < 0:
        start = max(n + start, 0)
    if stop < 0:
        stop = n + stop
    stop = min(stop, n - 1)
    return range(start, stop + 1) if start <= stop else range(0)


def _flags(args: Sequence[bytes], known_flags: Sequence[bytes]) -> tuple[set[bytes], list[bytes]]:
    """Leading option words (case-insensitive) and what follows them."""
    found: set[bytes] = set()
    i = 0
    while i < len(args) and args[i].upper() in known_flags:
        found.add(args[i].upper())
        i += 1
    return found, list(args[i:])


# --------------------------------------------------------------------------------------------------------------------
# Keys


@_command("DEL", "all", True, -2)
def _del(ks: _Keys, args: list[bytes]) -> Reply:
    removed = 0
    for key in dict.fromkeys(args[1:]):
        if ks.get(key) is not None:
            ks.put(key, None)
            removed += 1
    return removed


@_command("EXISTS", "all", False, -2)
def _exists(ks: _Keys, args: list[bytes]) -> Reply:
    return sum(1 for key in args[1:] if ks.get(key) is not None)


@_command("TYPE", "first", False, 2)
def _type(ks: _Keys, args: list[bytes]) -> Reply:
    entry = ks.get(args[1])
    return b"none" if entry is None else entry.kind.encode()


def _ttl(ks: _Keys, key: bytes, ms: bool) -> int:
    entry = ks.get(key)
    if entry is None:
        return -2
    if entry.expire_at_ms is None:
        return -1
    left = entry.expire_at_ms - ks.now_ms
    return left if ms else (left + 500) // 1000


@_command("TTL", "first", False, 2)
def _ttl_s(ks: _Keys, args: list[bytes]) -> Reply:
    return _ttl(ks, args[1], ms=False)


@_command("PTTL", "first", False, 2)
def _pttl(ks: _Keys, args: list[bytes]) -> Reply:
    return _ttl(ks, args[1], ms=True)


def _expire(ks: _Keys, args: list[bytes], unit_ms: int, absolute: bool = False) -> Reply:
    name = args[0].decode("latin-1").lower()
    amount = _int(args[2])
    flags = set()
    for word in args[3:]:
        upper = word.upper()
        if upper not in (b"NX", b"XX", b"GT", b"LT"):
            raise CommandError(f"ERR Unsupported option {word.decode('utf-8', 'replace')}")
        flags.add(upper)
    if (b"NX" in flags and len(flags) > 1) or (b"GT" in flags and b"LT" in flags):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible"
                           if b"NX" in flags else "ERR GT and LT options at the same time are not compatible")
    if abs(amount) > (INT64[1] - (0 if absolute else ks.now_ms)) // unit_ms:
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    entry = ks.get(args[1])
    if entry is None:
        return 0
    when = amount * unit_ms + (0 if absolute else ks.now_ms)
    current = entry.expire_at_ms
    if (b"NX" in flags and current is not None) or (b"XX" in flags and current is None):
        return 0
    # GT/LT: a key without a TTL counts as an infinite TTL.
    if b"GT" in flags and (current is None or when <= current):
        return 0
    if b"LT" in flags and current is not None and when >= current:
        return 0
    ks.put(args[1], None if when <= ks.now_ms else replace(entry, expire_at_ms=when))
    return 1


@_command("EXPIRE", "first", True, -3)
def _expire_s(ks: _Keys, args: list[bytes]) -> Reply:
    return _expire(ks, args, 1000)


@_command("PEXPIRE", "first", True, -3)
def _pexpire(ks: _Keys, args: list[bytes]) -> Reply:
    return _expire(ks, args, 1)


@_command("EXPIREAT", "first", True, -3)
def _expireat(ks: _Keys, args: list[bytes]) -> Reply:
    return _expire(ks, args, 1000, absolute=True)


@_command("PEXPIREAT", "first", True, -3)
def _pexpireat(ks: _Keys, args: list[bytes]) -> Reply:
    return _expire(ks, args, 1, absolute=True)


def absolute_expiry(args: list[bytes], now_ms: int) -> list[bytes]:
    """The same write with its relative expiry made absolute at ``now_ms`` (SET EX/PX → PXAT, EXPIRE/PEXPIRE →
    PEXPIREAT), so that two stores running it at different moments keep the same expiry; other commands, and
    amounts a store would refuse, as they are (each store then refuses them in its own words)."""
    name = args[0].upper() if args else b""
    if name in (b"EXPIRE", b"PEXPIRE") and len(args) >= 3:
        amount = _plain_int(args[2])
        if amount is None:
            return args
        when = now_ms + amount * (1000 if name == b"EXPIRE" else 1)
        return args if abs(when) > INT64[1] else [b"PEXPIREAT", args[1], b"%d" % when, *args[3:]]
    if name == b"SET":
        out = list(args)
        for i in range(3, len(args) - 1):
            word = args[i].upper()
            if word in (b"EX", b"PX"):
                amount = _plain_int(args[i + 1])
                if amount is None or amount <= 0:
                    return args
                when = now_ms + amount * (1000 if word == b"EX" else 1)
                if when > INT64[1]:
                    return args
                out[i], out[i + 1] = b"PXAT", b"%d" % when
        return out
    return args


def _plain_int(raw: bytes) -> int | None:
    try:
        return _int(raw)
    except CommandError:
        return None


@_command("PERSIST", "first", True, 2)
def _persist(ks: _Keys, args: list[bytes]) -> Reply:
    entry = ks.get(args[1])
    if entry is None or entry.expire_at_ms is None:
        return 0
    ks.put(args[1], replace(entry, expire_at_ms=None))
    return 1


# --------------------------------------------------------------------------------------------------------------------
# Strings


@_command("GET", "first", False, 2)
def _get(ks: _Keys, args: list[bytes]) -> Reply:
    entry = ks.typed(args[1], "string")
    return None if entry is None else entry.value


@_command("MGET", "all", False, -2)
def _mget(ks: _Keys, args: list[bytes]) -> Reply:
    out = []
    for key in args[1:]:
        entry = ks.get(key)
        out.append(entry.value if entry is not None and entry.kind == "string" else None)
    return out


@_command("SET", "first", True, -3)
def _set(ks: _Keys, args: list[bytes]) -> Reply:
    key, value = args[1], args[2]
    options: set[bytes] = set()
    expire_ms: int | None = None
    i = 3
    while i < len(args):
        word = args[i].upper()
        if word in (b"NX", b"XX", b"KEEPTTL", b"GET"):
            options.add(word)
            i += 1
        elif word in (b"EX", b"PX", b"EXAT", b"PXAT") and i + 1 < len(args):
            if options & {b"EX", b"PX", b"EXAT", b"PXAT"}:
                raise CommandError(SYNTAX)
            options.add(word)
            amount = _int(args[i + 1])
            if amount <= 0:
                raise CommandError("ERR invalid expire time in 'set' command")
            scale = 1000 if word in (b"EX", b"EXAT") else 1
            if amount > (INT64[1] - (0 if word in (b"EXAT", b"PXAT") else ks.now_ms)) // scale:
                raise CommandError("ERR invalid expire time in 'set' command")
            expire_ms = amount * scale + (ks.now_ms if word in (b"EX", b"PX") else 0)
            i += 2
        else:
            raise CommandError(SYNTAX)
    if (b"NX" in options and b"XX" in options) or (b"KEEPTTL" in options and expire_ms is not None):
        raise CommandError(SYNTAX)
    current = ks.get(key)
    if b"GET" in options and current is not None and current.kind != "string":
        raise CommandError(WRONGTYPE)
    old = current.value if current is not None and current.kind == "string" else None
    if (b"NX" in options and current is not None) or (b"XX" in options and current is None):
        return old if b"GET" in options else None
    if b"KEEPTTL" in options and current is not None:
        expire_ms = current.expire_at_ms
    ks.put(key, None if expire_ms is not None and expire_ms <= ks.now_ms else Entry("string", value, expire_ms))
    return old if b"GET" in options else OK


def _incr(ks: _Keys, key: bytes, amount: int) -> Reply:
    entry = ks.typed(key, "string")
    current = 0 if entry is None else _int(entry.value)
    result = current + amount
    if not INT64[0] <= result <= INT64[1]:
        raise CommandError("ERR increment or decrement would overflow")
    ks.put(key, Entry("string", str(result).encode(), None if entry is None else entry.expire_at_ms))
    return result


@_command("INCR", "first", True, 2)
def _incr1(ks: _Keys, args: list[bytes]) -> Reply:
    return _incr(ks, args[1], 1)


@_command("DECR", "first", True, 2)
def _decr1(ks: _Keys, args: list[bytes]) -> Reply:
    return _incr(ks, args[1], -1)


@_command("INCRBY", "first", True, 3)
def _incrby(ks: _Keys, args: list[bytes]) -> Reply:
    return _incr(ks, args[1], _int(args[2]))


@_command("DECRBY", "first", True, 3)
def _decrby(ks: _Keys, args: list[bytes]) -> Reply:
    amount = _int(args[2])
    if amount == INT64[0]:
        raise CommandError("ERR decrement would overflow")
    return _incr(ks, args[1], -amount)


# --------------------------------------------------------------------------------------------------------------------
# Hashes


def _hash(ks: _Keys, key: bytes) -> dict[bytes, bytes]:
    entry = ks.typed(key, "hash")
    return {} if entry is None else entry.value


def _put_collection(ks: _Keys, key: bytes, kind: str, value: Any) -> None:
    """Store a changed collection, keeping the key's TTL (Redis keeps it across element changes)."""
    entry = ks.get(key)
    ks.put(key, Entry(kind, value, None if entry is None else entry.expire_at_ms))


def _remove(ks: _Keys, key: bytes, kind: str, current: Mapping[bytes, Any], elements: Sequence[bytes]) -> int:
    """HDEL, SREM, ZREM: drop the elements present; how many were (a key left empty is deleted)."""
    remaining = dict(current)
    removed = sum(remaining.pop(e, _MISSING) is not _MISSING for e in elements)
    if removed:
        _put_collection(ks, key, kind, remaining)
    return removed


_MISSING = object()


@_command("HGET", "first", False, 3)
def _hget(ks: _Keys, args: list[bytes]) -> Reply:
    return _hash(ks, args[1]).get(args[2])


@_command("HMGET", "first", False, -3)
def _hmget(ks: _Keys, args: list[bytes]) -> Reply:
    fields = _hash(ks, args[1])
    return [fields.get(f) for f in args[2:]]


@_command("HGETALL", "first", False, 2)
def _hgetall(ks: _Keys, args: list[bytes]) -> Reply:
    return [part for pair in _hash(ks, args[1]).items() for part in pair]


@_command("HKEYS", "first", False, 2)
def _hkeys(ks: _Keys, args: list[bytes]) -> Reply:
    return list(_hash(ks, args[1]))


@_command("HVALS", "first", False, 2)
def _hvals(ks: _Keys, args: list[bytes]) -> Reply:
    return list(_hash(ks, args[1]).values())


@_command("HLEN", "first", False, 2)
def _hlen(ks: _Keys, args: list[bytes]) -> Reply:
    return len(_hash(ks, args[1]))


@_command("HEXISTS", "first", False, 3)
def _hexists(ks: _Keys, args: list[bytes]) -> Reply:
    return int(args[2] in _hash(ks, args[1]))


@_command("HSET", "first", True, -4)
def _hset(ks: _Keys, args: list[bytes]) -> Reply:
    if len(args) % 2:
        raise CommandError("ERR wrong number of arguments for 'hset' command")
    fields = dict(_hash(ks, args[1]))
    added = 0
    for i in range(2, len(args), 2):
        added += args[i] not in fields
        fields[args[i]] = args[i + 1]
    _put_collection(ks, args[1], "hash", fields)
    return added


@_command("HDEL", "first", True, -3)
def _hdel(ks: _Keys, args: list[bytes]) -> Reply:
    return _remove(ks, args[1], "hash", _hash(ks, args[1]), args[2:])


@_command("HINCRBY", "first", True, 4)
def _hincrby(ks: _Keys, args: list[bytes]) -> Reply:
    fields = dict(_hash(ks, args[1]))
    amount = _int(args[3])
    current = _int(fields[args[2]], "ERR hash value is not an integer") if args[2] in fields else 0
    result = current + amount
    if not INT64[0] <= result <= INT64[1]:
        raise CommandError("ERR increment or decrement would overflow")
    fields[args[2]] = str(result).encode()
    _put_collection(ks, args[1], "hash", fields)
    return result


# --------------------------------------------------------------------------------------------------------------------
# Sets


def _set_of(ks: _Keys, key: bytes) -> dict[bytes, None]:
    entry = ks.typed(key, "set")
    return {} if entry is None else entry.value


@_command("SMEMBERS", "first", False, 2)
def _smembers(ks: _Keys, args: list[bytes]) -> Reply:
    return list(_set_of(ks, args[1]))


@_command("SISMEMBER", "first", False, 3)
def _sismember(ks: _Keys, args: list[bytes]) -> Reply:
    return int(args[2] in _set_of(ks, args[1]))


@_command("SMISMEMBER", "first", False, -3)
def _smismember(ks: _Keys, args: list[bytes]) -> Reply:
    members = _set_of(ks, args[1])
    return [int(m in members) for m in args[2:]]


@_command("SCARD", "first", False, 2)
def _scard(ks: _Keys, args: list[bytes]) -> Reply:
    return len(_set_of(ks, args[1]))


@_command("SADD", "first", True, -3)
def _sadd(ks: _Keys, args: list[bytes]) -> Reply:
    members = dict(_set_of(ks, args[1]))
    added = 0
    for m in args[2:]:
        if m not in members:
            members[m] = None
            added += 1
    if added:
        _put_collection(ks, args[1], "set", members)
    return added


@_command("SREM", "first", True, -3)
def _srem(ks: _Keys, args: list[bytes]) -> Reply:
    return _remove(ks, args[1], "set", _set_of(ks, args[1]), args[2:])


# --------------------------------------------------------------------------------------------------------------------
# Lists


def _list(ks: _Keys, key: bytes) -> list[bytes]:
    entry = ks.typed(key, "list")
    return [] if entry is None else entry.value


@_command("LRANGE", "first", False, 4)
def _lrange(ks: _Keys, args: list[bytes]) -> Reply:
    start, stop = _int(args[2]), _int(args[3])
    items = _list(ks, args[1])
    return [items[i] for i in _index_range(start, stop, len(items))]


@_command("LLEN", "first", False, 2)
def _llen(ks: _Keys, args: list[bytes]) -> Reply:
    return len(_list(ks, args[1]))


@_command("LINDEX", "first", False, 3)
def _lindex(ks: _Keys, args: list[bytes]) -> Reply:
    index = _int(args[2])
    items = _list(ks, args[1])
    if index < 0:
        index += len(items)
    return items[index] if 0 <= index < len(items) else None


def _push(ks: _Keys, args: list[bytes], left: bool) -> Reply:
    items = list(_list(ks, args[1]))
    for value in args[2:]:
        if left:
            items.insert(0, value)
        else:
            items.append(value)
    _put_collection(ks, args[1], "list", items)
    return len(items)


@_command("LPUSH", "first", True, -3)
def _lpush(ks: _Keys, args: list[bytes]) -> Reply:
    return _push(ks, args, left=True)


@_command("RPUSH", "first", True, -3)
def _rpush(ks: _Keys, args: list[bytes]) -> Reply:
    return _push(ks, args, left=False)


def _pop(ks: _Keys, args: list[bytes], left: bool) -> Reply:
    if len(args) > 3:
        raise CommandError(f"ERR wrong number of arguments for '{args[0].decode('latin-1').lower()}' command")
    count = None
    if len(args) == 3:
        count = _int(args[2], "ERR value is out of range, must be positive")
        if count < 0:
            raise CommandError("ERR value is out of range, must be positive")
    items = list(_list(ks, args[1]))
    if not items:
        return None
    n = 1 if count is None else min(count, len(items))
    popped = items[:n] if left else items[::-1][:n]
    rest = items[n:] if left else items[:len(items) - n]
    if n:
        _put_collection(ks, args[1], "list", rest)
    return popped[0] if count is None else popped


@_command("LPOP", "first", True, -2)
def _lpop(ks: _Keys, args: list[bytes]) -> Reply:
    return _pop(ks, args, left=True)


@_command("RPOP", "first", True, -2)
def _rpop(ks: _Keys, args: list[bytes]) -> Reply:
    return _pop(ks, args, left=False)


@_command("LTRIM", "first", True, 4)
def _ltrim(ks: _Keys, args: list[bytes]) -> Reply:
    start, stop = _int(args[2]), _int(args[3])
    items = _list(ks, args[1])
    if items:
        kept = [items[i] for i in _index_range(start, stop, len(items))]
        if kept != items:
            _put_collection(ks, args[1], "list", kept)
    return OK


# --------------------------------------------------------------------------------------------------------------------
# Sorted sets


def _zset(ks: _Keys, key: bytes) -> dict[bytes, float]:
    entry = ks.typed(key, "zset")
    return {} if entry is None else entry.value


def ordered(scores: Mapping[bytes, float]) -> list[tuple[bytes, float]]:
    """Members as Redis orders them: by score, ties by member bytes (memcmp, so shorter prefix first)."""
    return sorted(scores.items(), key=lambda e: (e[1], e[0]))


def _with_scores(entries: Sequence[tuple[bytes, float]], withscores: bool) -> list[bytes]:
    if not withscores:
        return [m for m, _s in entries]
    return [part for m, s in entries for part in (m, format_float(s))]


def _limit(entries: list[tuple[bytes, float]], offset: int | None, count: int | None) -> list[tuple[bytes, float]]:
    if offset is None or count is None:
        return entries
    if offset < 0:
        return []
    return entries[offset:] if count < 0 else entries[offset:offset + count]


def _by_score(scores: Mapping[bytes, float], low: bytes, high: bytes, reverse: bool,
              offset: int | None, count: int | None) -> list[tuple[bytes, float]]:
    lo, hi = _score_bound(low), _score_bound(high)
    entries = [e for e in ordered(scores) if _in_range(e[1], lo, hi)]
    if reverse:
        entries.reverse()
    return _limit(entries, offset, count)


def _range_options(args: Sequence[bytes], allowed: Sequence[bytes]) -> tuple[set[bytes], int | None, int | None]:
    """WITHSCORES / REV / BYSCORE / LIMIT offset count, in any order."""
    options: set[bytes] = set()
    offset = count = None
    i = 0
    while i < len(args):
        word = args[i].upper()
        if word == b"LIMIT" and b"LIMIT" in allowed and i + 2 < len(args):
            offset, count = _int(args[i + 1]), _int(args[i + 2])
            options.add(b"LIMIT")
            i += 3
        elif word in allowed and word != b"LIMIT":
            options.add(word)
            i += 1
        else:
            raise CommandError(SYNTAX)
    return options, offset, count


@_command("ZRANGE", "first", False, -4)
def _zrange(ks: _Keys, args: list[bytes]) -> Reply:
    options, offset, count = _range_options(args[4:], (b"WITHSCORES", b"REV", b"BYSCORE", b"BYLEX", b"LIMIT"))
    if b"BYLEX" in options:
        raise CommandError("ERR ZRANGE BYLEX is not answered from DynamoDB; use BYSCORE or ranks")
    if b"LIMIT" in options and b"BYSCORE" not in options:
        raise CommandError("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX")
    reverse = b"REV" in options
    if b"BYSCORE" in options:
        low, high = (args[3], args[2]) if reverse else (args[2], args[3])
        scores = _zset_checked_bounds(ks, args[1], low, high)
        return _with_scores(_by_score(scores, low, high, reverse, offset, count), b"WITHSCORES" in options)
    start, stop = _int(args[2]), _int(args[3])
    entries = ordered(_zset(ks, args[1]))
    if reverse:
        entries.reverse()
    return _with_scores([entries[i] for i in _index_range(start, stop, len(entries))], b"WITHSCORES" in options)


def _zset_checked_bounds(ks: _Keys, key: bytes, low: bytes, high: bytes) -> dict[bytes, float]:
    """Redis parses the bounds before it looks the key up: a bad bound is an error even on a missing key."""
    _score_bound(low), _score_bound(high)
    return _zset(ks, key)


@_command("ZREVRANGE", "first", False, -4)
def _zrevrange(ks: _Keys, args: list[bytes]) -> Reply:
    options, _o, _c = _range_options(args[4:], (b"WITHSCORES",))
    start, stop = _int(args[2]), _int(args[3])
    entries = ordered(_zset(ks, args[1]))[::-1]
    return _with_scores([entries[i] for i in _index_range(start, stop, len(entries))], b"WITHSCORES" in options)


@_command("ZRANGEBYSCORE", "first", False, -4)
def _zrangebyscore(ks: _Keys, args: list[bytes]) -> Reply:
    options, offset, count = _range_options(args[4:], (b"WITHSCORES", b"LIMIT"))
    scores = _zset_checked_bounds(ks, args[1], args[2], args[3])
    return _with_scores(_by_score(scores, args[2], args[3], False, offset, count), b"WITHSCORES" in options)


@_command("ZREVRANGEBYSCORE", "first", False, -4)
def _zrevrangebyscore(ks: _Keys, args: list[bytes]) -> Reply:
    options, offset, count = _range_options(args[4:], (b"WITHSCORES", b"LIMIT"))
    scores = _zset_checked_bounds(ks, args[1], args[3], args[2])
    return _with_scores(_by_score(scores, args[3], args[2], True, offset, count), b"WITHSCORES" in options)


@_command("ZSCORE", "first", False, 3)
def _zscore(ks: _Keys, args: list[bytes]) -> Reply:
    score = _zset(ks, args[1]).get(args[2])
    return None if score is None else format_float(score)


@_command("ZMSCORE", "first", False, -3)
def _zmscore(ks: _Keys, args: list[bytes]) -> Reply:
    scores = _zset(ks, args[1])
    return [None if m not in scores else format_float(scores[m]) for m in args[2:]]


@_command("ZCARD", "first", False, 2)
def _zcard(ks: _Keys, args: list[bytes]) -> Reply:
    return len(_zset(ks, args[1]))


@_command("ZCOUNT", "first", False, 4)
def _zcount(ks: _Keys, args: list[bytes]) -> Reply:
    scores = _zset_checked_bounds(ks, args[1], args[2], args[3])
    return len(_by_score(scores, args[2], args[3], False, None, None))


def _rank(ks: _Keys, args: list[bytes], reverse: bool) -> Reply:
    withscore = False
    if len(args) == 4:
        if args[3].upper() != b"WITHSCORE":
            raise CommandError(SYNTAX)
        withscore = True
    elif len(args) > 4:
        raise CommandError(SYNTAX)
    entries = ordered(_zset(ks, args[1]))
    if reverse:
        entries.reverse()
    for i, (member, score) in enumerate(entries):
        if member == args[2]:
            return [i, format_float(score)] if withscore else i
    return None


@_command("ZRANK", "first", False, -3)
def _zrank(ks: _Keys, args: list[bytes]) -> Reply:
    return _rank(ks, args, reverse=False)


@_command("ZREVRANK", "first", False, -3)
def _zrevrank(ks: _Keys, args: list[bytes]) -> Reply:
    return _rank(ks, args, reverse=True)


@_command("ZADD", "first", True, -4)
def _zadd(ks: _Keys, args: list[bytes]) -> Reply:
    flags, rest = _flags(args[2:], (b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"))
    if not rest or len(rest) % 2:
        raise CommandError(SYNTAX)
    if b"NX" in flags and b"XX" in flags:
        raise CommandError("ERR XX and NX options at the same time are not compatible")
    if (b"GT" in flags and b"LT" in flags) or (b"NX" in flags and flags & {b"GT", b"LT"}):
        raise CommandError("ERR GT, LT, and/or NX options at the same time are not compatible")
    if b"INCR" in flags and len(rest) != 2:
        raise CommandError("ERR INCR option supports a single increment-element pair")
    pairs = [(_float(rest[i]), rest[i + 1]) for i in range(0, len(rest), 2)]
    scores = dict(_zset(ks, args[1]))
    added = changed = 0
    result: float | None = None
    for score, member in pairs:
        current = scores.get(member)
        if (b"NX" in flags and current is not None) or (b"XX" in flags and current is None):
            continue
        new = score
        if b"INCR" in flags and current is not None:
            new = current + score
            if math.isnan(new):
                raise CommandError("ERR resulting score is not a number (NaN)")
        if current is not None and ((b"GT" in flags and new <= current) or (b"LT" in flags and new >= current)):
            continue
        result = new
        if current is None:
            added += 1
        elif new != current:
            changed += 1
        scores[member] = new
    if added or changed:
        _put_collection(ks, args[1], "zset", scores)
    if b"INCR" in flags:
        return None if result is None else format_float(result)
    return added + changed if b"CH" in flags else added


@_command("ZINCRBY", "first", True, 4)
def _zincrby(ks: _Keys, args: list[bytes]) -> Reply:
    amount = _float(args[2])
    scores = dict(_zset(ks, args[1]))
    new = scores.get(args[3], 0.0) + amount
    if math.isnan(new):
        raise CommandError("ERR resulting score is not a number (NaN)")
    scores[args[3]] = new
    _put_collection(ks, args[1], "zset", scores)
    return format_float(new)


@_command("ZREM", "first", True, -3)
def _zrem(ks: _Keys, args: list[bytes]) -> Reply:
    return _remove(ks, args[1], "zset", _zset(ks, args[1]), args[2:])


@_command("ZREMRANGEBYSCORE", "first", True, 4)
def _zremrangebyscore(ks: _Keys, args: list[bytes]) -> Reply:
    scores = dict(_zset_checked_bounds(ks, args[1], args[2], args[3]))
    gone = [m for m, _s in _by_score(scores, args[2], args[3], False, None, None)]
    for m in gone:
        del scores[m]
    if gone:
        _put_collection(ks, args[1], "zset", scores)
    return len(gone)
