"""The run of the task ``sync_kv_entry(key, revision, operation)``: one V1 change into V2.

The Celery binding (the task itself, its retries) is ``tasks.worker.task``; this
is the run it calls (``run_sync``). One run, in order:

1. Keys of object types we do not sync are skipped (committees and committee
   members when there is no committee service).
2. Idempotency: a revision at or below the last one synced for the key ends
   as ``unchanged`` (the Redis cache before the lease, the durable sync state
   in ``v1-sync-state`` after it, so an empty Redis changes nothing); latest
   state wins: a newer revision in ``v1-objects`` ends as ``superseded`` (it
   has its own task). Revisions restart at 1 when ``v1-objects`` is rebuilt,
   so every revision goes with the epoch of the bucket's life
   (``sync_core.epochs``; the bridge stamps it on the task): a revision of
   another life recorded anywhere counts as unknown, and a task of a life
   that is gone ends ``superseded``. A revision the durable state calls
   synced whose forward mapping is gone (``v1-mappings`` emptied) is synced
   again: the create's 409 finds the V2 object.
3. The key's lease (``tasks.stores.leases``): a few seconds, renewed while the run
   lives; a leased key comes back in about a second without spending the
   error budget. No V2 or mapping write happens without it.
4. Decode (JSON or msgpack), skip empty values; deletes (KV ``DEL``/``PURGE``
   and soft-deleted records) go to the delete path (``tasks.run.deletes``); an
   upsert of a record whose V2 object was deleted on purpose (tombstoned
   mapping) is ``skipped`` (``tombstoned``), and so is an echo of this
   service's own V1 write (``lastmodifiedbyid`` = ``{AUTH0_CLIENT_ID}@clients``,
   ``echo``); otherwise resolve the user and sync the object.
5. A parent without a mapping (``MissingMapping``) parks the run durably on
   that mapping key, spending no error budget; the run that writes the
   mapping enqueues its parked children, and a child parked longer than
   ``SYNC_PARENT_WAIT`` becomes a dead letter. Other transient errors retry
   with exponential backoff and full jitter up to ``SYNC_RETRY_MAX``;
   permanent errors, and transient ones once the budget is spent, become
   dead letters.
6. The outcome goes into the durable sync state: terminal outcomes with
   their revision and V2 uid, a retry with its due time, a parked run with
   its parent. The bridge's reconciler reads it to re-drive what got lost.
7. A dead-lettered run ends as a Celery FAILURE (``DeadLettered``, declared
   in ``throws``: one INFO line, no traceback), so Flower's Failed tab lists
   exactly the changes that need a person.

Every run ends in one INFO line with its ``outcome``, one count in
``v1sync_task_outcomes_total`` and one in the per-minute Redis counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

import redis
from celery.exceptions import SoftTimeLimitExceeded

from sync_core.broker import OPERATIONS, SYNC_TASK_NAME, task_id_for
from sync_core.epochs import EPOCH_TASK_KWARG
from sync_core.keys import is_valid_kv_key
from sync_core.sync_state import TERMINAL_OUTCOMES, ParkedChild, RunState, SyncState
from sync_core.v1_bodies import written_fingerprint
from tasks.errors import MissingMapping, PermanentError, SyncError, TransientError
from tasks.kinds.base import ObjectKind
from tasks.kinds.registry import kind_for_key
from tasks.mapping.record_ids import check_key_id
from tasks.run.backoff import lock_wait_countdown, retry_countdown
from tasks.run.decisions import echo_skip, read_value, should_retry, skip_for_key
from tasks.run.deletes import sync_delete
from tasks.run.metrics import (
    DEAD_LETTERS,
    KEY_LOCK_WAITS,
    TASK_OUTCOMES,
    TOMBSTONED_UPSERTS,
    observe_sync_lag,
    record_skip,
)
from tasks.run.outcomes import Outcome, add_outcome, dead_letter_outcome, outcome_label
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.run.upsert import sync_record
from tasks.stores.leases import KeyLock
from tasks.stores.objects_epoch import UNSTAMPED_MAX_AGE
from tasks.stores.sync_state import NOT_READ, parked_pending, retry_pending

log = logging.getLogger(__name__)

SYNCED_PREFIX = "v1sync:synced:"
# The marker only saves V2 round trips for duplicates; the KV revision check
# protects against old revisions after it expires.
SYNCED_TTL_SECONDS = 30 * 24 * 3600
DELETE_OPERATIONS = frozenset({"DEL", "PURGE"})
INTERNAL_ERROR_MESSAGE_CHARS = 300
# Outcomes after which the key is in V2 as V1 has it (or deliberately not synced).
SUCCESSES = frozenset(
    {Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED, Outcome.SKIPPED, Outcome.DELETED}
)
# Outcomes after which the key's own mapping exists: its parked children can go.
MAPPED_OUTCOMES = frozenset({Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED})
MAPPED_OUTCOME_VALUES = frozenset(outcome.value for outcome in MAPPED_OUTCOMES)
# Runs that wrote to V2: each observes the sync lag (V1 write to the end of its V2 write).
V2_WRITES = frozenset({Outcome.CREATED, Outcome.UPDATED, Outcome.DELETED})

# The marker's value: ``{epoch}:{revision}`` (a bare revision, written before
# epochs, is of an unknown life and never trusted).
MARKER_SEPARATOR = ":"
# Store ``epoch:revision`` unless the stored one is of the same epoch and at least as new.
MARK_SYNCED_SCRIPT = """
local stored = redis.call('GET', KEYS[1])
if stored then
    local epoch, revision = string.match(stored, '^(%d+):(%d+)$')
    if epoch == ARGV[3] and tonumber(revision) >= tonumber(ARGV[1]) then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[3] .. ':' .. ARGV[1], 'EX', ARGV[2])
