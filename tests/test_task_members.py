"""Committee members end to end: the real worker, NATS KV, Redis and the sandbox.

The stack is ``tests.test_task_sync``'s (one per module: nats-server, valkey,
the sandbox with its ``list_members`` responder and V1 organization service,
a threads worker; three retries of 0.05-0.2 s).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from click.testing import CliRunner

from sync_core.broker import task_id_for
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.run.sync import run_sync
from tests import test_task_sync
from tests.test_task_sync import PLATFORM_ID, Stack, new_committee, new_project
from tests.v1_examples import MEMBER_JSON, record
from v1_sync_helper.cli import main

# The module-scoped stack of the task tests, one instance for this module.
stack = test_task_sync.stack
st = test_task_sync.st

ORG_SFID = "0014100000Te2ovAAB"
ORG_PATH = "/organization-service/v1/orgs/"
MEMBER_PREFIX = "platform-community__c."


def synced_committee(st: Stack) -> tuple[str, str]:
    """A project and a committee synced to V2: the committee's sfid and uid."""
    project_key, project = new_project()
    assert st.sync(project_key, st.put(project_key, project)) == "created"
    key, committee = new_committee(project["sfid"], mailing_list__c="TSC " + uuid.uuid4().hex)
    assert st.sync(key, st.put(key, committee)) == "created"
    uid = st.mapping(f"committee.sfid.{committee['sfid']}")
    assert uid is not None
    return committee["sfid"], uid


def new_member(committee_sfid: str, **changes: Any) -> tuple[str, dict[str, Any]]:
    """The reference's member record with a fresh sfid and email, in ``committee_sfid``."""
    sfid = str(uuid.uuid4())
    member = record(
        MEMBER_JSON,
        sfid=sfid,
        collaboration_name__c=committee_sfid,
        contactemail__c=f"m{sfid[:8]}@example.com",
        contact_name__c=PLATFORM_ID,
    )
    member.update(changes)
    return MEMBER_PREFIX + sfid, member


def member_place(st: Stack, sfid: str) -> tuple[str, str]:
    value = st.mapping(f"committee_member.sfid.{sfid}")
    assert value is not None, f"no mapping for member {sfid}"
    committee_uid, _, member_uid = value.partition(":")
    return committee_uid, member_uid


def member_calls(st: Stack, committee_uid: str) -> list[str]:
    """``METHOD`` of every member call of one committee, in order."""
    prefix = f"/committees/{committee_uid}/members"
    return [r.method for r in st.sandbox.requests if r.path.startswith(prefix)]


