"""The run of ``sync_v2_event(key, sequence, action)``: one V2 committee or member change into V1.

The V2 -> V1 direction (``SYNC_V2_TO_V1``, issue 24). The bridge enqueues one
task per V2 indexer event with the key ``v2.{object_type}.{uid}`` and the
event's stream sequence; the run, in order:

1. reads the event back from the V2 events stream by its sequence and checks
   it (``sync_core.indexer_events``); a bad event is a dead letter;
2. takes the key's lease in ``v1-sync-state`` (``tasks.stores.leases``) and
   reads its durable state in the same round trip: latest wins per V2
   object, so a sequence at or below the last one recorded ends
   ``unchanged`` (a duplicate) or ``superseded`` (a newer event was applied);
3. ends ``skipped:echo`` without any HTTP call when the event is one of this
   service's own writes: its principals are the service's
   (``{HEIMDALL_CLIENT_ID}@clients``, ``{AUTH0_CLIENT_ID}@clients``), or its
   V1-relevant fingerprint (``sync_core.v1_bodies``) equals the one
   recorded on the object's V1 key (``platform-collaboration__c.{sfid}``…)
   by whichever direction wrote it last: the forward run stores the
   fingerprint of what it wrote to V2, this run the one of what it wrote to
   V1. A person's edit that differs, a revert included, goes through. While
   a forward run holds the V1 key's lease (its fingerprint is not recorded
   yet), the run comes back shortly (a lock wait, no budget spent). Most
   echoes never reach a run: the bridge makes the same fingerprint check and
   records them ``skipped`` itself (``bridge.v2_echoes``); a run sees the ones
   it left over (a lease it did not wait out, any doubt);
4. parks (no budget spent; polled every ``PARK_POLL_SECONDS`` and released at
   once when this direction creates the parent committee) while the
   committee's project, or the member's committee, has no V1 id; after
   ``SYNC_PARENT_WAIT`` it is a dead letter;
5. creates, updates or deletes the V1 object through ``V1CommitteeWriter``.
   A create records its intent in the durable state before the POST; a run
   that finds an intent and no recorded answer (the answer was lost, the
   worker died) looks the object up in ``v1-objects`` first (a committee by
   name in its project, a member by e-mail in its committee) and adopts it
   instead of creating a second one; while no row has come back it looks
   again (``confirming_create``) and sends the create again only after
   ``SYNC_V1_CREATE_CONFIRM_WAIT`` (``tasks.run.reverse_writes``). A create
   of an event younger than ``CREATE_SETTLE_SECONDS`` waits that long first,
   so that the forward path's mappings of an object it has just created in
   V2 are in place (its echo then finds the mapping and is skipped). After a create the mappings
   are written both ways, so the row V1's loader writes back is the same
   object to the forward path (it skips it as an echo, and adopts it later);
6. deletes go through the delete budget and tombstone both mappings; a V1
   object already gone is ``skipped:not_in_v1``. A member whose event names
   another committee than its mapping moves in V1 (``tasks.run.reverse_move``:
   created in the new committee, mappings rewritten, deleted from the old one;
   no delete budget), ending ``updated`` with the reason ``moved``;
7. the outcome goes into the durable state with the sequence and the
   fingerprint written (one compare-and-set that also drops the lease);
   transient errors retry with backoff on the durable budget
   (``SYNC_RETRY_MAX``), permanent ones and a spent budget become dead
   letters (FAILURE in Flower).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sync_core.indexer_events import EventRejected, V2Action, V2Event, V2ObjectType, parse_v2_event
from sync_core.keys import is_valid_kv_key
from sync_core.sync_state import TERMINAL_OUTCOMES, ParkedChild, SyncState, Terminal
from sync_core.v2_events import REVERSE_EPOCH, v2_key
from tasks.clients.identity import MACHINE_SUFFIX
from tasks.errors import (
    MissingMapping,
    PermanentError,
)
from tasks.run.backoff import lock_wait_countdown
from tasks.run.decisions import ECHO_REASON
from tasks.run.metrics import KEY_LOCK_WAITS, V2_TO_V1_OUTCOMES
from tasks.run.outcomes import Outcome, outcome_label
from tasks.run.report import RunReport
from tasks.run.reverse_writes import (
    INVALID_EVENT_KIND,
    SETTLING_REASON,
    Deferred,
    reverse_committee,
    reverse_delete,
    reverse_member,
    text_or_none,
)
from tasks.run.runtime import Runtime
from tasks.run.sync import (
    Finished,
    KeyLocked,
    dead_letter,
    failure_of,
    finish,
    resume_budget,
    run_leased,
    settle_failure,
    skip,
)
from tasks.stores.leases import KeyLock
from tasks.stores.sync_state import parked_pending, retry_pending
from tasks.stores.v2_event_log import read_event

log = logging.getLogger(__name__)

# A parked run looks again this often (the project mappings come from the forward path).
PARK_POLL_SECONDS = 30.0
EVENT_GONE_REASON = "event_gone"
SWITCHED_OFF_REASON = "v2_to_v1_off"


@dataclass(frozen=True)
class RunOptions:
    """What the task asked of the run besides the event (see ``run_reverse``)."""

    fresh_budget: bool = False
    force: bool = False
    release_delete_budget: bool = False


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
    options = RunOptions(fresh_budget, force, release_delete_budget)
    return run_leased(
        runtime,
        report,
        lambda lease: attempt_reverse(runtime, report, lease, lock_waits, options),
        record,
    )


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
    except Exception as error:
        failure = failure_of(error, report, "the V2 -> V1 task")
    return settle_failure(runtime, report, failure, lease, park, dead_letter)


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
        report.committee_uid = text_or_none(data.get("committee_uid"))
    report.project_uid = text_or_none(data.get("project_uid"))
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