return 1
"""


class KeyLocked(Exception):
    """Another run holds this key's lease: come back shortly."""


class Finished(Exception):
    """The run ends early with ``outcome`` (skips, supersessions, duplicates).

    ``settled_already``: the durable state needs no write for it (it says so
    already, or the key is not one the state tracks).
    """

    def __init__(
        self, outcome: Outcome, reason: str | None = None, *, settled_already: bool = False
    ) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.reason = reason
        self.settled_already = settled_already


def run_sync(
    runtime: Runtime,
    report: RunReport,
    *,
    force: bool = False,
    lock_waits: int = 0,
    release_delete_budget: bool = False,
    fresh_budget: bool = False,
) -> tuple[Outcome, dict[str, Any] | None]:
    """One run: the outcome, and the kwargs to retry with when it is ``retrying``.

    Sets ``report.countdown`` for a retry. Never raises a ``SyncError``. The
    outcome is recorded in the durable sync state before the key's lease is
    dropped (one compare-and-set does both), then counted in Redis with the
    synced marker (``cache_outcome``).
    """
    return run_leased(
        runtime,
        report,
        lambda lease: attempt_run(
            runtime, report, lease, force, lock_waits, release_delete_budget, fresh_budget
        ),
        remember,
    )


def run_leased(
    runtime: Runtime,
    report: RunReport,
    attempt: Callable[[KeyLock], tuple[Outcome, dict[str, Any] | None]],
    record: Callable[[Runtime, RunReport, Outcome, KeyLock, dict[str, Any] | None], None],
) -> tuple[Outcome, dict[str, Any] | None]:
    """One run of either direction under the key's lease: ``attempt`` it, ``record`` the
    outcome durably, count it in Redis, and drop the lease whatever happened."""
    lease = KeyLock(runtime.state, report.key)
    try:
        outcome, retry_kwargs = attempt(lease)
        record(runtime, report, outcome, lease, retry_kwargs)
        try:
            cache_outcome(runtime, report, outcome)
        except redis.RedisError:
            log.warning("could not count the outcome in Redis", extra=report.context())
        return outcome, retry_kwargs
    finally:
        try:
            lease.release()
        except Exception:
            # The lease runs out in seconds on its own.
            log.warning("key lease release failed", extra=report.context(), exc_info=True)


