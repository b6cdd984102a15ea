"""The task ``sync_kv_entry(key, revision, operation)``: one V1 change into V2.

One run, in order:

1. Keys of object types we do not sync are skipped (committee members too,
   for now; committees when there is no committee service).
2. Idempotency: a revision at or below the last one synced for the key ends
   as ``unchanged``; latest state wins: a newer revision in ``v1-objects``
   ends as ``superseded`` (it has its own task). Both are checked before and
   again after taking the per-key lock.
3. Per-key lock; a locked key comes back in about a second without spending
   the error budget.
4. Decode (JSON or msgpack), skip empty values, hand deletes to the
   not-yet-implemented delete path, resolve the user, sync the project or
   committee.
5. Transient errors retry with exponential backoff and full jitter up to
   ``SYNC_RETRY_MAX``; permanent errors, and transient ones once the budget is
   spent, become dead letters.

Every run ends in one INFO line with its ``outcome``, one count in
``v1sync_task_outcomes_total`` and one in the per-minute Redis counters.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from sync_core.broker import OPERATIONS, SYNC_TASK_NAME
from sync_core.keys import ObjectType, parse_key
from tasks.app import APP_SETTINGS, app
from tasks.backoff import lock_wait_countdown, retry_countdown
from tasks.codec import decode_value, is_empty, is_soft_delete
from tasks.committees import COMMITTEES
from tasks.errors import PermanentError, SyncError, TransientError
from tasks.keylock import KeyLock
from tasks.metrics import DEAD_LETTERS, KEY_LOCK_WAITS, TASK_OUTCOMES, record_skip
from tasks.objects import ObjectKind, sync_record
from tasks.outcomes import Outcome, count_outcome
from tasks.projects import PROJECTS
from tasks.report import RunReport
from tasks.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)

SYNCED_PREFIX = "v1sync:synced:"
# The marker only saves V2 round trips for duplicates; the KV revision check
# protects against old revisions after it expires.
SYNCED_TTL_SECONDS = 30 * 24 * 3600
DELETE_OPERATIONS = frozenset({"DEL", "PURGE"})
INTERNAL_ERROR_MESSAGE_CHARS = 300
# The object types the task syncs, each through the shared path of tasks.objects.
KINDS: dict[ObjectType, ObjectKind] = {
    ObjectType.PROJECT: PROJECTS,
    ObjectType.COMMITTEE: COMMITTEES,
}

# Store ``revision`` unless the stored one is at least as new.
_MARK_SYNCED_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    return 1
end
return 0
"""


class KeyLocked(Exception):
    """Another task holds this key's lock: come back shortly."""


class Finished(Exception):
    """The run ends early with ``outcome`` (skips, supersessions, duplicates)."""

    def __init__(self, outcome: Outcome, reason: str | None = None) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.reason = reason


# shared=False: a shared task would join every Celery app of the process.
@app.task(name=SYNC_TASK_NAME, bind=True, max_retries=None, ignore_result=True, shared=False)
def sync_kv_entry(
    self: Task,
    key: str,
    revision: int,
    operation: str = "PUT",
    attempt: int = 0,
    lock_waits: int = 0,
    force: bool = False,
) -> str:
    """Sync revision ``revision`` of V1 key ``key`` to V2; returns the outcome.

    ``attempt`` counts the error retries so far, ``lock_waits`` the returns
    after finding the key locked; ``force`` (re-syncs by hand) ignores the
    "already synced" marker, but still makes no PUT when nothing changed.
    """
    report = RunReport(key=key, revision=int(revision), operation=operation, attempt=attempt)
    try:
        runtime = get_runtime()
    except Exception as error:
        # NATS or Redis unreachable when the process opened its connections.
        report.error_kind, report.error_message = "runtime_unavailable", type(error).__name__
        report.countdown = max(1.0, _countdown(None, attempt, None))
        log.warning("worker resources unavailable", extra=report.context(), exc_info=True)
        _emit(None, report, Outcome.RETRYING)
        raise self.retry(countdown=report.countdown, kwargs=_retry_kwargs(self)) from None

    outcome, retry_kwargs = run_sync(runtime, report, force=force, lock_waits=lock_waits)
    _emit(runtime, report, outcome)
    if retry_kwargs is not None:
        raise self.retry(
            countdown=report.countdown,
            max_retries=None,
            kwargs={**_retry_kwargs(self), **retry_kwargs},
        )
    return outcome.value


