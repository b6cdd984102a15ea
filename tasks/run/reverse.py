"""The run of ``sync_v2_event(key, sequence, action)``: one V2 committee or member change into V1.

The V2 -> V1 direction (``SYNC_V2_TO_V1``, issue 24). The bridge enqueues one
task per V2 indexer event with the key ``v2.{object_type}.{uid}`` and the
event's stream sequence; the run, in order:

1. reads the event back from the V2 events stream by its sequence and checks
   it (``tasks.mapping.v2_events``); a bad event is a dead letter;
2. takes the key's lease in ``v1-sync-state`` (``tasks.stores.leases``) and
   reads its durable state in the same round trip: latest wins per V2
   object, so a sequence at or below the last one recorded ends
   ``unchanged`` (a duplicate) or ``superseded`` (a newer event was applied);
3. ends ``skipped:echo`` without any HTTP call when the event is one of this
   service's own writes: its principals are the service's
   (``{HEIMDALL_CLIENT_ID}@clients``, ``{AUTH0_CLIENT_ID}@clients``), or its
   V1-relevant fingerprint (``tasks.mapping.v1_bodies``) equals the one
   recorded on the object's V1 key (``platform-collaboration__c.{sfid}``…)
   by whichever direction wrote it last: the forward run stores the
   fingerprint of what it wrote to V2, this run the one of what it wrote to
   V1. A person's edit that differs, a revert included, goes through. While
   a forward run holds the V1 key's lease (its fingerprint is not recorded
   yet), the run comes back shortly (a lock wait, no budget spent);
4. parks (no budget spent; polled every ``PARK_POLL_SECONDS`` and released at
   once when this direction creates the parent committee) while the
   committee's project, or the member's committee, has no V1 id; after
   ``SYNC_PARENT_WAIT`` it is a dead letter;
5. creates, updates or deletes the V1 object through ``V1CommitteeWriter``.
   A create records its intent in the durable state before the POST; a run
   that finds an intent and no recorded answer (the answer was lost, the
   worker died) looks the object up in ``v1-objects`` first (a committee by
   name in its project, a member by e-mail in its committee) and adopts it
   instead of creating a second one. A create of an event younger than
   ``CREATE_SETTLE_SECONDS`` waits that long first, so that the forward
   path's mappings of an object it has just created in V2 are in place (its
   echo then finds the mapping and is skipped). After a create the mappings
   are written both ways, so the row V1's loader writes back is the same
   object to the forward path (it skips it as an echo, and adopts it later);
6. deletes go through the delete budget and tombstone both mappings; a V1
   object already gone is ``skipped:not_in_v1``;
7. the outcome goes into the durable state with the sequence and the
   fingerprint written (one compare-and-set that also drops the lease);
   transient errors retry with backoff on the durable budget
   (``SYNC_RETRY_MAX``), permanent ones and a spent budget become dead
   letters (FAILURE in Flower).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from sync_core.broker import V2_EVENT_TASK_NAME, task_id_for
from sync_core.keys import COMMITTEE_KEYS, MEMBER_KEYS, KeySpec, is_valid_kv_key
from sync_core.sync_state import TERMINAL_OUTCOMES, ParkedChild, SyncState, Terminal
from sync_core.v2_events import v2_key
from tasks.clients.identity import MACHINE_SUFFIX
from tasks.clients.v1_committees import V1Created
from tasks.errors import (
    DELETE_BUDGET_EXCEEDED_KIND,
    MissingMapping,
    PermanentError,
    SyncError,
    TransientError,
)
from tasks.mapping.v1_bodies import V1Body, event_fingerprint, v1_committee_body, v1_member_body
from tasks.mapping.v2_events import EventRejected, V2Action, V2Event, V2ObjectType, parse_v2_event
from tasks.run.backoff import lock_wait_countdown
from tasks.run.decisions import ECHO_REASON, should_retry
from tasks.run.deletes import DeleteBudget
from tasks.run.metrics import KEY_LOCK_WAITS, TOMBSTONED_UPSERTS, V2_TO_V1_OUTCOMES
from tasks.run.outcomes import Outcome, dead_letter_outcome, outcome_label
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.run.sync import (
    INTERNAL_ERROR_MESSAGE_CHARS,
    Finished,
    KeyLocked,
    cache_outcome,
    countdown_for,
    dead_letter,
    finish,
    resume_budget,
    skip,
)
from tasks.stores.id_mappings import (
    COMMITTEE_SFID,
    COMMITTEE_UID,
    MEMBER_SFID,
    MEMBER_UID,
    PROJECT_UID,
)
from tasks.stores.leases import KeyLock, LeaseLost
from tasks.stores.sync_state import parked_pending, retry_pending
from tasks.stores.v1_rows import Row, deleted_row, find_rows, live_row
from tasks.stores.v2_event_log import read_event

log = logging.getLogger(__name__)

# The reverse keys' states belong to no life of ``v1-objects``: one constant epoch.
REVERSE_EPOCH = 0
# A create waits until its event is this old (see the module doc, step 5).
CREATE_SETTLE_SECONDS = 5.0
# A parked run looks again this often (the project mappings come from the forward path).
PARK_POLL_SECONDS = 30.0
INVALID_EVENT_KIND = "invalid_event"
PARENT_NOT_IN_V1_KIND = "parent_not_in_v1"
NO_CONTACT_ID_KIND = "no_contact_id"
NOT_IN_V1_REASON = "not_in_v1"
EVENT_GONE_REASON = "event_gone"
SWITCHED_OFF_REASON = "v2_to_v1_off"
SETTLING_REASON = "settling"


@dataclass(frozen=True)
class RunOptions:
    """What the task asked of the run besides the event (see ``run_reverse``)."""

    fresh_budget: bool = False
    force: bool = False
    release_delete_budget: bool = False


class Deferred(Exception):
    """The run comes back after ``countdown`` seconds, spending no budget."""

    def __init__(self, reason: str, countdown: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown


def run_reverse(
    runtime: Runtime,
    report: RunReport,
    *,
    lock_waits: int = 0,
    fresh_budget: bool = False,
    force: bool = False,
    release_delete_budget: bool = False,
) -> tuple[Outcome, dict[str, Any] | None]:
    """One run: the outcome, and the kwargs to retry with when the task runs again.

    Sets ``report.countdown`` for a retry. Never raises a ``SyncError``.
    ``force`` (an operator's re-queue) runs a sequence the state has settled
    already (a dead letter), never one older than the last applied;
    ``release_delete_budget`` lets a delete past ``SYNC_DELETE_BUDGET``.
    """
    report.epoch = REVERSE_EPOCH
    lease = KeyLock(runtime.state, report.key)
    options = RunOptions(fresh_budget, force, release_delete_budget)
    try:
        outcome, retry_kwargs = attempt_reverse(runtime, report, lease, lock_waits, options)
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
            log.warning("key lease release failed", extra=report.context(), exc_info=True)


def emit_reverse(report: RunReport, outcome: Outcome) -> None:
    """The run's Prometheus count (``v1sync_v2_to_v1_outcomes``) and INFO outcome line."""
    V2_TO_V1_OUTCOMES.labels(
        object_type=report.object_type, outcome=outcome_label(outcome, report.reason)
    ).inc()
    log.info("v2 to v1 %s", outcome.value, extra=report.fields(outcome.value))


def attempt_reverse(
    runtime: Runtime, report: RunReport, lease: KeyLock, lock_waits: int, options: RunOptions
) -> tuple[Outcome, dict[str, Any] | None]:
    """The run, every error classified into an outcome (as ``tasks.run.sync.attempt_run``)."""
    try:
        return reverse_entry(runtime, report, lease, options), None
    except Finished as finished:
        report.reason = finished.reason
        report.settled_already = finished.settled_already
        return finished.outcome, None
    except KeyLocked:
        KEY_LOCK_WAITS.inc()
        report.reason = "key_locked"
        report.countdown = lock_wait_countdown()
        return Outcome.RETRYING, {"lock_waits": lock_waits + 1}
    except Deferred as deferred:
        report.reason = deferred.reason
        report.countdown = deferred.countdown
        return Outcome.RETRYING, {"attempt": report.attempt, "lock_waits": lock_waits}
    except SyncError as error:
        failure = error
    except SoftTimeLimitExceeded:
        failure = TransientError("the run hit the soft time limit", kind="timeout")
    except redis.RedisError as error:
        failure = TransientError(f"Redis: {type(error).__name__}", kind="redis_unavailable")
    except Exception as error:
        log.exception("unexpected error in the V2 -> V1 task", extra=report.context())
        message = f"{type(error).__name__}: {error}"[:INTERNAL_ERROR_MESSAGE_CHARS]
        failure = TransientError(message, kind="unexpected_error")
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
        log.exception("could not write the dead letter", extra=report.context())
        report.countdown = runtime.settings.sync_retry_backoff_max
        return Outcome.RETRYING, {"attempt": report.attempt, "lock_waits": 0}
    return dead_letter_outcome(failure.kind), None


def park(
    runtime: Runtime, report: RunReport, failure: MissingMapping, lease: KeyLock
) -> tuple[Outcome, dict[str, Any] | None] | None:
    """Wait for ``failure.parent_key`` without spending budget; None once waited too long.

    The index entry lets this direction's create of the parent committee
    release the run at once; otherwise it looks again every ``PARK_POLL_SECONDS``.
    """
    now = time.time()
    state = lease.state if lease.held else runtime.state.get(report.key)
    pending = state.in_life(REVERSE_EPOCH).pending
    since = now
    if (
        pending is not None
        and pending.revision == report.revision
        and pending.parent_key == failure.parent_key
    ):
        since = pending.since
    waited = now - since
    if waited >= runtime.settings.sync_parent_wait:
        return None
    runtime.state.add_parked(
        failure.parent_key, ParkedChild(report.key, report.revision, since, REVERSE_EPOCH)
    )
    report.reason = f"waiting_for:{failure.parent_key}"
    report.pending = parked_pending(report.revision, failure.parent_key, since, report.attempt)
    if runtime.mappings.get(failure.parent_key) is not None:
        report.countdown = 0.0  # the parent landed while we parked
    else:
        report.countdown = min(PARK_POLL_SECONDS, runtime.settings.sync_parent_wait - waited)
    return Outcome.PARKED, {"attempt": report.attempt, "lock_waits": 0}


def record(
    runtime: Runtime,
    report: RunReport,
    outcome: Outcome,
    lease: KeyLock,
    retry_kwargs: dict[str, Any] | None,
) -> None:
    """Record the run's outcome in the durable state (as ``tasks.run.sync.remember``)."""
    if not is_valid_kv_key(report.key):
        return
    token = lease.token if lease.held else None
    try:
        if outcome is Outcome.PARKED and report.pending is not None:
            runtime.state.set_pending(report.key, report.pending, token, epoch=REVERSE_EPOCH)
        elif outcome is Outcome.RETRYING and report.reason not in ("key_locked", SETTLING_REASON):
            now = time.time()
            attempt = int((retry_kwargs or {}).get("attempt", report.attempt))
            pending = retry_pending(report.revision, now, now + (report.countdown or 0.0), attempt)
            runtime.state.set_pending(report.key, pending, token, epoch=REVERSE_EPOCH)
        elif outcome.value in TERMINAL_OUTCOMES and not report.settled_already:
            finish(runtime, report, outcome, lease)
        else:
            return
        lease.forget()
    except Exception:
        log.warning("could not record the sync state", extra=report.context(), exc_info=True)


# -- the run ---------------------------------------------------------------------------


def reverse_entry(
    runtime: Runtime, report: RunReport, lease: KeyLock, options: RunOptions
) -> Outcome:
    """Everything between the task and the V1 outcome (raises ``Finished`` to end early)."""
    if not runtime.settings.sync_v2_to_v1:
        raise Finished(Outcome.SKIPPED, SWITCHED_OFF_REASON, settled_already=True)
    event = load_event(runtime, report)
    force = options.force
    lease.acquire(wanted=lambda state, _entry: fresh_verdict(report, state, force) is None)
    verdict = fresh_verdict(report, lease.state, force)
    if verdict is not None:
        raise verdict
    if not lease.held:
        raise KeyLocked()
    if not options.fresh_budget:
        resume_budget(report, lease.state)
    with lease:
        if own_principal(runtime, event):
            skip(report, ECHO_REASON, logging.DEBUG)
        if event.action is V2Action.DELETED:
            outcome = reverse_delete(runtime, report, event, lease, options.release_delete_budget)
        elif event.object_type is V2ObjectType.COMMITTEE:
            outcome = reverse_committee(runtime, report, event, lease)
        else:
            outcome = reverse_member(runtime, report, event, lease)
        # The outcome is about to be recorded: a run that lost its key meanwhile retries.
        lease.check()
        return outcome


def load_event(runtime: Runtime, report: RunReport) -> V2Event:
    """The event at the task's sequence, checked; the report learns its ids."""
    stored = read_event(runtime.nats, runtime.settings.v2_events_stream, report.revision)
    if stored is None:
        log.warning("the event is no longer in the stream", extra=report.context())
        raise Finished(Outcome.SKIPPED, EVENT_GONE_REASON, settled_already=True)
    event = parse_v2_event(stored.data, stored.subject)
    if isinstance(event, EventRejected):
        raise PermanentError(str(event), kind=INVALID_EVENT_KIND)
    if v2_key(event.object_type, event.object_id) != report.key:
        raise PermanentError(
            f"the event at sequence {report.revision} is about "
            f"{event.object_type} {event.object_id}, not {report.key}",
            kind=INVALID_EVENT_KIND,
        )
    report.object_type = str(event.object_type)
    # The event's own action (a released parked run's task does not carry it).
    report.operation = str(event.action)
    data = event.data
    if event.object_type is V2ObjectType.COMMITTEE:
        report.committee_uid = event.object_id
    else:
        report.member_uid = event.object_id
        report.committee_uid = _text(data.get("committee_uid"))
    report.project_uid = _text(data.get("project_uid"))
    report.username = next(iter(event.principals), None)
    return event


def fresh_verdict(report: RunReport, state: SyncState, force: bool = False) -> Finished | None:
    """How a run ends before it does anything, or None: latest wins per V2 object."""
    state = state.in_life(REVERSE_EPOCH)
    if state.revision == report.revision and not force:
        if state.outcome == Terminal.DEAD_LETTERED:
            return Finished(Outcome.SKIPPED, "already_dead_lettered", settled_already=True)
        return Finished(Outcome.UNCHANGED, "already_synced", settled_already=True)
    if state.revision > report.revision:
        return Finished(Outcome.SUPERSEDED, f"event_{state.revision}_applied", settled_already=True)
    return None


def own_principal(runtime: Runtime, event: V2Event) -> bool:
    """Whether the event was caused by this service's own identity (the forward path)."""
    settings = runtime.settings
    own = {
        settings.heimdall_client_id + MACHINE_SUFFIX,
        settings.auth0_client_id + MACHINE_SUFFIX,
    }
    return any(principal in own for principal in event.principals)


# -- committees ------------------------------------------------------------------------


def reverse_committee(
    runtime: Runtime, report: RunReport, event: V2Event, lease: KeyLock
) -> Outcome:
    """Create or update the V1 committee of a V2 committee."""
    uid = event.object_id
    check_not_tombstoned(runtime, report, COMMITTEE_UID + uid)
    project_sfid = parent_sfid(runtime, report.project_uid, PROJECT_UID, "project")
    body = checked_body(report, v1_committee_body(event.data))
    fingerprint = event_fingerprint(event)
    report.written = event.data
    writer = runtime.v1_committees
    sfid = runtime.mappings.committee_sfid(uid)
    if sfid is None:
        name = body.body.get("Name")

        def same_committee(row: Row) -> bool:
            return row.get("project_name__c") == project_sfid and _same_text(
                row.get("mailing_list__c"), name
            )

        created = create_once(
            runtime,
            report,
            event,
            lease,
            send=lambda: writer.create_committee(project_sfid, _for_create(body)),
            find=lambda: _found(runtime, COMMITTEE_KEYS, same_committee, with_contact=False),
        )
        report.sfid = created.sfid
        runtime.mappings.record_committee(created.sfid, uid)
        agree(runtime, v1_key_of(COMMITTEE_KEYS, created.sfid), fingerprint)
        release_children(runtime, report, COMMITTEE_UID + uid)
        return Outcome.CREATED
    report.sfid = sfid
    v1_key = v1_key_of(COMMITTEE_KEYS, sfid)
    if last_agreed(runtime, v1_key) == fingerprint:
        skip(report, ECHO_REASON, logging.DEBUG)
    writer.update_committee(project_sfid, sfid, body.body)
    agree(runtime, v1_key, fingerprint)
    return Outcome.UPDATED


# -- members ---------------------------------------------------------------------------


def reverse_member(runtime: Runtime, report: RunReport, event: V2Event, lease: KeyLock) -> Outcome:
    """Create or update the V1 member of a V2 committee member."""
    uid = event.object_id
    check_not_tombstoned(runtime, report, MEMBER_UID + uid)
    if report.committee_uid is None:
        raise PermanentError("the member's event names no committee_uid", kind=INVALID_EVENT_KIND)
    check_not_tombstoned(runtime, report, COMMITTEE_UID + report.committee_uid)
    committee_sfid = parent_sfid(runtime, report.committee_uid, COMMITTEE_UID, "committee")
    project_sfid = member_project_sfid(runtime, report, committee_sfid)
    fingerprint = event_fingerprint(event)
    report.written = event.data
    writer = runtime.v1_committees
    sfid = runtime.mappings.member_sfid(uid)
    if sfid is None:
        body = checked_body(report, v1_member_body(event.data))
        email = body.body.get("Email")

        def same_member(row: Row) -> bool:
            return row.get("collaboration_name__c") == committee_sfid and _same_email(
                row.get("contactemail__c"), email
            )

        created = create_once(
            runtime,
            report,
            event,
            lease,
            send=lambda: writer.create_member(project_sfid, committee_sfid, _for_create(body)),
            find=lambda: _found(runtime, MEMBER_KEYS, same_member, with_contact=True),
        )
        report.sfid = created.sfid
        runtime.mappings.record_member(created.sfid, report.committee_uid, uid)
        if created.contact_id is not None:
            keep_contact_id(runtime, report, lease, created.contact_id)
        agree(runtime, v1_key_of(MEMBER_KEYS, created.sfid), fingerprint)
        return Outcome.CREATED
    report.sfid = sfid
    v1_key = v1_key_of(MEMBER_KEYS, sfid)
    if last_agreed(runtime, v1_key) == fingerprint:
        skip(report, ECHO_REASON, logging.DEBUG)
    contact_id = lease.state.contact_id or _column(runtime, v1_key, "contact_name__c")
    if contact_id is None:
        raise PermanentError(
            f"V1 member {sfid} has no contact id to name it by", kind=NO_CONTACT_ID_KIND
        )
    body = checked_body(report, v1_member_body(event.data, contact_id))
    writer.update_member(project_sfid, committee_sfid, contact_id, body.body)
    agree(runtime, v1_key, fingerprint)
    return Outcome.UPDATED


# -- deletes ---------------------------------------------------------------------------


def reverse_delete(
    runtime: Runtime, report: RunReport, event: V2Event, lease: KeyLock, release_budget: bool
) -> Outcome:
    """Delete the V1 object of a deleted V2 object, through the delete budget."""
    uid = event.object_id
    is_committee = event.object_type is V2ObjectType.COMMITTEE
    uid_key = (COMMITTEE_UID if is_committee else MEMBER_UID) + uid
    mappings = runtime.mappings
    sfid = mappings.committee_sfid(uid) if is_committee else mappings.member_sfid(uid)
    if sfid is None:
        reason = "already_deleted" if mappings.is_tombstoned(uid_key) else NOT_IN_V1_REASON
        skip(report, reason, logging.INFO)
    report.sfid = sfid
    if not runtime.settings.sync_deletes:
        skip(report, "deletes_disabled", logging.WARNING)
    keys = COMMITTEE_KEYS if is_committee else MEMBER_KEYS
    tombstones = [uid_key, (COMMITTEE_SFID if is_committee else MEMBER_SFID) + sfid]
    value = runtime.v1_value(v1_key_of(keys, sfid))
    if deleted_row(value):
        # V1 deleted it (often the V1 delete this V2 delete echoes): no call.
        mappings.tombstone(tombstones)
        skip(report, NOT_IN_V1_REASON, logging.INFO)
    row = live_row(value) or {}
    project_sfid = _text(row.get("project_name__c"))
    if project_sfid is None and report.project_uid is not None:
        project_sfid = mappings.project_sfid(report.project_uid)
    committee_sfid = contact_id = None
    if not is_committee:
        committee_sfid = _text(row.get("collaboration_name__c")) or (
            mappings.committee_sfid(report.committee_uid) if report.committee_uid else None
        )
        contact_id = _text(row.get("contact_name__c")) or lease.state.contact_id
    if project_sfid is None or (
        not is_committee and (committee_sfid is None or contact_id is None)
    ):
        # Nothing names the object in V1 any more: it is gone there.
        mappings.tombstone(tombstones)
        skip(report, NOT_IN_V1_REASON, logging.INFO)
    budget = DeleteBudget(runtime.redis, runtime.settings.sync_delete_budget)
    task_id = task_id_for(report.key, report.revision)
    if not budget.take(task_id, released=release_budget):
        raise PermanentError(
            f"more than SYNC_DELETE_BUDGET={budget.budget} deletes in the last hour: "
            "re-queue the dead letter to let it through",
            kind=DELETE_BUDGET_EXCEEDED_KIND,
        )
    writer = runtime.v1_committees
    if is_committee:
        deleted = writer.delete_committee(project_sfid, sfid)
    else:
        assert committee_sfid is not None
        assert contact_id is not None
        deleted = writer.delete_member(project_sfid, committee_sfid, contact_id)
    mappings.tombstone(tombstones)
    if not deleted:
        budget.give_back(task_id)
        skip(report, NOT_IN_V1_REASON, logging.INFO)
    return Outcome.DELETED


# -- exactly one V1 create ---------------------------------------------------------------


def create_once(
    runtime: Runtime,
    report: RunReport,
    event: V2Event,
    lease: KeyLock,
    *,
    send: Callable[[], V1Created],
    find: Callable[[], V1Created | None],
) -> V1Created:
    """The V1 object of this V2 create: found (a lost answer) or created, never twice.

    A recorded intent without a recorded answer means an earlier POST may have
    created the object: V1 is searched first. Otherwise the intent is written
    (under the lease) before the POST is sent.
    """
    if lease.state.intent is not None:
        found = find()
        if found is not None:
            log.info("adopting the V1 object an earlier create made", extra=report.context())
            return found
    else:
        age = time.time() - event.timestamp.astimezone(UTC).timestamp()
        if age < CREATE_SETTLE_SECONDS:
            raise Deferred(SETTLING_REASON, CREATE_SETTLE_SECONDS - max(age, 0.0))
    note_intent(runtime, report, lease)
    return send()


def note_intent(runtime: Runtime, report: RunReport, lease: KeyLock) -> None:
    """Record in the durable state that a V1 create for this sequence is about to be sent."""
    amend_own_state(runtime, report, lease, lambda state: replace(state, intent=report.revision))


def keep_contact_id(runtime: Runtime, report: RunReport, lease: KeyLock, contact_id: str) -> None:
    """Record the V1 contact id of a member this run created (its URL names it)."""
    amend_own_state(runtime, report, lease, lambda state: replace(state, contact_id=contact_id))


def amend_own_state(
    runtime: Runtime, report: RunReport, lease: KeyLock, change: Callable[[SyncState], SyncState]
) -> None:
    """Change the key's durable state while this run holds its lease (``LeaseLost`` else)."""
    lease.check()

    def amend(state: SyncState) -> SyncState | None:
        if state.lease is None or state.lease.token != lease.token:
            return None
        return change(state)

    state, revision = runtime.state.modify_versioned(report.key, amend, known=lease.known())
    if state.lease is None or state.lease.token != lease.token:
        raise LeaseLost(report.key)
    lease.state, lease.revision = state, revision


def _found(
    runtime: Runtime, keys: KeySpec, wanted: Callable[[Row], bool], *, with_contact: bool
) -> V1Created | None:
    """The one unmapped V1 row ``wanted`` accepts, as a create answer; None if none."""
    rows = find_rows(runtime.nats, runtime.settings.v1_objects_bucket, keys.prefix + ".", wanted)
    forward_prefix = COMMITTEE_SFID if keys is COMMITTEE_KEYS else MEMBER_SFID
    for _, row in rows:
        sfid = _text(row.get("sfid"))
        # A row another V2 object is mapped to is that object's, not ours.
        if sfid is None or runtime.mappings.get(forward_prefix + sfid) is not None:
            continue
        contact_id = _text(row.get("contact_name__c")) if with_contact else None
        return V1Created(sfid=sfid, contact_id=contact_id, record=row)
    return None


# -- echoes ------------------------------------------------------------------------------


def last_agreed(runtime: Runtime, v1_key: str) -> str | None:
    """The fingerprint recorded on the object's V1 key; ``KeyLocked`` while a forward run
    holds that key (its write's fingerprint lands with its outcome)."""
    state = runtime.state.get(v1_key)
    if state.lease_live(time.time()):
        raise KeyLocked()
    return state.fingerprint


def agree(runtime: Runtime, v1_key: str, fingerprint: str | None) -> None:
    """Record on the V1 key that V1 now holds ``fingerprint`` (the next echo of it is skipped)."""
    if fingerprint is None:
        return

    def change(state: SyncState) -> SyncState | None:
        return None if state.fingerprint == fingerprint else replace(state, fingerprint=fingerprint)

    runtime.state.modify(v1_key, change)


def release_children(runtime: Runtime, report: RunReport, parent_key: str) -> None:
    """Enqueue the V2 events parked on ``parent_key`` (the mapping this run just wrote)."""
    if runtime.send_task is None:
        return
    for child in runtime.state.parked_children(parent_key, probe=False):
        if not child.key.startswith("v2."):
            continue
        runtime.send_task(
            V2_EVENT_TASK_NAME,
            args=[child.key, child.revision, str(V2Action.UPDATED)],
            task_id=task_id_for(child.key, child.revision),
        )
        log.info(
            "released a parked V2 event",
            extra=report.context() | {"child": child.key, "parent_key": parent_key},
        )


# -- small pieces ------------------------------------------------------------------------


def check_not_tombstoned(runtime: Runtime, report: RunReport, mapping_key: str) -> None:
    """``skipped:tombstoned`` for an object deleted on purpose (its mapping tombstoned)."""
    if runtime.mappings.is_tombstoned(mapping_key):
        TOMBSTONED_UPSERTS.labels(object_type=report.object_type).inc()
        skip(report, "tombstoned", logging.INFO)


def parent_sfid(runtime: Runtime, uid: str | None, prefix: str, what: str) -> str:
    """The V1 id of a parent (``MissingMapping`` parks the run while there is none)."""
    if uid is None:
        raise PermanentError(f"the event names no {what}_uid", kind=INVALID_EVENT_KIND)
    sfid = runtime.mappings.get(prefix + uid)
    if sfid is None:
        raise MissingMapping(
            f"{what} {uid} has no V1 id yet", kind=PARENT_NOT_IN_V1_KIND, parent_key=prefix + uid
        )
    return sfid


def member_project_sfid(runtime: Runtime, report: RunReport, committee_sfid: str) -> str:
    """The V1 project of a member's committee: its V1 row's, else the event's project."""
    project_sfid = _column(runtime, v1_key_of(COMMITTEE_KEYS, committee_sfid), "project_name__c")
    if project_sfid is not None:
        return project_sfid
    if report.project_uid is None:
        # The committee's V1 row is not in v1-objects yet (the loader lags): try again.
        raise TransientError(
            f"V1 committee {committee_sfid} is not in v1-objects yet", kind="v1_row_missing"
        )
    return parent_sfid(runtime, report.project_uid, PROJECT_UID, "project")


def checked_body(report: RunReport, body: V1Body) -> V1Body:
    """The body, its dropped values logged one line each."""
    for warning in body.warnings:
        log.warning("V2 value not sent to V1", extra=report.context() | {"detail": warning})
    return body


def _for_create(body: V1Body) -> dict[str, Any]:
    missing = body.missing_for_create
    if missing:
        raise PermanentError(f"V1 needs {', '.join(missing)} to create it", kind=INVALID_EVENT_KIND)
    return body.body


def v1_key_of(keys: KeySpec, sfid: str) -> str:
    """The ``v1-objects`` key of the V1 record ``sfid`` of a type: ``{prefix}.{sfid}``."""
    return f"{keys.prefix}.{sfid}"


def _column(runtime: Runtime, v1_key: str, column: str) -> str | None:
    row = live_row(runtime.v1_value(v1_key))
    return None if row is None else _text(row.get(column))


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _same_text(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and " ".join(a.split()) == " ".join(b.split())


def _same_email(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.strip().lower() == b.strip().lower()