def attempt_run(
    runtime: Runtime,
    report: RunReport,
    lease: KeyLock,
    force: bool,
    lock_waits: int,
    release_delete_budget: bool,
    fresh_budget: bool = False,
) -> tuple[Outcome, dict[str, Any] | None]:
    """The run itself, every error classified into an outcome (see ``run_sync``)."""
    try:
        outcome = sync_entry(
            runtime, report, force, lease, release_delete_budget, fresh_budget=fresh_budget
        )
        return outcome, None
    except Finished as finished:
        report.reason = finished.reason
        report.settled_already = finished.settled_already
        return finished.outcome, None
    except KeyLocked:
        KEY_LOCK_WAITS.inc()
        report.reason = "key_locked"
        report.countdown = lock_wait_countdown()
        return Outcome.RETRYING, {"lock_waits": lock_waits + 1}
    except Exception as error:
        failure = failure_of(error, report, "the sync task")
    return settle_failure(runtime, report, failure, lease, park, dead_letter)


def failure_of(error: Exception, report: RunReport, what: str) -> SyncError:
    """The ``SyncError`` an exception that ended a run stands for (call it in ``except``).

    A time limit and Redis are transient; anything else unexpected (a NATS
    hiccup, or a bug) is logged and retried, and dead-lettered when it keeps
    happening, rather than lose the change.
    """
    if isinstance(error, SyncError):
        return error
    if isinstance(error, SoftTimeLimitExceeded):
        return TransientError("the run hit the soft time limit", kind="timeout")
    if isinstance(error, redis.RedisError):
        return TransientError(f"Redis: {type(error).__name__}", kind="redis_unavailable")
    log.exception(f"unexpected error in {what}", extra=report.context())
    message = f"{type(error).__name__}: {error}"[:INTERNAL_ERROR_MESSAGE_CHARS]
    return TransientError(message, kind="unexpected_error")


def settle_failure(
    runtime: Runtime,
    report: RunReport,
    failure: SyncError,
    lease: KeyLock,
    park: Callable[
        [Runtime, RunReport, MissingMapping, KeyLock], tuple[Outcome, dict[str, Any] | None] | None
    ],
    dead_letter: Callable[[Runtime, RunReport, SyncError], object],
) -> tuple[Outcome, dict[str, Any] | None]:
    """How a failed run ends, in either direction: parked, retried or dead-lettered.

    ``park`` and ``dead_letter`` are the direction's own.
    """
    report.error_kind, report.error_message = failure.kind, failure.message
    report.status = failure.status
    if isinstance(failure, MissingMapping):
        parked = park(runtime, report, failure, lease)
        if parked is not None:
            return parked
    elif should_retry(failure, report.attempt, runtime.settings.sync_retry_max):
        report.countdown = countdown_for(runtime, report.attempt, failure.retry_after)
        return Outcome.RETRYING, {"attempt": report.attempt + 1, "lock_waits": 0}
    try:
        dead_letter(runtime, report, failure)
    except Exception:
        # Nowhere to put it (NATS away): try the whole run again later rather than lose it.
        log.exception("could not write the dead letter", extra=report.context())
        report.countdown = runtime.settings.sync_retry_backoff_max
        return Outcome.RETRYING, {"attempt": report.attempt, "lock_waits": 0}
    return dead_letter_outcome(failure.kind), None


def park(
    runtime: Runtime, report: RunReport, failure: MissingMapping, lease: KeyLock
) -> tuple[Outcome, dict[str, Any] | None] | None:
    """Park the run until ``failure.parent_key`` is mapped; None once it waited too long.

    Parking spends no error budget: the run ends as ``parked`` and the run that
    writes the parent's mapping enqueues it again (the reconciler does, should
    that run die first). The index entry is written before the parent mapping
    is looked at once more, so a parent landing in between is never missed.
    """
    now = time.time()
    state = lease.state if lease.held else runtime.state.get(report.key)
    since = now
    pending = state.in_life(run_epoch(runtime, report)).pending
    if (
        pending is not None
        and pending.state is RunState.PARKED
        and pending.revision == report.revision
        and pending.parent_key == failure.parent_key
    ):
        since = pending.since
    if now - since >= runtime.settings.sync_parent_wait:
        return None
    runtime.state.add_parked(
        failure.parent_key,
        ParkedChild(report.key, report.revision, since, run_epoch(runtime, report)),
    )
    if runtime.mappings.get(failure.parent_key) is not None:
        # The parent landed while we parked: run again at once.
        report.countdown = 0.0
        return Outcome.RETRYING, {"attempt": report.attempt, "lock_waits": 0}
    report.reason = f"waiting_for:{failure.parent_key}"
    report.pending = parked_pending(report.revision, failure.parent_key, since, report.attempt)
    return Outcome.PARKED, None