def run_sync(
    runtime: Runtime, report: RunReport, *, force: bool = False, lock_waits: int = 0
) -> tuple[Outcome, dict[str, Any] | None]:
    """One run: the outcome, and the kwargs to retry with when it is ``retrying``.

    Sets ``report.countdown`` for a retry. Never raises a ``SyncError``.
    """
    settings = runtime.settings
    try:
        return sync_entry(runtime, report, force), None
    except Finished as finished:
        report.reason = finished.reason
        return finished.outcome, None
    except KeyLocked:
        KEY_LOCK_WAITS.inc()
        report.reason = "key_locked"
        report.countdown = lock_wait_countdown()
        return Outcome.RETRYING, {"lock_waits": lock_waits + 1}
    except SyncError as error:
        failure = error
    except SoftTimeLimitExceeded:
        failure = TransientError("the run hit the soft time limit", kind="timeout")
    except redis.RedisError as error:
        failure = TransientError(f"Redis: {type(error).__name__}", kind="redis_unavailable")
    except Exception as error:
        # A NATS hiccup, or a bug: retry, and dead-letter when it keeps happening
        # rather than lose the change.
        log.exception("unexpected error in the sync task", extra=report.context())
        message = f"{type(error).__name__}: {error}"[:INTERNAL_ERROR_MESSAGE_CHARS]
        failure = TransientError(message, kind="unexpected_error")
    report.error_kind, report.error_message = failure.kind, failure.message
    report.status = failure.status
    if failure.transient and report.attempt < settings.sync_retry_max:
        report.countdown = _countdown(runtime, report.attempt, failure.retry_after)
        return Outcome.RETRYING, {"attempt": report.attempt + 1, "lock_waits": 0}
    try:
        dead_letter(runtime, report, failure)
    except redis.RedisError:
        # Nowhere to put it: try the whole run again later rather than lose it.
        log.exception("could not write the dead letter", extra=report.context())
        report.countdown = runtime.settings.sync_retry_backoff_max
        return Outcome.RETRYING, {"attempt": report.attempt, "lock_waits": 0}
    return Outcome.DEAD_LETTERED, None


def sync_entry(runtime: Runtime, report: RunReport, force: bool) -> Outcome:
    """Everything between the key and the V2 outcome (raises ``Finished`` to end early)."""
    object_type = check_object_type(runtime, report)
    if report.operation not in OPERATIONS:
        raise PermanentError(f"unknown operation {report.operation!r}", kind="invalid_operation")
    check_fresh(runtime, report, force)
    lock = KeyLock(runtime.redis, report.key)
    if not lock.acquire():
        raise KeyLocked()
    with lock:
        entry = check_fresh(runtime, report, force)
        if report.operation in DELETE_OPERATIONS:
            return not_implemented_delete(runtime, report)
        assert entry is not None  # check_fresh ends a PUT whose key is gone
        if entry.revision < report.revision:
            log.warning("the bucket holds an older revision than the task", extra=report.context())
            raise Finished(Outcome.SKIPPED, "revision_not_in_bucket")
        value = bytes(entry.value or b"")
        if is_empty(value):
            skip(report, "empty_value", logging.INFO)
        record = decode_value(value)
        if is_soft_delete(record):
            return not_implemented_delete(runtime, report)
        identity = runtime.identity_for(record.get("lastmodifiedbyid"))
        report.username = identity.username
        outcome = sync_record(runtime, KINDS[object_type], record, identity, report)
        mark_synced(runtime, report)
        return outcome


def check_object_type(runtime: Runtime, report: RunReport) -> ObjectType:
    """The key's object type, or ``Finished(skipped)`` for what we do not sync."""
    object_type, _ = parse_key(report.key)
    if object_type is None:
        skip(report, "unknown_prefix", logging.DEBUG)
    report.object_type = object_type.value
    if object_type is ObjectType.COMMITTEE_MEMBER:
        skip(report, "members_not_synced_yet", logging.DEBUG)
    if object_type is ObjectType.COMMITTEE and runtime.committees is None:
        skip(report, "no_committee_service", logging.WARNING)
    return object_type


