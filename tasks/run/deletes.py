"""V1 deletes into V2: who deletes, the mass-delete guard, and the run's decisions.

A delete reaches the task as a KV ``DEL``/``PURGE`` of the key (hard) or as a
PUT whose record is marked deleted (soft, ``tasks.mapping.codec.is_soft_delete``). In
order, a delete run:

1. reads the forward mapping: absent -> ``skipped`` ``not_in_v2`` (never
   synced); tombstoned -> ``skipped`` ``already_deleted`` (a soft delete
   followed by the purge of the key, or a duplicate);
2. with ``SYNC_DELETES=false`` logs and counts the delete and calls nothing
   (``skipped`` ``deletes_disabled``);
3. takes one unit of the budget (``DeleteBudget``): over it, the delete is a
   dead letter ``delete_budget_exceeded`` until an operator re-queues it
   (``release_budget``);
4. picks the principal (``deleting_user``) and runs ``tasks.run.upsert.delete_object``.
   A refusal or an object found already gone gives its budget unit back: no
   V2 object was removed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis

from tasks.clients.identity import Identity, fallback_identity
from tasks.errors import DELETE_BUDGET_EXCEEDED_KIND, DeleteRefused, PermanentError
from tasks.kinds.base import ObjectKind
from tasks.run.decisions import DELETES_DISABLED_REASON, delete_skip
from tasks.run.metrics import DELETES, record_skip
from tasks.run.outcomes import Outcome
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.run.upsert import ALREADY_GONE_REASON, delete_object

log = logging.getLogger(__name__)

# The V1 user is the deleter only when the record was last modified this close to
# the loader's deletion time; otherwise the last change was someone else's edit.
DELETER_WINDOW_SECONDS = 1.0
BUDGET_KEY = "v1sync:delete_budget"
BUDGET_WINDOW_SECONDS = 3600

# Take one unit of the rolling-hour budget for ARGV[1] (the task id). The time is the
# Redis server's, so every worker counts on one clock. A task id already counted
# (a retry of the same delete) passes without a second unit; ARGV[4] = 1 (an
# operator's release) passes whatever the count, and is counted.
TAKE_BUDGET_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    return 1
end
if ARGV[4] ~= '1' and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], window)
return 1
"""


class DeleteBudget:
    """At most ``budget`` deletes per rolling hour across all workers, counted in Redis.

    A sorted set ``v1sync:delete_budget`` (member: task id, score: Redis time).
    If Redis loses it, the count starts again from zero: at most one more
    budget's worth of deletes can run in that hour.
    """

    def __init__(self, client: redis.Redis, budget: int) -> None:
        self._client = client
        self.budget = budget

    def take(self, task_id: str, *, released: bool = False) -> bool:
        """Count the delete ``task_id``; False when the hour's budget is spent."""
        allowed = self._client.eval(
            TAKE_BUDGET_SCRIPT,
            1,
            BUDGET_KEY,
            task_id,
            self.budget,
            BUDGET_WINDOW_SECONDS,
            "1" if released else "0",
        )
        return bool(int(allowed))

    def would_take(self, task_id: str, *, released: bool = False) -> bool:
        """What ``take`` would answer now, counting nothing (a dry run's answer).

        The same rule as ``TAKE_BUDGET_SCRIPT``, read only: a task id counted
        within the window passes, an operator's release passes, otherwise the
        window must have room.
        """
        seconds, micros = self._client.time()
        window_start = seconds + micros / 1_000_000 - BUDGET_WINDOW_SECONDS
        if released:
            return True
        counted = self._client.zscore(BUDGET_KEY, task_id)
        if counted is not None and counted > window_start:
            return True
        return int(self._client.zcount(BUDGET_KEY, f"({window_start}", "+inf")) < self.budget

    def give_back(self, task_id: str) -> None:
        """Return the unit of a delete that removed nothing (refused, or already gone)."""
        self._client.zrem(BUDGET_KEY, task_id)

    def used(self) -> int:
        """Deletes counted in the last hour (expired entries included until the next take)."""
        return int(self._client.zcard(BUDGET_KEY))