def remember(
    runtime: Runtime,
    report: RunReport,
    outcome: Outcome,
    lease: KeyLock,
    retry_kwargs: dict[str, Any] | None = None,
) -> None:
    """Record the run's outcome in the durable sync state and act on what changed.

    Terminal outcomes store the revision (dropping the lease in the same
    write); successes also refresh the Redis cache, clear the key's stale dead
    letter and parked index entry, and release the children parked on the
    key's own mapping. A retry stores its due time and the ``attempt`` it will
    run as (``retry_kwargs``), a parked run its parent and the budget spent.
    Failures here are logged: the reconciler re-drives a key whose state was
    not written. A key KV cannot hold has no state (the reconciler could never
    see it in ``v1-objects`` either); its dead letter is all there is.
    """
    if not is_valid_kv_key(report.key):
        return
    token = lease.token if lease.held else None
    try:
        if outcome is Outcome.PARKED and report.pending is not None:
            epoch = run_epoch(runtime, report)
            runtime.state.set_pending(report.key, report.pending, token, epoch=epoch)
        elif outcome is Outcome.RETRYING and report.reason != "key_locked":
            now = time.time()
            due = now + (report.countdown or 0.0)
            attempt = int((retry_kwargs or {}).get("attempt", report.attempt))
            pending = retry_pending(report.revision, now, due, attempt)
            runtime.state.set_pending(report.key, pending, token, epoch=run_epoch(runtime, report))
        elif outcome.value in TERMINAL_OUTCOMES and not report.settled_already:
            finish(runtime, report, outcome, lease)
        else:
            return
        lease.forget()
    except Exception:
        log.warning("could not record the sync state", extra=report.context(), exc_info=True)


def finish(runtime: Runtime, report: RunReport, outcome: Outcome, lease: KeyLock) -> None:
    """Store a terminal outcome and do what follows from it (see ``remember``)."""
    token = lease.token if lease.held else None
    # Whether children wait on this key's mapping is asked in the same round trip.
    parent_key = children_parent_key(report) if outcome in MAPPED_OUTCOMES else None
    epoch = run_epoch(runtime, report)
    fingerprint = None
    if runtime.settings.sync_v2_to_v1 and outcome in V2_WRITES:
        # What V2's indexer event of this write will carry: the V2 -> V1 run
        # compares with it and skips the echo without an HTTP call.
        fingerprint = written_fingerprint(report.object_type, report.written)
    before, _, any_parked = runtime.state.finish(
        report.key,
        report.revision,
        outcome.value,
        time.time(),
        report.uid(),
        token,
        known=lease.known(),
        probe_parked=parent_key,
        epoch=epoch,
        fingerprint=fingerprint,
    )
    if outcome not in SUCCESSES:
        return
    if outcome is not Outcome.SKIPPED:
        # Written with the outcome count, in the run's last Redis round trip (``emit``).
        report.cache_synced = True
    if before.outcome == Outcome.DEAD_LETTERED.value:
        runtime.dead_letters.remove_settled(report.key, report.revision, epoch)
    pending = before.pending
    if pending is not None and pending.parent_key is not None:
        runtime.state.remove_parked(pending.parent_key, report.key)
    if parent_key is not None and any_parked:
        release_children(runtime, report, parent_key)


def children_parent_key(report: RunReport) -> str | None:
    """The mapping key children of this run's key park on (``project.sfid.…``), when
    this run may have to release them.

    Only a run that wrote that mapping anew (a create, an adoption, a new uid):
    a child finds an existing mapping and does not park, and one whose release
    was lost to a crash is released by the reconciler's next sweep.
    """
    kind, _ = kind_for_key(report.key)
    if kind is None or report.sfid is None or not report.mapped_anew:
        return None
    return kind.forward_key(report.sfid) if kind.has_children else None