def check_fresh(runtime: Runtime, report: RunReport, force: bool) -> Any:
    """The key's current KV entry, unless the run is a duplicate or superseded.

    Raises ``Finished(unchanged)`` when this revision was synced already and
    ``Finished(superseded)`` when the bucket holds a newer revision, or when a
    PUT's key has been deleted since (the delete has its own task).
    """
    if not force and synced_revision(runtime, report.key) >= report.revision:
        raise Finished(Outcome.UNCHANGED, "already_synced")
    entry = runtime.nats.kv_get(runtime.settings.v1_objects_bucket, report.key)
    if entry is not None and entry.revision > report.revision:
        raise Finished(Outcome.SUPERSEDED, f"bucket_at_revision_{entry.revision}")
    if entry is None and report.operation not in DELETE_OPERATIONS:
        raise Finished(Outcome.SUPERSEDED, "deleted_since")
    return entry


def skip(report: RunReport, reason: str, level: int) -> NoReturn:
    """End the run as ``skipped`` for ``reason``, counted and logged at ``level``."""
    record_skip(report.object_type, reason)
    log.log(level, "skipping", extra=report.context() | {"reason": reason})
    raise Finished(Outcome.SKIPPED, reason)


def not_implemented_delete(runtime: Runtime, report: RunReport) -> Outcome:
    """Deletes are for a later issue: say so and end successfully."""
    log.info("delete handling not implemented", extra=report.context())
    mark_synced(runtime, report)
    return Outcome.DELETE_NOT_IMPLEMENTED


def synced_revision(runtime: Runtime, key: str) -> int:
    """The last revision of ``key`` synced, or -1."""
    value = runtime.redis.get(SYNCED_PREFIX + key)
    return int(value) if value is not None else -1


def mark_synced(runtime: Runtime, report: RunReport) -> None:
    """Remember that ``report.revision`` of the key is in V2 (never lowers the marker)."""
    runtime.redis.eval(
        _MARK_SYNCED_SCRIPT, 1, SYNCED_PREFIX + report.key, report.revision, SYNCED_TTL_SECONDS
    )


def dead_letter(runtime: Runtime, report: RunReport, error: SyncError) -> None:
    """Write the run's dead letter, count it and log it at ERROR."""
    runtime.dead_letters.add(
        report.key,
        report.revision,
        report.operation,
        error_kind=error.kind,
        error_message=error.message,
        status=error.status,
        body_excerpt=error.body_excerpt,
        attempts=report.attempt + 1,
    )
    DEAD_LETTERS.labels(object_type=report.object_type, error_kind=error.kind).inc()
    log.error(
        "dead-lettered",
        extra=report.context()
        | {
            "revision": report.revision,
            "error_kind": error.kind,
            "error_message": error.message,
            "status": error.status,
            "attempts": report.attempt + 1,
        },
    )


def _countdown(runtime: Runtime | None, attempt: int, retry_after: float | None) -> float:
    """The backoff before the next try, from the runtime's settings (or the defaults)."""
    if runtime is not None:
        base = runtime.settings.sync_retry_backoff_base
        maximum = runtime.settings.sync_retry_backoff_max
    else:
        base, maximum = APP_SETTINGS.sync_retry_backoff_base, APP_SETTINGS.sync_retry_backoff_max
    return retry_countdown(attempt, base, maximum, retry_after)


def _retry_kwargs(task: Task) -> dict[str, Any]:
    """The current run's keyword arguments, so a retry keeps ``force`` and friends."""
    return dict(task.request.kwargs or {})


def _emit(runtime: Runtime | None, report: RunReport, outcome: Outcome) -> None:
    """The run's one INFO line, Prometheus count and Redis per-minute count."""
    TASK_OUTCOMES.labels(object_type=report.object_type, outcome=outcome.value).inc()
    log.info("sync %s", outcome.value, extra=report.fields(outcome.value))
    if runtime is None:
        return
    try:
        count_outcome(runtime.redis, outcome.value)
    except redis.RedisError:
        log.warning("could not count the outcome in Redis", extra=report.context())
