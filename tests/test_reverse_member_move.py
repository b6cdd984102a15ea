"""A V2 committee member moved to another committee reaches V1 as one move (issue 24).

The stack of ``tests/test_reverse_sync.py`` (real bridge, Celery worker,
nats-server and valkey; the sandbox's V2 fakes and V1 API fake). V2 never
changes a member's committee through its API (``committee_uid`` is read only),
so the move's indexer event is published here as the indexer would publish it:
the member's V2 view with another ``committee_uid``. V1 must end with the member
in the new committee once (one POST there, one DELETE in the old one), the
forward path must not delete the V2 member when the old row's delete comes back,
and a run failing between the two must converge without a duplicate.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

import tests.test_reverse_sync as reverse_sync
from operations.dlq import requeue_letters
from operations.enqueue import DEAD_LETTER_TASK_KWARGS, TaskQueue
from sandbox.indexer_events import indexer_event
from sandbox.store import Writer
from sync_core.sync_state import MemberMove, SyncState
from tasks.run.deletes import DeleteBudget
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.v1_rows import find_rows
from tests.test_reverse_sync import (
    AUTH0_CLIENT,
    OBJECTS,
    PERSON,
    PLATFORM_ID,
    STATE,
    V1_COMMITTEES,
    Stack,
    _final_of,
    a_project,
    v2_committee,
)
from tests.test_task_sync import FINAL
from tests.v1_examples import COMMITTEE_JSON, MEMBER_JSON, record

# The stack (one per module) and its per-test view, those of test_reverse_sync.py.
stack = reverse_sync.stack
st = reverse_sync.st

MEMBER_PREFIX = "platform-community__c."
TOMBSTONE = "!del"
WRITER = Writer(
    principal="mary", sub="mary", email="mary@example.org", on_behalf_of=None, method="PUT"
)


@dataclass
class Moving:
    """A V2 member of committee ``a`` with its V1 row, and a committee ``b`` to move it to."""

    project_uid: str
    project_sfid: str
    a_uid: str
    a_sfid: str
    b_uid: str
    b_sfid: str
    uid: str
    sfid: str
    contact_id: str
    email: str
    view: dict[str, Any]

    @property
    def key(self) -> str:
        return f"v2.committee_member.{self.uid}"


def committee_in_v1(st: Stack, project_uid: str, name: str) -> tuple[str, str]:
    """A V2 committee the reverse path created in V1: its uid and V1 sfid."""
    uid = v2_committee(st, project_uid, name)
    assert st.final(f"v2.committee.{uid}", "created").outcome == "created"
    sfid = st.mapping(f"committee.uid.{uid}")
    assert sfid is not None
    return uid, sfid


def a_member_to_move(st: Stack) -> Moving:
    """Committees A and B in V1, a V2 member of A in V1; the recorded calls then cleared."""
    project_uid, project_sfid = a_project(st)
    a_uid, a_sfid = committee_in_v1(st, project_uid, "From " + uuid.uuid4().hex[:8])
    b_uid, b_sfid = committee_in_v1(st, project_uid, "To " + uuid.uuid4().hex[:8])
    members = st.committees.collection_under(a_uid, "members")
    email = f"mover{uuid.uuid4().hex[:8]}@example.org"
    body = {"email": email, "first_name": "Mo", "last_name": "Ver", "role": {"name": "Chair"}}
    uid = members.create(body, PERSON)["uid"]
    assert st.final(f"v2.committee_member.{uid}", "created").outcome == "created"
    sfid = st.mapping(f"committee_member.uid.{uid}")
    assert sfid is not None
    row = st.v1_row(MEMBER_PREFIX + sfid)
    assert row is not None
    assert row["collaboration_name__c"] == a_sfid
    view = members.get(uid, PERSON).record
    st.sandbox.reset_requests()
    return Moving(
        project_uid,
        project_sfid,
        a_uid,
        a_sfid,
        b_uid,
        b_sfid,
        uid,
        sfid,
        str(row["contact_name__c"]),
        email,
        view,
    )


def publish_member_update(st: Stack, data: dict[str, Any]) -> None:
    """The indexer's ``lfx.committee_member.updated`` for ``data`` (a person's change)."""
    publish_member_event(st, "updated", str(data["uid"]), str(data["committee_uid"]), data)


def publish_member_event(
    st: Stack, action: str, uid: str, committee_uid: str, data: dict[str, Any]
) -> None:
    """The indexer's ``lfx.committee_member.{action}`` of member ``uid``, by a person."""
    event = indexer_event(
        "committee_member", action, uid, data, WRITER, [f"committee:{committee_uid}"]
    )

    async def publish() -> None:
        nc = st.nats.live()
        await nc.publish(f"lfx.committee_member.{action}", json.dumps(event).encode())
        await nc.flush()

    st.nats.run(publish())


