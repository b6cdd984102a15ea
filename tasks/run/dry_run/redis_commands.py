"""Redis for a dry run: read commands are sent, every other command is recorded.

A Lua script that decides something is answered by its read-only twin
(``RUN_SCRIPTS``): the delete budget by ``DeleteBudget.would_take``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from tasks.run.deletes import TAKE_BUDGET_SCRIPT, DeleteBudget
from tasks.run.dry_run.write_log import RecordedWrite, WriteLog
from tasks.run.sync import MARK_SYNCED_SCRIPT

# Redis commands that only read: sent to the server. Every other command is recorded.
REDIS_READS = frozenset(
    {
        "GET",
        "MGET",
        "EXISTS",
        "TTL",
        "PTTL",
        "TYPE",
        "TIME",
        "PING",
        "HGET",
        "HGETALL",
        "HMGET",
        "LLEN",
        "LRANGE",
        "SCARD",
        "SISMEMBER",
        "SMEMBERS",
        "ZCARD",
        "ZCOUNT",
        "ZSCORE",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "SCAN",
    }
)


@dataclass(frozen=True)
class DryScript:
    """How a dry run answers one Lua script: its name in the record, and a read-only answer.

    ``answer(client, keys, args)`` gets a client that can only read.
    """

    name: str
    answer: Callable[[redis.Redis, Sequence[Any], Sequence[Any]], Any]


def _budget_answer(client: redis.Redis, keys: Sequence[Any], args: Sequence[Any]) -> int:
    """``TAKE_BUDGET_SCRIPT``'s answer (ARGV: task id, budget, window, released)."""
    task_id, budget, _, released = args
    allowed = DeleteBudget(client, int(budget)).would_take(
        str(task_id), released=str(released) == "1"
    )
    return 1 if allowed else 0


# The scripts of the run, answered without running them.
RUN_SCRIPTS: Mapping[str, DryScript] = {
    TAKE_BUDGET_SCRIPT: DryScript("take the delete budget", _budget_answer),
    MARK_SYNCED_SCRIPT: DryScript("mark synced", lambda client, keys, args: 1),
}


class DryRunRedis(redis.Redis):
    """A Redis client on the real one's connections that sends only reads."""

    def __init__(
        self, real: redis.Redis, writes: WriteLog, scripts: Mapping[str, DryScript] = RUN_SCRIPTS
    ) -> None:
        super().__init__(connection_pool=real.connection_pool)
        self._real = real
        self._writes = writes
        self._scripts = scripts

    def execute_command(self, *args: Any, **options: Any) -> Any:
        command = str(args[0]).upper()
        if command in REDIS_READS:
            return super().execute_command(*args, **options)
        if command in ("EVAL", "EVALSHA"):
            script, numkeys = str(args[1]), int(args[2])
            keys, argv = args[3 : 3 + numkeys], args[3 + numkeys :]
            known = self._scripts.get(script)
            name = known.name if known is not None else "script"
            first = str(keys[0]) if keys else ""
            self._writes.add(RecordedWrite("redis", f"EVAL {name}", first, list(argv)))
            return None if known is None else known.answer(self, keys, argv)
        key = str(args[1]) if len(args) > 1 else ""
        self._writes.add(RecordedWrite("redis", command, key, [str(a) for a in args[2:]]))
        return None

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return DryRunPipeline(self, transaction, shard_hint)

    def close(self) -> None:
        self._real.close()


class DryRunPipeline(Pipeline):
    """A pipeline whose commands run one by one through ``DryRunRedis`` when executed."""

    def __init__(self, owner: DryRunRedis, transaction: bool, shard_hint: Any) -> None:
        super().__init__(owner.connection_pool, owner.response_callbacks, transaction, shard_hint)
        self._owner = owner

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, self.command_stack = self.command_stack, []
        return [self._owner.execute_command(*args, **options) for args, options in stack]