def parse_timestamp(value: Any) -> datetime | None:
    """A V1 timestamp (ISO text, a msgpack datetime, or Unix seconds) as aware UTC; else None."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value.strip():
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        try:
            when = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    else:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def deleting_user(record: dict[str, Any] | None) -> str | None:
    """The ``lastmodifiedbyid`` to delete as, or None for the service itself.

    Only a soft delete whose ``lastmodifieddate`` is within one second of its
    ``_sdc_deleted_at`` names its deleter; a hard delete (no record) never does.
    """
    if record is None:
        return None
    deleted_at = parse_timestamp(record.get("_sdc_deleted_at"))
    modified_at = parse_timestamp(record.get("lastmodifieddate"))
    if deleted_at is None or modified_at is None:
        return None
    if abs((deleted_at - modified_at).total_seconds()) > DELETER_WINDOW_SECONDS:
        return None
    user = record.get("lastmodifiedbyid")
    return user if isinstance(user, str) and user.strip() else None


def delete_identity(runtime: Runtime, record: dict[str, Any] | None) -> Identity:
    """The identity of the V2 delete call (see ``deleting_user``)."""
    user = deleting_user(record)
    if user is None:
        return fallback_identity(runtime.settings.heimdall_client_id)
    return runtime.identity_for(user)


def sync_delete(
    runtime: Runtime,
    kind: ObjectKind,
    sfid: str,
    record: dict[str, Any] | None,
    report: RunReport,
    task_id: str,
    *,
    release_budget: bool = False,
) -> Outcome:
    """One V1 delete of ``kind``'s ``sfid`` (``record``: the soft-deleted record, or None).

    Returns ``deleted`` or ``skipped`` (``report.reason`` says why); raises
    ``DeleteRefused``, ``PermanentError(delete_budget_exceeded)`` or the
    ``SyncError`` of the V2 call.
    """
    report.sfid = sfid
    forward = kind.forward_key(sfid)
    tombstoned = runtime.mappings.is_tombstoned(forward)
    mapped = not tombstoned and runtime.mappings.get(forward) is not None
    skip = delete_skip(tombstoned, mapped, runtime.settings.sync_deletes)
    if skip is not None:
        if skip.reason == DELETES_DISABLED_REASON:
            DELETES.labels(object_type=kind.name, result="disabled").inc()
        return _skipped(report, skip.reason, skip.log_level)
    budget = DeleteBudget(runtime.redis, runtime.settings.sync_delete_budget)
    if not budget.take(task_id, released=release_budget):
        DELETES.labels(object_type=kind.name, result="budget_exceeded").inc()
        raise PermanentError(
            f"more than SYNC_DELETE_BUDGET={budget.budget} deletes in the last hour: "
            "not executed; `dlq requeue` releases it",
            kind=DELETE_BUDGET_EXCEEDED_KIND,
        )
    identity = delete_identity(runtime, record)
    report.username = identity.username
    try:
        outcome = delete_object(runtime, kind, sfid, identity, report)
    except DeleteRefused:
        budget.give_back(task_id)
        DELETES.labels(object_type=kind.name, result="refused").inc()
        raise
    if report.reason == ALREADY_GONE_REASON:
        budget.give_back(task_id)
        DELETES.labels(object_type=kind.name, result="already_gone").inc()
    else:
        DELETES.labels(object_type=kind.name, result="deleted").inc()
    log.info("deleted in V2", extra=report.context())
    return outcome


def _skipped(report: RunReport, reason: str, level: int) -> Outcome:
    record_skip(report.object_type, reason)
    log.log(level, "delete not sent to V2", extra=report.context() | {"reason": reason})
    report.reason = reason
    return Outcome.SKIPPED