def move(st: Stack, moving: Moving) -> dict[str, Any]:
    """Publish the move of the member to B; its V2 view after the move."""
    moved = {**moving.view, "committee_uid": moving.b_uid}
    publish_member_update(st, moved)
    return moved


def updates(st: Stack, key: str, count: int) -> list[Any]:
    """The final outcome lines of the first ``count`` update events of ``key``."""
    runs = st.wait_for(
        key, lambda runs: len(_final_of(runs, "updated")) >= count, f"{count} update outcomes"
    )
    return _final_of(runs, "updated")


def member_rows(st: Stack, committee_sfid: str, email: str) -> list[dict[str, Any]]:
    """The live V1 rows of ``email`` in the committee (the run's own listing of them)."""

    def wanted(row: dict[str, Any]) -> bool:
        return row.get("collaboration_name__c") == committee_sfid and (
            row.get("contactemail__c") == email
        )

    return [row for _, row in find_rows(st.nats, OBJECTS, MEMBER_PREFIX, wanted)]


def v1_member_calls(st: Stack) -> list[tuple[str, str, int]]:
    return [(c.method, c.path, c.status) for c in st.v1_calls() if "/members" in c.path]


def assert_moved(st: Stack, moving: Moving) -> str:
    """V1 has the member once in B and no more in A; the mappings say so. The new sfid."""
    new_sfid = st.mapping(f"committee_member.uid.{moving.uid}")
    assert new_sfid is not None
    assert new_sfid not in (moving.sfid, TOMBSTONE)
    assert st.mapping(f"committee_member.sfid.{new_sfid}") == f"{moving.b_uid}:{moving.uid}"
    assert st.mapping(f"committee_member.sfid.{moving.sfid}") == TOMBSTONE
    assert [row["sfid"] for row in member_rows(st, moving.b_sfid, moving.email)] == [new_sfid]
    assert member_rows(st, moving.a_sfid, moving.email) == []
    old = st.v1_row(MEMBER_PREFIX + moving.sfid)
    assert old is not None
    assert old["isdeleted"] is True
    new = st.v1_row(MEMBER_PREFIX + new_sfid)
    assert new is not None
    assert new["contact_name__c"] == moving.contact_id  # the same V1 person
    state = st.state(moving.key)
    assert state.moving_from is None
    assert state.intent is None
    return new_sfid


def old_path(moving: Moving) -> str:
    return (
        f"{V1_COMMITTEES}{moving.project_sfid}/committees/{moving.a_sfid}"
        f"/members/{moving.contact_id}"
    )


def new_path(moving: Moving) -> str:
    return f"{V1_COMMITTEES}{moving.project_sfid}/committees/{moving.b_sfid}/members"


# --- the move ---------------------------------------------------------------------------