def test_member_create_update_unchanged_with_lookups_identity_and_call_counts(st: Stack) -> None:
    st.sandbox.add_organization(ORG_SFID, {"ID": ORG_SFID, "Name": "Example Corp", "Domains": []})
    committee_sfid, committee_uid = synced_committee(st)
    key, member = new_member(committee_sfid, role__c="Board Chair", appointed_by__c="Magic")
    st.sandbox.reset_requests()
    assert st.sync(key, st.put(key, member)) == "created"
    assert member_calls(st, committee_uid) == ["POST"]  # one V2 call per create
    assert st.sandbox.count("GET", ORG_PATH + ORG_SFID) == 1

    stored_committee, member_uid = member_place(st, member["sfid"])
    assert stored_committee == committee_uid
    assert st.mapping(f"committee_member.uid.{member_uid}") == member["sfid"]
    stored = st.sandbox.members[member_uid]
    assert stored["committee_uid"] == committee_uid
    assert stored["email"] == member["contactemail__c"]
    assert (stored["username"], stored["first_name"], stored["last_name"]) == (
        "jdoe",
        "Jane",
        "Doe",
    )
    assert stored["organization"] == {"id": ORG_SFID, "name": "Example Corp"}
    assert stored["role"] == {"name": "None", "start_date": "2024-01-01"}  # unknown -> None
    assert stored["appointed_by"] == "None"
    assert stored["voting"] == {"status": "Voting Rep"}
    assert (stored["status"], stored["job_title"]) == ("Active", "CTO")
    # Identity: the V1 user behind lastmodifiedbyid, in the JWT and the header.
    (post,) = st.v2_requests("POST", f"/committees/{committee_uid}/members")
    assert post.claims["aud"] == "lfx-v2-committee-service"
    assert (post.claims["principal"], post.claims["sub"]) == ("jdoe", "jdoe")
    assert post.headers["X-On-Behalf-Of"] == "jdoe"
    assert post.headers["X-Skip-Notification"] == "true"
    assert stored["_skip_notification"] is True
    assert stored["_last_write"]["on_behalf_of"] == "jdoe"
    [outcome] = [r for r in st.outcomes.of(key) if r.outcome == "created"]
    assert outcome.__dict__["object_type"] == "committee_member"
    assert outcome.__dict__["committee_uid"] == committee_uid
    assert outcome.__dict__["member_uid"] == member_uid

    st.sandbox.reset_requests()
    changed = {**member, "title": "CEO", "voting_status__c": "Observer"}
    assert st.sync(key, st.put(key, changed)) == "updated"
    assert member_calls(st, committee_uid) == ["GET", "PUT"]  # two V2 calls per update
    (put,) = st.v2_requests("PUT", f"/committees/{committee_uid}/members/{member_uid}")
    assert put.headers["If-Match"]
    stored = st.sandbox.members[member_uid]
    assert (stored["job_title"], stored["voting"]) == ("CEO", {"status": "Observer"})
    assert stored["organization"]["name"] == "Example Corp"

    st.sandbox.reset_requests()
    assert st.sync(key, st.put(key, changed)) == "unchanged"
    assert member_calls(st, committee_uid) == ["GET"]
    # The update and the unchanged run found the organization in the cache.
    assert st.sandbox.count("GET", ORG_PATH + ORG_SFID) == 0


def test_notifications_are_sent_when_enabled(st: Stack) -> None:
    committee_sfid, committee_uid = synced_committee(st)
    st.runtime.settings = st.runtime.settings.model_copy(update={"sync_member_notifications": True})
    key, member = new_member(committee_sfid)
    assert st.sync(key, st.put(key, member)) == "created"
    (post,) = st.v2_requests("POST", f"/committees/{committee_uid}/members")
    assert "X-Skip-Notification" not in post.headers
    assert st.sandbox.members[member_place(st, member["sfid"])[1]]["_skip_notification"] is False


def test_failed_user_and_organization_lookups_still_sync(st: Stack) -> None:
    committee_sfid, _ = synced_committee(st)
    key, member = new_member(
        committee_sfid, contact_name__c="003100000NoSuchAAB", account__c="001410000NoSuchAAB"
    )
    assert st.sync(key, st.put(key, member)) == "created"
    stored = st.sandbox.members[member_place(st, member["sfid"])[1]]
    assert stored["organization"] == {"id": "001410000NoSuchAAB"}
    assert not {"username", "first_name", "last_name"} & stored.keys()


def test_409_after_a_create_whose_mapping_was_lost_adopts_the_member(st: Stack) -> None:
    """The create succeeded and the worker died before the mapping write: the retry adopts."""
    committee_sfid, committee_uid = synced_committee(st)
    key, member = new_member(committee_sfid)
    # What the lost run left behind: the member in V2 (its email in another case), no mapping.
    existing = st.sandbox.add_member(
        committee_uid, member["contactemail__c"].upper(), organization={"id": ORG_SFID}
    )
    assert st.mapping(f"committee_member.sfid.{member['sfid']}") is None
    assert st.sync(key, st.put(key, member)) == "updated"
    assert member_place(st, member["sfid"]) == (committee_uid, existing)
    assert st.mapping(f"committee_member.uid.{existing}") == member["sfid"]
    in_committee = [m for m in st.sandbox.members.values() if m["committee_uid"] == committee_uid]
    assert [m["uid"] for m in in_committee] == [existing]  # no duplicate
    assert in_committee[0]["job_title"] == "CTO"  # then updated like any other
    assert member_calls(st, committee_uid) == ["POST", "GET", "PUT"]