def release_children(runtime: Runtime, report: RunReport, parent_key: str) -> None:
    """Enqueue every child parked on ``parent_key``, this key's mapping (it exists now)."""
    if runtime.send_task is None:
        log.warning(
            "no task sender in this runtime: the reconciler releases the parked children",
            extra=report.context() | {"parent_key": parent_key},
        )
        return
    for child in runtime.state.parked_children(parent_key, probe=False):
        # force: a child dead-lettered after SYNC_PARENT_WAIT runs again now that
        # its parent exists (a plain duplicate of a dead-lettered revision is skipped).
        kwargs: dict[str, Any] = {"force": True}
        if child.epoch is not None:
            kwargs[EPOCH_TASK_KWARG] = child.epoch
        runtime.send_task(
            SYNC_TASK_NAME,
            args=[child.key, child.revision, "PUT"],
            kwargs=kwargs,
            task_id=task_id_for(child.key, child.revision),
        )
        log.info(
            "released a parked child",
            extra=report.context() | {"child": child.key, "parent_key": parent_key},
        )


def sync_entry(
    runtime: Runtime,
    report: RunReport,
    force: bool,
    lease: KeyLock,
    release_delete_budget: bool = False,
    *,
    fresh_budget: bool = False,
) -> Outcome:
    """Everything between the key and the V2 outcome (raises ``Finished`` to end early)."""
    kind = check_object_type(runtime, report)
    # Before the key is used at all: ids are validated at the edge (invalid_record).
    key_id = check_key_id(report.key)
    if report.operation not in OPERATIONS:
        raise PermanentError(f"unknown operation {report.operation!r}", kind="invalid_operation")
    check_life(runtime, report)
    check_cached(runtime, report, force)
    sfid = key_id
    own_mapping = kind.forward_key(sfid)
    # One round trip reads the durable state and the bucket's entry and takes the
    # lease, unless the run turns out to be a duplicate or superseded; an upsert
    # reads its own mapping in it too, once the lease is taken.
    then_read = None
    if report.operation not in DELETE_OPERATIONS and is_valid_kv_key(own_mapping):
        then_read = (runtime.mappings.bucket, own_mapping)
    lease.acquire(
        read=runtime.settings.v1_objects_bucket,
        wanted=lambda state, entry: fresh_verdict(report, force, state, entry) is None,
        then_read=then_read,
    )
    verdict = fresh_verdict(report, force, lease.state, lease.entry)
    if verdict is not None and then_read is not None and unmapped(runtime, report, verdict, lease):
        # Synced, says the state, but the key's mapping is gone (v1-mappings emptied):
        # not settled. Sync again; the create's 409 finds the V2 object.
        force = True
        lease.acquire(
            read=runtime.settings.v1_objects_bucket,
            wanted=lambda state, entry: fresh_verdict(report, True, state, entry) is None,
            then_read=then_read,
        )
        verdict = fresh_verdict(report, True, lease.state, lease.entry)
    if verdict is not None:
        raise verdict
    if not lease.held:
        raise KeyLocked()
    if not fresh_budget:
        resume_budget(report, lease.state)
    with lease:
        entry = lease.entry
        report.written_at = getattr(entry, "created", None)
        if report.operation in DELETE_OPERATIONS:
            return run_delete(runtime, report, kind, sfid, None, release_delete_budget)
        assert entry is not None  # fresh_verdict ends a PUT whose key is gone
        if entry.revision < report.revision:
            log.warning("the bucket holds an older revision than the task", extra=report.context())
            raise Finished(Outcome.SKIPPED, "revision_not_in_bucket", settled_already=True)
        reading = read_value(bytes(entry.value or b""), kind.reference_columns, key_id)
        if reading.skip is not None:
            skip(report, reading.skip.reason, reading.skip.log_level)
        record = reading.record or {}
        if reading.soft_delete:
            return run_delete(runtime, report, kind, sfid, record, release_delete_budget)
        # The key's own mapping: read once for the tombstone check and the upsert.
        read = lease.then_entry is not NOT_READ
        with runtime.mappings.remembering(own_mapping, lease.then_entry, read=read):
            if runtime.mappings.is_tombstoned(own_mapping):
                # Deleted on purpose: a loader re-emitting old rows must not re-create it.
                TOMBSTONED_UPSERTS.labels(object_type=kind.name).inc()
                report.sfid = sfid
                skip(report, "tombstoned", logging.WARNING)
            echo = echo_skip(record, runtime.settings.auth0_client_id)
            if echo is not None:
                report.sfid = sfid
                skip(report, echo.reason, echo.log_level)
            identity = runtime.identity_for(record.get("lastmodifiedbyid"))
            report.username = identity.username
            mapped_before = runtime.mappings.read(own_mapping)
            outcome = sync_record(runtime, kind, record, identity, report)
            # Both reads come from memory: the run's own writes update it.
            report.mapped_anew = runtime.mappings.read(own_mapping) != mapped_before
        # The outcome is about to be recorded: a run that lost its key meanwhile retries.
        lease.check()
        return outcome