def test_a_move_reaches_v1_once_and_its_echoes_write_nothing(st: Stack) -> None:
    moving = a_member_to_move(st)
    budget = DeleteBudget(st.redis, st.runtime.settings.sync_delete_budget)
    used = budget.used()
    moved = move(st, moving)

    (line,) = updates(st, moving.key, 1)
    assert (line.outcome, line.__dict__["reason"]) == ("updated", "moved"), line.__dict__
    # One create in the new committee, then one delete in the old one.
    assert v1_member_calls(st) == [
        ("POST", new_path(moving), 200),
        ("DELETE", old_path(moving), 204),
    ]
    new_sfid = assert_moved(st, moving)

    # The forward path: the old row's delete is no V2 delete, the new row is an echo.
    writes = len(st.v2_writes())
    old_key = MEMBER_PREFIX + moving.sfid
    runs = st.wait_for(
        old_key,
        lambda runs: any(r.__dict__.get("reason") == "already_deleted" for r in runs),
        "the forward run of the old row's delete",
    )
    assert all(r.outcome != "deleted" for r in runs)
    assert budget.used() == used  # a move is not a delete for the budget (nor its echo)
    new_key = MEMBER_PREFIX + new_sfid
    (echo,) = st.wait_for(
        new_key, lambda runs: any(r.outcome in FINAL for r in runs), "forward outcome"
    )
    assert (echo.outcome, echo.__dict__["reason"]) == ("skipped", "echo")
    assert len(st.v2_writes()) == writes
    assert not [w for w in st.v2_writes() if w.method == "DELETE"]
    members = st.committees.collection_under(moving.a_uid, "members")
    assert members.get(moving.uid, PERSON).record["email"] == moving.email  # V2 member kept

    # The same content once more (an indexer re-publish): an echo, no V1 call.
    calls = len(st.v1_calls())
    publish_member_update(st, moved)
    st.echo_skipped(moving.key, after=line.__dict__["revision"])
    assert len(st.v1_calls()) == calls


def test_an_edit_after_the_move_patches_the_member_in_its_new_committee(st: Stack) -> None:
    moving = a_member_to_move(st)
    moved = move(st, moving)
    assert updates(st, moving.key, 1)[0].outcome == "updated"
    publish_member_update(st, {**moved, "job_title": "Moved on"})
    line = updates(st, moving.key, 2)[1]
    assert line.outcome == "updated", line.__dict__
    patches = st.v1_calls("PATCH")
    assert [c.path for c in patches] == [
        f"{V1_COMMITTEES}{moving.project_sfid}/committees/{moving.b_sfid}"
        f"/members/{moving.contact_id}"
    ]


# --- killed or failing in between -------------------------------------------------------


def test_a_move_whose_old_delete_fails_once_converges_without_a_duplicate(st: Stack) -> None:
    moving = a_member_to_move(st)
    # The run ends after the create, before the old row is gone (as a kill would).
    st.sandbox.inject_fault("DELETE", old_path(moving), status=503)
    move(st, moving)
    (line,) = updates(st, moving.key, 1)
    assert (line.outcome, line.__dict__["attempt"]) == ("updated", 1), line.__dict__
    assert v1_member_calls(st) == [
        ("POST", new_path(moving), 200),
        ("DELETE", old_path(moving), 503),
        ("DELETE", old_path(moving), 204),
    ]
    assert_moved(st, moving)


def test_a_move_whose_create_answer_is_lost_adopts_the_new_row(st: Stack) -> None:
    moving = a_member_to_move(st)
    # V1 creates the row in B, then the connection drops: the retry must find it.
    st.sandbox.inject_fault("POST", new_path(moving), status=None, drop="after")
    move(st, moving)
    (line,) = updates(st, moving.key, 1)
    assert line.outcome == "updated", line.__dict__
    posts = [c for c in st.v1_calls("POST") if c.path == new_path(moving)]
    assert len(posts) <= 1  # adopted, never sent again
    assert [(c.method, c.status) for c in st.v1_calls("DELETE")] == [("DELETE", 204)]
    assert_moved(st, moving)


def test_a_member_deleted_while_its_move_is_unfinished_leaves_no_v1_row(st: Stack) -> None:
    moving = a_member_to_move(st)
    # The old row's delete keeps failing: the move is a dead letter after the create.
    st.sandbox.inject_fault("DELETE", old_path(moving), status=503, times=20)
    move(st, moving)
    (line,) = updates(st, moving.key, 1)
    assert line.outcome == "dead_lettered", line.__dict__
    assert st.state(moving.key).moving_from is not None
    assert len(member_rows(st, moving.b_sfid, moving.email)) == 1
    st.sandbox.clear_faults()

    members = st.committees.collection_under(moving.a_uid, "members")
    members.delete(moving.uid, members.get(moving.uid, PERSON).etag, PERSON)
    assert st.final(moving.key, "deleted").outcome == "deleted"
    assert member_rows(st, moving.b_sfid, moving.email) == []
    assert member_rows(st, moving.a_sfid, moving.email) == []
    assert st.state(moving.key).moving_from is None


