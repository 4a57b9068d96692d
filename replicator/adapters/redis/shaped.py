"""redis-py's interface over any command runner: the shell of the Redis-shaped clients.

redis-py's command methods (``DataAccessCommands``) turn a call such as ``zrange("k", 0, 9, withscores=True)`` into
``execute_command("ZRANGE", "k", 0, 9, "WITHSCORES", withscores=True, ...)``; its client then sends the arguments
and passes the raw reply through a response callback. :class:`RedisShaped` keeps the first and the last step and
replaces the wire with :meth:`RedisShaped.run`: the arguments are encoded by redis-py's own ``Encoder`` (str as
UTF-8, int and float as their repr, bool refused) and the reply parsed by redis-py's own RESP2 callbacks, with
errors made by redis-py's own parser (``ResponseError("WRONGTYPE Operation ...")``). An application that swaps its
``redis.Redis(...)`` for a subclass therefore calls the same methods with the same arguments and gets the same
Python values back (``decode_responses=False``: bytes out).

A subclass answers the raw commands in :meth:`RedisShaped.run_many` (a list of encoded commands in, a list of
RESP2 replies or :class:`~replicator.core.commands.Error` out): one command at a time, or a pipeline's commands
together, so it can batch their requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis._parsers import BaseParser
from redis.commands.core import DataAccessCommands
from redis.connection import Encoder

from replicator.core.commands import Error

#: The option redis-py passes for commands whose error reply stands for an empty answer (EMPTY_RESPONSE).
_EMPTY_RESPONSE = "EMPTY_RESPONSE"
_ENCODER = Encoder("utf-8", "strict", False)
#: redis-py's response callbacks for RESP2 replies: the Python shapes of ``redis.Redis()`` (legacy responses).
_CALLBACKS = redis.Redis(protocol=2).response_callbacks


def encode(args: Sequence[Any]) -> list[bytes]:
    """A command's arguments as bytes, exactly as redis-py would send them."""
    return [bytes(_ENCODER.encode(a)) for a in args]


def to_exception(error: Error) -> redis.exceptions.RedisError:
    """The exception redis-py raises for this error reply (its own parser: same class, same text)."""
    return BaseParser.parse_error(error.message)


def parse(command: str, reply: Any, options: dict[str, Any]) -> Any:
    """A raw reply as redis-py returns it: its callback for the command, given the method's options."""
    options = {k: v for k, v in options.items() if k not in ("keys", _EMPTY_RESPONSE, "NEVER_DECODE")}
    callback = _CALLBACKS.get(command)
    return callback(reply, **options) if callback is not None else reply


class RedisShaped(DataAccessCommands):  # type: ignore[misc]
    """redis-py's data commands, answered by :meth:`run_many` (see the module docstring)."""

    def run_many(self, commands: list[list[bytes]]) -> list[Any]:
        """The raw replies of ``commands``, in order; an error is an :class:`Error` in its place."""
        raise NotImplementedError

    def execute_command(self, *args: Any, **options: Any) -> Any:
        (reply,) = self.run_many([encode(args)])
        return _answer(str(args[0]).upper(), reply, options)

    def pipeline(self, transaction: bool = False, shard_hint: Any = None) -> ShapedPipeline:
        """Commands queued and answered together by :meth:`execute` (one round of batched requests where the
        commands allow). ``transaction=True`` is refused: MULTI/EXEC's isolation is not what DynamoDB gives here."""
        if transaction:
            raise redis.exceptions.RedisError("pipeline(transaction=True) is not supported: use transaction=False")
        return ShapedPipeline(self)

    def get_encoder(self) -> Encoder:
        return _ENCODER

    def close(self) -> None:
        """Nothing to release (for code that closes its client)."""

    def __enter__(self) -> RedisShaped:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


def _answer(command: str, reply: Any, options: dict[str, Any]) -> Any:
    if isinstance(reply, Error):
        if _EMPTY_RESPONSE in options:
            return options[_EMPTY_RESPONSE]
        raise to_exception(reply)
    return parse(command, reply, options)


class QueuedPipeline(DataAccessCommands):  # type: ignore[misc]
    """redis-py's non-transactional pipeline: commands queue and return the pipeline, :meth:`execute` answers them
    all (a subclass says how, in :meth:`_answers`)."""

    def __init__(self) -> None:
        self._queued: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **options: Any) -> QueuedPipeline:
        self._queued.append((args, options))
        return self

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Every queued command's answer in order; with ``raise_on_error`` the first error is raised after all
        of them ran (as redis-py does), else errors are returned in their places."""
        queued, self._queued = self._queued, []
        if not queued:
            return []
        answers = self._answers(queued)
        if raise_on_error:
            for answer in answers:
                if isinstance(answer, Exception):
                    raise answer
        return answers

    def _answers(self, queued: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        raise NotImplementedError

    def reset(self) -> None:
        self._queued = []

    def __len__(self) -> int:
        return len(self._queued)

    def __enter__(self) -> QueuedPipeline:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.reset()


class ShapedPipeline(QueuedPipeline):
    """The pipeline of a :class:`RedisShaped` client: its commands run together through ``run_many``."""

    def __init__(self, client: RedisShaped) -> None:
        super().__init__()
        self._client = client

    def execute_command(self, *args: Any, **options: Any) -> ShapedPipeline:
        self._queued.append((tuple(encode(args)), options))  # an argument of no Redis type fails here, as queued
        return self

    def _answers(self, queued: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        replies = self._client.run_many([list(args) for args, _options in queued])
        answers: list[Any] = []
        for (args, options), reply in zip(queued, replies, strict=True):
            try:
                answers.append(_answer(args[0].decode("latin-1").upper(), reply, options))
            except redis.exceptions.RedisError as exc:
                answers.append(exc)
        return answers