def unmapped(runtime: Runtime, report: RunReport, verdict: Finished, lease: KeyLock) -> bool:
    """Whether a PUT the durable state calls synced has lost its forward mapping.

    Asked only of a run ending ``already_synced`` on the durable state (a
    duplicate the Redis marker did not catch): one mapping read; the hot path
    of a new revision never gets here.
    """
    if verdict.outcome is not Outcome.UNCHANGED or report.epoch is None:
        return False
    if lease.state.in_life(report.epoch).outcome not in MAPPED_OUTCOME_VALUES:
        return False
    kind, sfid = kind_for_key(report.key)
    assert kind is not None  # check_object_type passed
    return runtime.mappings.read(kind.forward_key(sfid)) is None


def resume_budget(report: RunReport, state: SyncState) -> None:
    """Go on from the retry budget the durable ``state`` has spent on this revision.

    The count in the task message is lost with the message; the one in the
    state is not. The higher of the two wins, so a duplicate message never
    lowers it.
    """
    pending = state.pending
    if pending is not None and pending.revision == report.revision:
        report.attempt = max(report.attempt, pending.attempt)


def check_object_type(runtime: Runtime, report: RunReport) -> ObjectKind:
    """The key's object kind, or ``Finished(skipped)`` for what we do not sync."""
    kind, _ = kind_for_key(report.key)
    reason = skip_for_key(kind, kind is not None and kind.available(runtime))
    if kind is None:
        # Not one of ours: no sync state either (the reconciler never looks at it).
        assert reason is not None
        record_skip(report.object_type, reason.reason)
        log.debug("skipping", extra=report.context() | {"reason": reason.reason})
        raise Finished(Outcome.SKIPPED, reason.reason, settled_already=True)
    report.object_type = kind.name
    if reason is not None:
        skip(report, reason.reason, reason.log_level)
    return kind


def check_life(runtime: Runtime, report: RunReport) -> None:
    """Settle the life of ``v1-objects`` the run's revision belongs to (``report.epoch``).

    A task stamped with the current epoch (nearly all) costs no request; a
    stamp of a life that is gone ends the run ``superseded``
    (``tasks.stores.objects_epoch``).
    """
    epoch = runtime.objects_epoch.of_task(report.epoch)
    if epoch is None:
        raise Finished(Outcome.SUPERSEDED, "older_bucket_life")
    report.epoch = epoch


def run_epoch(runtime: Runtime, report: RunReport) -> int:
    """The run's epoch (``check_life``), or the current one for a run that ended before it."""
    if report.epoch is None:
        report.epoch = runtime.objects_epoch.current(UNSTAMPED_MAX_AGE)
    return report.epoch


def check_cached(runtime: Runtime, report: RunReport, force: bool) -> None:
    """``Finished(unchanged)`` when the Redis cache says this revision was synced already.

    Only the cache says so: the durable state is written to match.
    """
    if force:
        return
    if synced_revision(runtime, report.key, run_epoch(runtime, report)) >= report.revision:
        raise Finished(Outcome.UNCHANGED, "already_synced")


def fresh_verdict(report: RunReport, force: bool, state: SyncState, entry: Any) -> Finished | None:
    """How the run ends before it syncs anything, or None when it must sync.

    ``Finished(unchanged)`` when the durable ``state`` has this revision synced,
    ``Finished(skipped)`` when it has it dead-lettered, ``Finished(superseded)``
    when the bucket's ``entry`` is a newer revision, or when a PUT's key has
    been deleted since (the delete has its own task). Pure: the lease's
    compare-and-set may call it once per try. A state of another life of
    ``v1-objects`` than the run's (``report.epoch``) holds nothing about it.
    """
    if report.epoch is not None:
        state = state.in_life(report.epoch)
    if not force:
        if state.synced(report.revision):
            return Finished(Outcome.UNCHANGED, "already_synced", settled_already=True)
        if state.settled(report.revision):
            # A duplicate of a dead-lettered revision (a redelivery, a parked child
            # released twice): the letter stands; only a re-queue (force) runs it again.
            return Finished(Outcome.SKIPPED, "already_dead_lettered", settled_already=True)
    if entry is not None and entry.revision > report.revision:
        return Finished(Outcome.SUPERSEDED, f"bucket_at_revision_{entry.revision}")
    if entry is None and report.operation not in DELETE_OPERATIONS:
        return Finished(Outcome.SUPERSEDED, "deleted_since")
    return None