def test_the_v2_delete_of_a_forward_move_leaves_the_moved_v1_row(st: Stack) -> None:
    """V1 moved the row to B; the forward path deleted the V2 member in A and has not
    rewritten the mappings yet when that delete's event arrives: V1 keeps the row."""
    moving = a_member_to_move(st)
    v1_key = MEMBER_PREFIX + moving.sfid
    row = st.v1_row(v1_key)
    assert row is not None
    # The row as V1 has it after the move (written as our own, so the forward path
    # leaves it alone here: the window between its V2 delete and its mappings).
    moved_row = {
        **row,
        "collaboration_name__c": moving.b_sfid,
        "lastmodifiedbyid": f"{AUTH0_CLIENT}@clients",
    }
    st.nats.kv_put(OBJECTS, v1_key, json.dumps(moved_row).encode())
    publish_member_event(st, "deleted", moving.uid, moving.a_uid, {})
    line = st.final(moving.key, "deleted")
    assert (line.outcome, line.__dict__.get("reason")) == ("skipped", "moved_in_v1"), line.__dict__
    assert st.v1_calls() == []
    assert [r["sfid"] for r in member_rows(st, moving.b_sfid, moving.email)] == [moving.sfid]


def test_a_member_moved_in_v1_comes_back_from_v2_without_a_v1_write(st: Stack) -> None:
    """The forward path moves a V1 member (V2: deleted in A, created in B); the V2
    events of that move make no V1 call and V1 keeps the moved row."""
    _, project_sfid = a_project(st)
    committee_sfids = []
    for name in ("Old", "New"):
        committee_sfid = str(uuid.uuid4())
        committee_key = f"platform-collaboration__c.{committee_sfid}"
        committee = record(
            COMMITTEE_JSON,
            sfid=committee_sfid,
            project_name__c=project_sfid,
            mailing_list__c=f"{name} {committee_sfid[:8]}",
            lastmodifiedbyid=PLATFORM_ID,
        )
        st.nats.kv_put(OBJECTS, committee_key, json.dumps(committee).encode())
        st.wait_for(committee_key, lambda runs: any(r.outcome == "created" for r in runs), name)
        committee_sfids.append(committee_sfid)
    a_sfid, b_sfid = committee_sfids
    sfid = str(uuid.uuid4())
    v1_key = MEMBER_PREFIX + sfid
    email = f"v1mover{sfid[:8]}@example.com"
    member = record(
        MEMBER_JSON,
        sfid=sfid,
        collaboration_name__c=a_sfid,
        project_name__c=project_sfid,
        contactemail__c=email,
        contact_name__c=PLATFORM_ID,
    )
    st.nats.kv_put(OBJECTS, v1_key, json.dumps(member).encode())
    st.wait_for(v1_key, lambda runs: any(r.outcome == "created" for r in runs), "forward create")
    place = st.mapping(f"committee_member.sfid.{sfid}")
    assert place is not None
    old_uid = place.partition(":")[2]
    st.echo_skipped(f"v2.committee_member.{old_uid}")

    member["collaboration_name__c"] = b_sfid
    st.nats.kv_put(OBJECTS, v1_key, json.dumps(member).encode())
    line = st.final(f"v2.committee_member.{old_uid}", "deleted")
    assert line.outcome == "skipped", line.__dict__
    assert line.__dict__["reason"] in ("already_deleted", "moved_in_v1"), line.__dict__
    b_uid = st.mapping(f"committee.sfid.{b_sfid}")
    place = st.mapping(f"committee_member.sfid.{sfid}")
    assert place is not None
    assert place.partition(":")[0] == b_uid
    new_uid = place.partition(":")[2]
    st.echo_skipped(f"v2.committee_member.{new_uid}")
    assert st.v1_calls() == []
    assert [r["sfid"] for r in member_rows(st, b_sfid, email)] == [sfid]


# --- parents ----------------------------------------------------------------------------