def test_a_second_v1_record_with_the_same_email_is_dead_lettered(st: Stack) -> None:
    committee_sfid, _ = synced_committee(st)
    key, member = new_member(committee_sfid)
    assert st.sync(key, st.put(key, member)) == "created"
    twin_key, twin = new_member(committee_sfid, contactemail__c=member["contactemail__c"])
    revision = st.put(twin_key, twin)
    assert st.sync(twin_key, revision) == "dead_lettered"
    letter = st.runtime.dead_letters.get(task_id_for(twin_key, revision))
    assert letter is not None
    assert (letter.error_kind, letter.attempts) == ("member_email_taken", 1)


def test_a_member_whose_committee_changes_moves(st: Stack) -> None:
    old_sfid, old_uid = synced_committee(st)
    new_sfid, new_uid = synced_committee(st)
    key, member = new_member(old_sfid)
    assert st.sync(key, st.put(key, member)) == "created"
    _, old_member = member_place(st, member["sfid"])
    st.sandbox.reset_requests()
    moved = {**member, "collaboration_name__c": new_sfid}
    assert st.sync(key, st.put(key, moved)) == "created"
    committee_uid, new_member_uid = member_place(st, member["sfid"])
    assert committee_uid == new_uid
    members = st.sandbox.members
    assert old_member not in members
    assert members[new_member_uid]["committee_uid"] == new_uid
    assert st.mapping(f"committee_member.uid.{new_member_uid}") == member["sfid"]
    assert st.mapping(f"committee_member.uid.{old_member}") == "!del"
    (delete,) = st.v2_requests("DELETE", f"/committees/{old_uid}/members/{old_member}")
    assert delete.headers["If-Match"]
    assert (member_calls(st, old_uid), member_calls(st, new_uid)) == (["GET", "DELETE"], ["POST"])


def test_member_of_an_unsynced_committee_parks_then_is_released_by_the_committee(
    st: Stack,
) -> None:
    project_key, project = new_project()
    assert st.sync(project_key, st.put(project_key, project)) == "created"
    committee_key, committee = new_committee(project["sfid"], mailing_list__c="Parked TSC")
    key, member = new_member(committee["sfid"])
    revision = st.put(key, member)
    assert st.sync(key, revision) == "parked"
    pending = st.state(key).pending
    assert pending is not None
    assert pending.parent_key == f"committee.sfid.{committee['sfid']}"
    assert st.sandbox.count("POST", "/committees/") == 0

    # Nobody re-publishes the member: the committee's run releases it.
    assert st.sync(committee_key, st.put(committee_key, committee)) == "created"
    assert st.wait_final(key, revision, count=2) == "created"
    assert [r.outcome for r in st.outcomes.of(key)] == ["parked", "created"]


def test_member_still_parked_after_the_parent_wait_is_dead_lettered(st: Stack) -> None:
    st.runtime.settings = st.runtime.settings.model_copy(update={"sync_parent_wait": 0.3})
    key, member = new_member(str(uuid.uuid4()))
    revision = st.put(key, member)
    assert st.sync(key, revision) == "parked"
    time.sleep(0.4)  # the parent wait itself is what is tested
    st.publish(key, revision)  # the reconciler's re-drive once the wait is over
    assert st.wait_final(key, revision, count=2) == "dead_lettered"
    letter = st.runtime.dead_letters.get(task_id_for(key, revision))
    assert letter is not None
    assert (letter.error_kind, letter.attempts) == ("missing_committee", 1)
    assert st.sandbox.count("POST", "/committees/") == 0