def skip(report: RunReport, reason: str, level: int) -> NoReturn:
    """End the run as ``skipped`` for ``reason``, counted and logged at ``level``."""
    record_skip(report.object_type, reason)
    log.log(level, "skipping", extra=report.context() | {"reason": reason})
    raise Finished(Outcome.SKIPPED, reason)


def run_delete(
    runtime: Runtime,
    report: RunReport,
    kind: ObjectKind,
    sfid: str,
    record: dict[str, Any] | None,
    release_budget: bool,
) -> Outcome:
    """A hard (``record`` None) or soft delete through ``tasks.run.deletes``."""
    return sync_delete(
        runtime,
        kind,
        sfid,
        record,
        report,
        task_id_for(report.key, report.revision),
        release_budget=release_budget,
    )


def synced_revision(runtime: Runtime, key: str, epoch: int) -> int:
    """The last revision of ``key`` in life ``epoch`` synced according to the Redis cache, or -1."""
    try:
        value = runtime.redis.get(SYNCED_PREFIX + key)
    except redis.RedisError:
        # The cache is optional: the durable state answers once the lease is held.
        return -1
    return marked_revision(value, epoch)


def marked_revision(value: bytes | str | None, epoch: int) -> int:
    """The revision a synced marker holds for life ``epoch``; -1 for another or unknown life."""
    if value is None:
        return -1
    text = value.decode() if isinstance(value, bytes) else value
    marked_epoch, separator, revision = text.partition(MARKER_SEPARATOR)
    if not separator or marked_epoch != str(epoch) or not revision.isdigit():
        return -1
    return int(revision)


def cache_outcome(runtime: Runtime, report: RunReport, outcome: Outcome) -> None:
    """Count the outcome per minute and, after a sync, cache its revision, in one round trip.

    The synced marker never goes down (a script keeps the higher revision).
    """
    with runtime.redis.pipeline(transaction=False) as pipe:
        add_outcome(pipe, outcome_label(outcome, report.reason))
        if report.cache_synced:
            pipe.eval(
                MARK_SYNCED_SCRIPT,
                1,
                SYNCED_PREFIX + report.key,
                report.revision,
                SYNCED_TTL_SECONDS,
                report.epoch if report.epoch is not None else -1,
            )
        replies = pipe.execute(raise_on_error=False)
    failed = [reply for reply in replies if isinstance(reply, Exception)]
    if failed:
        log.warning(
            "could not count the outcome or cache the synced revision in Redis",
            extra=report.context() | {"error": type(failed[0]).__name__},
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
        epoch=run_epoch(runtime, report),
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


def countdown_for(runtime: Runtime, attempt: int, retry_after: float | None) -> float:
    """The backoff before the next try, from the runtime's settings."""
    settings = runtime.settings
    return retry_countdown(
        attempt, settings.sync_retry_backoff_base, settings.sync_retry_backoff_max, retry_after
    )


def runtime_unavailable(report: RunReport, countdown: float) -> None:
    """The run of a worker whose connections could not be opened: logged, counted, retried."""
    report.countdown = countdown
    log.warning("worker resources unavailable", extra=report.context(), exc_info=True)
    emit(report, Outcome.RETRYING)


def emit(report: RunReport, outcome: Outcome) -> None:
    """The run's Prometheus count and INFO line (``run_sync`` counted it in Redis)."""
    TASK_OUTCOMES.labels(object_type=report.object_type, outcome=outcome.value).inc()
    if outcome in V2_WRITES:
        observe_sync_lag(report.object_type, report.written_at)
    log.info("sync %s", outcome.value, extra=report.fields(outcome.value))