def test_a_move_to_a_committee_v1_lacks_waits_for_it(st: Stack) -> None:
    moving = a_member_to_move(st)
    project_uid = moving.project_uid
    # The new committee's V1 create is refused once: it has no V1 id until re-queued.
    st.sandbox.inject_fault(
        "POST", f"{V1_COMMITTEES}{moving.project_sfid}/committees", status=400, times=1
    )
    c_uid = v2_committee(st, project_uid, "Later " + uuid.uuid4().hex[:8])
    c_key = f"v2.committee.{c_uid}"
    assert st.final(c_key, "created").outcome == "dead_lettered"
    publish_member_update(st, {**moving.view, "committee_uid": c_uid})
    st.wait_for(moving.key, lambda runs: any(r.outcome == "parked" for r in runs), "parked")
    assert v1_member_calls(st) == []

    # The committee reaches V1 (an operator's re-queue): the parked move goes on at once.
    store = DeadLetterStore(st.nats, STATE)
    settings = st.runtime.settings
    with TaskQueue(settings.redis_target, settings.celery_queue, DEAD_LETTER_TASK_KWARGS) as queue:
        requeue_letters(queue, store, [d for d in store.list() if d.key == c_key])
    (line,) = updates(st, moving.key, 1)
    assert (line.outcome, line.__dict__["reason"]) == ("updated", "moved"), line.__dict__
    c_sfid = st.mapping(f"committee.uid.{c_uid}")
    assert c_sfid is not None
    assert [row["contact_name__c"] for row in member_rows(st, c_sfid, moving.email)] == [
        moving.contact_id
    ]
    assert member_rows(st, moving.a_sfid, moving.email) == []


def test_a_move_from_a_committee_v1_cannot_name_creates_and_deletes_nothing(
    st: Stack,
) -> None:
    """The old committee has no V1 id and the loader has no row of the member: the
    member is created in the new committee, and nothing else is called."""
    project_uid, project_sfid = a_project(st)
    b_uid, b_sfid = committee_in_v1(st, project_uid, "Only " + uuid.uuid4().hex[:8])
    uid, old_sfid, gone_committee = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    # Mapped to a V1 row the loader never wrote, in a committee without a V1 id.
    mapped = {
        f"committee_member.uid.{uid}": old_sfid,
        f"committee_member.sfid.{old_sfid}": f"{gone_committee}:{uid}",
    }
    for mapping_key, value in mapped.items():
        st.nats.kv_put(st.runtime.mappings.bucket, mapping_key, value.encode())
    st.sandbox.reset_requests()
    email = f"orphan{uuid.uuid4().hex[:8]}@example.org"
    data = {"uid": uid, "committee_uid": b_uid, "project_uid": project_uid, "email": email}
    publish_member_update(st, data)
    key = f"v2.committee_member.{uid}"
    (line,) = updates(st, key, 1)
    assert (line.outcome, line.__dict__["reason"]) == ("updated", "moved"), line.__dict__
    assert [(m, p) for m, p, _ in v1_member_calls(st)] == [
        ("POST", f"{V1_COMMITTEES}{project_sfid}/committees/{b_sfid}/members")
    ]
    new_sfid = st.mapping(f"committee_member.uid.{uid}")
    assert new_sfid not in (None, old_sfid)
    assert st.mapping(f"committee_member.sfid.{new_sfid}") == f"{b_uid}:{uid}"
    assert st.mapping(f"committee_member.sfid.{old_sfid}") == TOMBSTONE


# --- the durable state -------------------------------------------------------------------


@pytest.mark.parametrize(
    "moving_from",
    [
        MemberMove("s1", "b-uid", "b-sfid", "p-sfid"),
        MemberMove("s1", "b-uid", "b-sfid", "p-sfid", "a-sfid", "p0-sfid", "0032M00002XyZabQAB"),
    ],
    ids=["old_unnamed", "old_named"],
)
def test_a_recorded_move_survives_the_stored_form(moving_from: MemberMove) -> None:
    state = SyncState(key="v2.committee_member.x", revision=3, moving_from=moving_from)
    assert SyncState.from_bytes(state.to_bytes(), state.key) == state
    assert SyncState.from_bytes(SyncState(key="k").to_bytes(), "k").moving_from is None