def test_blank_or_invalid_email_is_a_dead_letter_at_once(st: Stack) -> None:
    committee_sfid, _ = synced_committee(st)
    for email in ("  ", None, "not-an-email"):
        key, member = new_member(committee_sfid, contactemail__c=email)
        revision = st.put(key, member)
        assert st.sync(key, revision) == "dead_lettered"
        letter = st.runtime.dead_letters.get(task_id_for(key, revision))
        assert letter is not None
        assert (letter.error_kind, letter.attempts) == ("invalid_record", 1)


def test_a_deleted_member_is_deleted_in_v2(st: Stack) -> None:
    committee_sfid, _ = synced_committee(st)
    key, member = new_member(committee_sfid)
    assert st.sync(key, st.put(key, member)) == "created"
    _, member_uid = member_place(st, member["sfid"])
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    assert member_uid not in st.sandbox.members
    assert st.mapping(f"committee_member.sfid.{member['sfid']}") == "!del"
    assert st.mapping(f"committee_member.uid.{member_uid}") == "!del"


def test_requeue_undelete_re_creates_a_member_deleted_in_v1(st: Stack) -> None:
    """Through the CLI: the member's tombstone is found and cleared, the worker re-creates it."""
    committee_sfid, committee_uid = synced_committee(st)
    key, member = new_member(committee_sfid)
    assert st.sync(key, st.put(key, member)) == "created"
    _, old_uid = member_place(st, member["sfid"])
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    again = st.put(key, member)
    assert st.sync(key, again) == "skipped"
    assert st.outcomes.of(key)[-1].__dict__["reason"] == "tombstoned"

    settings = st.runtime.settings
    env = {"NATS_URL": settings.nats_url, "REDIS_URL": settings.redis_url}
    result = CliRunner().invoke(main, ["requeue", "--undelete", "--yes", key], env=env)

    assert result.exit_code == 0, result.output
    assert f"cleared the tombstone of {key}" in result.stdout
    assert st.wait_final(key, again, count=2) == "created"
    place = member_place(st, member["sfid"])
    assert place[0] == committee_uid
    assert place[1] != old_uid
    assert place[1] in st.sandbox.members
    assert st.mapping(f"committee_member.uid.{old_uid}") == "!del"


def test_fifty_members_of_one_organization_make_one_call_across_two_workers(st: Stack) -> None:
    """Half the members through the Celery worker, half through a second runtime
    (its own NATS connection and caches, as another worker process has)."""
    org_sfid = "0014100000" + uuid.uuid4().hex[:8].upper()
    st.sandbox.add_organization(org_sfid, {"ID": org_sfid, "Name": "Big Co", "Domains": []})
    committee_sfid, committee_uid = synced_committee(st)
    # The first lookup is slow, so the others arrive while it is in flight.
    st.sandbox.inject_fault("GET", ORG_PATH + org_sfid, status=None, delay=0.3)
    keys = []
    for _ in range(50):
        key, member = new_member(committee_sfid, account__c=org_sfid)
        keys.append((key, st.put(key, member)))
    other = Runtime.from_settings(st.runtime.settings)
    results: list[str] = []
    try:

        def direct(key: str, revision: int) -> None:
            # As a worker would: run again while the run asks for a retry.
            for attempt in range(4):
                report = RunReport(key=key, revision=revision, operation="PUT", attempt=attempt)
                outcome, retry = run_sync(other, report)
                if retry is None:
                    break
            results.append(outcome.value if retry is None else f"retry:{report.error_kind}")

        threads = [threading.Thread(target=direct, args=pair) for pair in keys[25:]]
        for key, revision in keys[:25]:
            st.publish(key, revision)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        worker_results = [st.wait_final(key, revision) for key, revision in keys[:25]]
    finally:
        other.close()
    assert sorted(results + worker_results) == ["created"] * 50
    assert st.sandbox.count("GET", ORG_PATH + org_sfid) == 1
    names = {
        m["organization"].get("name")
        for m in st.sandbox.members.values()
        if m["committee_uid"] == committee_uid
    }
    assert names == {"Big Co"}
