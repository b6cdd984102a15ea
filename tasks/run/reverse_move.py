"""A V2 committee member moved to another committee, in V1 (V2 -> V1, issue 24).

V1 addresses a member by committee and contact id, so a member whose V2
event names another committee than the one its V1 row is in (its mapping
``committee_member.sfid.{sfid}`` = ``{committee_uid}:{member_uid}``) moves in
V1 as a create in the new committee and a delete in the old one. The order
makes a run killed anywhere lose nothing and duplicate nothing
(``tasks.run.reverse_writes.move_member`` runs it):

1. the move (``MemberMove``: the old row and how V1 names it, the committee it
   goes to) is recorded in the key's durable state;
2. the member is created in the new committee through ``create_once`` (its
   intent recorded before the POST; a retry finds the row a lost answer
   created, by e-mail or contact id in that committee);
3. the mappings are rewritten in one round trip (``record_member_move``): the
   member's uid maps to the new row, the new row to ``{new committee}:{uid}``,
   the old row's forward mapping becomes the tombstone. This comes **before**
   the delete, so the old row's delete coming back through ``v1-objects`` is
   ``skipped:already_deleted`` to the forward path and never deletes the V2
   member;
4. the old row is deleted in V1 (404: gone already, fine);
5. the move is cleared from the durable state.

A retry finds the move in the state: after step 3 the member's uid already maps
to a row of the new committee (``moved_already``), so it only deletes the old
row again. A move is not a delete for ``SYNC_DELETE_BUDGET``: the member stays
in V1 (created before the old row goes), so the budget's purpose, a runaway
removing V1 data, does not apply; the move is logged on its own line.

The forward path does the same for a V1 row whose committee changed
(``tasks.kinds.members.MemberKind.moved_from``): there the V2 member is deleted
and created anew, because V2 members live under their committee. Its V2 delete
of the old member comes back here before its mappings are rewritten; the V1
row, already in the new committee, is then not deleted (``moved_in_v1``).
"""

from __future__ import annotations

import logging
from typing import Any

from sync_core.keys import COMMITTEE_KEYS, MEMBER_KEYS
from sync_core.sync_state import MemberMove
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.stores.v1_rows import live_row

log = logging.getLogger(__name__)

MOVED_REASON = "moved"
MOVED_IN_V1_REASON = "moved_in_v1"


def find_move(
    runtime: Runtime,
    report: RunReport,
    member_uid: str,
    sfid: str,
    to: tuple[str, str, str],
    contact_hint: str | None,
) -> MemberMove | None:
    """The move the event asks for, or None when the member stays in its committee.

    ``sfid``: the member's mapped V1 row; ``to``: the event's committee uid, its
    V1 sfid and the V1 project. The old committee is the mapping's; the V1 row
    (when the loader has it) says how V1 names the member. A row V1 already
    has in the new committee needs no V1 call: its mapping is corrected and
    the run goes on as an update.
    """
    to_committee_uid, to_committee_sfid, to_project_sfid = to
    place = runtime.mappings.member_place(sfid)
    if place is None or place[1] != member_uid or place[0] == to_committee_uid:
        return None
    old_committee_uid = place[0]
    row = live_row(runtime.v1_value(f"{MEMBER_KEYS.prefix}.{sfid}")) or {}
    committee_sfid = _text(row.get("collaboration_name__c"))
    if committee_sfid == to_committee_sfid:
        runtime.mappings.record_member(sfid, to_committee_uid, member_uid)
        return None
    if committee_sfid is None:
        # The loader has no live row: the old committee's V1 id, if it has one.
        committee_sfid = runtime.mappings.committee_sfid(old_committee_uid)
    project_sfid = _text(row.get("project_name__c"))
    if project_sfid is None and committee_sfid is not None:
        committee_row = live_row(runtime.v1_value(f"{COMMITTEE_KEYS.prefix}.{committee_sfid}"))
        project_sfid = _text((committee_row or {}).get("project_name__c")) or to_project_sfid
    move = MemberMove(
        sfid=sfid,
        to_committee_uid=to_committee_uid,
        to_committee_sfid=to_committee_sfid,
        to_project_sfid=to_project_sfid,
        committee_sfid=committee_sfid,
        project_sfid=project_sfid,
        contact_id=_text(row.get("contact_name__c")) or contact_hint,
    )
    log.info(
        "the member moves to another committee: created there, then deleted where it was",
        extra=report.context() | move_fields(move),
    )
    return move


def moved_already(runtime: Runtime, member_uid: str, move: MemberMove) -> str | None:
    """The member's V1 row in the committee it moves to, when the mappings say so (step 3 ran)."""
    sfid = runtime.mappings.member_sfid(member_uid)
    if sfid is None or sfid == move.sfid:
        return None
    place = runtime.mappings.member_place(sfid)
    return sfid if place == (move.to_committee_uid, member_uid) else None


def moved_in_v1(runtime: Runtime, sfid: str, row_committee_sfid: str) -> bool:
    """Whether V1 has the member row ``sfid`` in another committee than its mapping says.

    Then the forward path is moving the V2 member the other way round
    (``MemberKind.moved_from``: deleted in its old committee, created in the new
    one) and has not rewritten the mappings yet: the V2 delete of the old member
    is that move's echo, and the V1 row is no longer that member's to delete.
    """
    place = runtime.mappings.member_place(sfid)
    if place is None:
        return False
    mapped = runtime.mappings.committee_sfid(place[0])
    return mapped is not None and mapped != row_committee_sfid


def leave_old_committee(runtime: Runtime, report: RunReport, move: MemberMove) -> bool:
    """Delete the member's old V1 row (step 4); False when V1 had it no more or cannot name it.

    Not counted in the delete budget (see the module doc).
    """
    if move.committee_sfid is None or move.project_sfid is None or move.contact_id is None:
        log.warning(
            "the member's old V1 row cannot be named (no committee, project or contact id): "
            "nothing deleted in V1",
            extra=report.context() | move_fields(move),
        )
        return False
    deleted = runtime.v1_committees.delete_member(
        move.project_sfid, move.committee_sfid, move.contact_id
    )
    log.info(
        "the member left its old committee in V1" if deleted else "the old V1 row was gone",
        extra=report.context() | move_fields(move),
    )
    return deleted


def move_fields(move: MemberMove) -> dict[str, Any]:
    """The log fields of a move (ids only)."""
    return {
        "from_sfid": move.sfid,
        "from_committee_sfid": move.committee_sfid,
        "to_committee_uid": move.to_committee_uid,
        "to_committee_sfid": move.to_committee_sfid,
    }


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
