"""The V1 writes of the V2 -> V1 run: committees, members, deletes, exactly one create.

``tasks.run.reverse`` runs one V2 event; once it holds the object's lease and
the event is not an echo of this service's own V2 write, it calls
``reverse_committee``, ``reverse_member`` or ``reverse_delete`` here. They find
the V1 ids (parking on a missing parent), skip an echo by its fingerprint,
and create (``create_once``: intent recorded before the POST, V1 searched on a
retry), update or delete the V1 object through ``V1CommitteeWriter``, then
write the mappings both ways and record the fingerprint V1 now holds. A
member moved to another committee is created there and deleted where it was
(``move_member``; the steps and their order in ``tasks.run.reverse_move``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC
from typing import Any

from sync_core.broker import V2_EVENT_TASK_NAME, task_id_for
from sync_core.indexer_events import V2Action, V2Event, V2ObjectType
from sync_core.keys import COMMITTEE_KEYS, MEMBER_KEYS, KeySpec
from sync_core.sync_state import MemberMove, SyncState
from sync_core.v1_bodies import V1Body, event_fingerprint, v1_committee_body, v1_member_body
from tasks.clients.v1_committees import V1_AUTH0_KIND, V1Created
from tasks.errors import (
    DELETE_BUDGET_EXCEEDED_KIND,
    MissingMapping,
    PermanentError,
    SyncError,
    TransientError,
)
from tasks.run.decisions import ECHO_REASON
from tasks.run.deletes import DeleteBudget
from tasks.run.metrics import TOMBSTONED_UPSERTS
from tasks.run.outcomes import Outcome
from tasks.run.report import RunReport
from tasks.run.reverse_move import (
    MOVED_IN_V1_REASON,
    MOVED_REASON,
    find_move,
    leave_old_committee,
    moved_already,
    moved_in_v1,
)
from tasks.run.runtime import Runtime
from tasks.run.sync import (
    KeyLocked,
    skip,
)
from tasks.stores.id_mappings import (
    COMMITTEE_SFID,
    COMMITTEE_UID,
    MEMBER_SFID,
    MEMBER_UID,
    PROJECT_UID,
    TOMBSTONE,
)
from tasks.stores.leases import KeyLock, LeaseLost
from tasks.stores.v1_rows import Row, deleted_row, find_rows, live_row

log = logging.getLogger(__name__)

# A create waits until its event is this old (see ``tasks.run.reverse``, step 5).
CREATE_SETTLE_SECONDS = 5.0
INVALID_EVENT_KIND = "invalid_event"
PARENT_NOT_IN_V1_KIND = "parent_not_in_v1"
NO_CONTACT_ID_KIND = "no_contact_id"
NOT_IN_V1_REASON = "not_in_v1"
SETTLING_REASON = "settling"
# A create whose answer was lost waits for its row (``create_once``); it looks this often.
CONFIRMING_REASON = "confirming_create"
CONFIRM_POLL_SECONDS = 30.0


class Deferred(Exception):
    """The run comes back after ``countdown`` seconds, spending no budget."""

    def __init__(self, reason: str, countdown: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown


# -- committees ------------------------------------------------------------------------


def reverse_committee(
    runtime: Runtime, report: RunReport, event: V2Event, lease: KeyLock
) -> Outcome:
    """Create or update the V1 committee of a V2 committee."""
    uid = event.object_id
    sfid = mapped_sfid(runtime, report, COMMITTEE_UID + uid)
    fingerprint = event_fingerprint(event)
    report.written = event.data
    if sfid is not None:
        report.sfid = sfid
        skip_echo(runtime, report, v1_key_of(COMMITTEE_KEYS, sfid), fingerprint)
    project_sfid = parent_sfid(runtime, report.project_uid, PROJECT_UID, "project")
    body = checked_body(report, v1_committee_body(event.data))
    writer = runtime.v1_committees
    if sfid is None:
        name = body.body.get("Name")

        def same_committee(row: Row) -> bool:
            return row.get("project_name__c") == project_sfid and _sametext_or_none(
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
    writer.update_committee(project_sfid, sfid, body.body)
    agree(runtime, v1_key_of(COMMITTEE_KEYS, sfid), fingerprint)
    return Outcome.UPDATED


# -- members ---------------------------------------------------------------------------


def reverse_member(runtime: Runtime, report: RunReport, event: V2Event, lease: KeyLock) -> Outcome:
    """Create, update or move the V1 member of a V2 committee member."""
    uid = event.object_id
    if report.committee_uid is None:
        raise PermanentError("the member's event names no committee_uid", kind=INVALID_EVENT_KIND)
    sfid = mapped_sfid(runtime, report, MEMBER_UID + uid)
    fingerprint = event_fingerprint(event)
    report.written = event.data
    pending = lease.state.moving_from
    if sfid is not None and pending is None:
        # The fingerprint holds the member's committee: a move is never an echo.
        report.sfid = sfid
        skip_echo(runtime, report, v1_key_of(MEMBER_KEYS, sfid), fingerprint)
    committee_sfid = mapped_sfid(runtime, report, COMMITTEE_UID + report.committee_uid)
    if committee_sfid is None:
        raise missing_parent(report.committee_uid, COMMITTEE_UID, "committee")
    project_sfid = member_project_sfid(runtime, report, committee_sfid)
    writer = runtime.v1_committees
    if pending is not None:
        # A move an earlier run began: finished first, whatever this event says.
        move_member(runtime, report, event, lease, pending)
        if pending.to_committee_uid == report.committee_uid:
            return Outcome.UPDATED
        sfid = runtime.mappings.member_sfid(uid)
    if sfid is not None:
        report.sfid = sfid
        to = (report.committee_uid, committee_sfid, project_sfid)
        move = find_move(runtime, report, uid, sfid, to, lease.state.contact_id)
        if move is not None:
            amend_own_state(runtime, report, lease, lambda state: replace(state, moving_from=move))
            move_member(runtime, report, event, lease, move)
            return Outcome.UPDATED
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
    v1_key = v1_key_of(MEMBER_KEYS, sfid)
    contact_id = lease.state.contact_id or _column(runtime, v1_key, "contact_name__c")
    if contact_id is None:
        raise PermanentError(
            f"V1 member {sfid} has no contact id to name it by", kind=NO_CONTACT_ID_KIND
        )
    body = checked_body(report, v1_member_body(event.data, contact_id))
    writer.update_member(project_sfid, committee_sfid, contact_id, body.body)
    agree(runtime, v1_key, fingerprint)
    return Outcome.UPDATED


def move_member(
    runtime: Runtime, report: RunReport, event: V2Event, lease: KeyLock, move: MemberMove
) -> None:
    """Move the member in V1 to ``move``'s committee: create there, rewrite the mappings,
    delete the old row, forget the move (``tasks.run.reverse_move``; ``move`` is recorded)."""
    uid = event.object_id
    report.reason = MOVED_REASON
    sfid = moved_already(runtime, uid, move)
    if sfid is None:
        body = checked_body(report, v1_member_body(event.data, move.contact_id))
        email = body.body.get("Email")

        def same_member(row: Row) -> bool:
            return row.get("collaboration_name__c") == move.to_committee_sfid and (
                _same_email(row.get("contactemail__c"), email)
                or (move.contact_id is not None and row.get("contact_name__c") == move.contact_id)
            )

        created = create_once(
            runtime,
            report,
            event,
            lease,
            send=lambda: runtime.v1_committees.create_member(
                move.to_project_sfid, move.to_committee_sfid, _for_create(body)
            ),
            find=lambda: _found(runtime, MEMBER_KEYS, same_member, with_contact=True),
            settle=False,
        )
        sfid = created.sfid
        # Before the old row is deleted: its delete coming back is then no V2 delete.
        runtime.mappings.record_member_move(sfid, move.to_committee_uid, uid, move.sfid)
        if created.contact_id is not None and created.contact_id != lease.state.contact_id:
            keep_contact_id(runtime, report, lease, created.contact_id)
        agree(runtime, v1_key_of(MEMBER_KEYS, sfid), event_fingerprint(event))
    report.sfid = sfid
    leave_old_committee(runtime, report, move)
    amend_own_state(runtime, report, lease, lambda state: replace(state, moving_from=None))


def drop_pending_move(runtime: Runtime, report: RunReport, lease: KeyLock, uid: str) -> None:
    """A member deleted in V2 while its move was under way: no row of the move stays in V1.

    The mapped row (the new one once the mappings were rewritten, else the old
    one) is the delete's own; the other is deleted here, outside the delete
    budget like the move it belonged to.
    """
    move = lease.state.moving_from
    if move is None:
        return
    if moved_already(runtime, uid, move) is not None:
        leave_old_committee(runtime, report, move)
    elif lease.state.intent is not None and move.contact_id is not None:
        # The create in the new committee may have happened with its answer lost.
        def made_by_the_move(row: Row) -> bool:
            return (
                row.get("collaboration_name__c") == move.to_committee_sfid
                and row.get("contact_name__c") == move.contact_id
            )

        if _found(runtime, MEMBER_KEYS, made_by_the_move, with_contact=True) is not None:
            runtime.v1_committees.delete_member(
                move.to_project_sfid, move.to_committee_sfid, move.contact_id
            )
    amend_own_state(runtime, report, lease, lambda state: replace(state, moving_from=None))


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
    if not is_committee:
        drop_pending_move(runtime, report, lease, uid)
    keys = COMMITTEE_KEYS if is_committee else MEMBER_KEYS
    tombstones = [uid_key, (COMMITTEE_SFID if is_committee else MEMBER_SFID) + sfid]
    value = runtime.v1_value(v1_key_of(keys, sfid))
    if deleted_row(value):
        # V1 deleted it (often the V1 delete this V2 delete echoes): no call.
        mappings.tombstone(tombstones)
        skip(report, NOT_IN_V1_REASON, logging.INFO)
    row = live_row(value) or {}
    project_sfid = text_or_none(row.get("project_name__c"))
    if project_sfid is None and report.project_uid is not None:
        project_sfid = mappings.project_sfid(report.project_uid)
    committee_sfid = contact_id = None
    if not is_committee:
        committee_sfid = text_or_none(row.get("collaboration_name__c")) or (
            mappings.committee_sfid(report.committee_uid) if report.committee_uid else None
        )
        contact_id = text_or_none(row.get("contact_name__c")) or lease.state.contact_id
        row_committee = text_or_none(row.get("collaboration_name__c"))
        if row_committee is not None and moved_in_v1(runtime, sfid, row_committee):
            skip(report, MOVED_IN_V1_REASON, logging.INFO)
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
    settle: bool = True,
) -> V1Created:
    """The V1 object of this V2 create: found (a lost answer) or created, never twice.

    A recorded intent without a recorded answer means an earlier POST may have
    created the object: its row is searched in ``v1-objects``, where V1's loader
    writes it back some time later. The create is sent again only once that
    row has not appeared for ``SYNC_V1_CREATE_CONFIRM_WAIT`` (V1 did not create
    it: the worker died before the POST, or the POST failed without reaching
    V1); until then the run looks again every ``CONFIRM_POLL_SECONDS``,
    spending no budget. Otherwise the intent is written (under the lease)
    before the POST is sent. ``settle``: a fresh event waits
    ``CREATE_SETTLE_SECONDS`` first (not for an object mapped already, a move).
    """
    state = lease.state
    if state.intent is not None:
        found = find()
        if found is not None:
            log.info("adopting the V1 object an earlier create made", extra=report.context())
            return found
        confirm_wait = runtime.settings.sync_v1_create_confirm_wait
        if state.intent_at is None:
            # An intent of an older release, without its time: the wait starts now.
            note_intent(runtime, report, lease)
            raise Deferred(CONFIRMING_REASON, min(CONFIRM_POLL_SECONDS, confirm_wait))
        waited = time.time() - state.intent_at
        if waited < confirm_wait:
            raise Deferred(CONFIRMING_REASON, min(CONFIRM_POLL_SECONDS, confirm_wait - waited))
        log.warning(
            "no V1 row of the earlier create came back: V1 did not create it, sending it again",
            extra=report.context() | {"waited_seconds": round(waited, 1)},
        )
    elif settle:
        age = time.time() - event.timestamp.astimezone(UTC).timestamp()
        if age < CREATE_SETTLE_SECONDS:
            raise Deferred(SETTLING_REASON, CREATE_SETTLE_SECONDS - max(age, 0.0))
    note_intent(runtime, report, lease)
    try:
        return send()
    except SyncError as error:
        if never_reached_v1(error):
            forget_intent(runtime, report, lease)
        raise


def never_reached_v1(error: SyncError) -> bool:
    """Whether V1 surely made nothing: it refused the call (4xx), or no call was sent.

    A dropped connection, a timeout or a 5xx leave it unknown (the intent stays).
    """
    if error.kind == V1_AUTH0_KIND:
        return True  # no token, no call
    return error.status is not None and 400 <= error.status < 500


def forget_intent(runtime: Runtime, report: RunReport, lease: KeyLock) -> None:
    """V1 refused the create: the next run sends it again at once (no row to wait for)."""
    try:
        amend_own_state(
            runtime, report, lease, lambda state: replace(state, intent=None, intent_at=None)
        )
    except LeaseLost:
        log.warning("lost the key before forgetting the create intent", extra=report.context())


def note_intent(runtime: Runtime, report: RunReport, lease: KeyLock) -> None:
    """Record in the durable state that a V1 create for this sequence is about to be sent."""
    now = time.time()
    amend_own_state(
        runtime, report, lease, lambda state: replace(state, intent=report.revision, intent_at=now)
    )


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
        sfid = text_or_none(row.get("sfid"))
        # A row another V2 object is mapped to is that object's, not ours.
        if sfid is None or runtime.mappings.get(forward_prefix + sfid) is not None:
            continue
        contact_id = text_or_none(row.get("contact_name__c")) if with_contact else None
        return V1Created(sfid=sfid, contact_id=contact_id, record=row)
    return None


# -- echoes ------------------------------------------------------------------------------


def skip_echo(runtime: Runtime, report: RunReport, v1_key: str, fingerprint: str | None) -> None:
    """``skipped:echo`` when V1 holds what the event carries already (see ``last_agreed``).

    Asked right after the object's own mapping is read, before its parents
    are looked up: an echo (every event of the forward path's writes) costs
    two KV reads besides its event and its state, and no HTTP call.
    """
    if last_agreed(runtime, v1_key) == fingerprint:
        skip(report, ECHO_REASON, logging.DEBUG)


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


def mapped_sfid(runtime: Runtime, report: RunReport, mapping_key: str) -> str | None:
    """The V1 sfid ``mapping_key`` (``committee.uid.{uid}``…) holds, None when unmapped;
    ``skipped:tombstoned`` for an object deleted on purpose. One read for both."""
    value = runtime.mappings.read(mapping_key)
    if value == TOMBSTONE:
        TOMBSTONED_UPSERTS.labels(object_type=report.object_type).inc()
        skip(report, "tombstoned", logging.INFO)
    return value


def parent_sfid(runtime: Runtime, uid: str | None, prefix: str, what: str) -> str:
    """The V1 id of a parent (``MissingMapping`` parks the run while there is none)."""
    if uid is None:
        raise PermanentError(f"the event names no {what}_uid", kind=INVALID_EVENT_KIND)
    sfid = runtime.mappings.get(prefix + uid)
    if sfid is None:
        raise missing_parent(uid, prefix, what)
    return sfid


def missing_parent(uid: str, prefix: str, what: str) -> MissingMapping:
    """The error that parks a run until the parent ``prefix + uid`` has a V1 id."""
    return MissingMapping(
        f"{what} {uid} has no V1 id yet", kind=PARENT_NOT_IN_V1_KIND, parent_key=prefix + uid
    )


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
    return None if row is None else text_or_none(row.get(column))


def text_or_none(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _sametext_or_none(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and " ".join(a.split()) == " ".join(b.split())


def _same_email(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.strip().lower() == b.strip().lower()
