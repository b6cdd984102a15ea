"""V1 deletes end to end: a real worker, real NATS KV and Redis, the sandbox's V2 fakes.

Reuses the stack of ``tests.test_task_sync`` (one per module). Projects only
delete when crowdfunded (the project service's rule), so the tests mark the
slugs they want deletable.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from operations.dlq import requeue_letters
from operations.enqueue import DEAD_LETTER_TASK_KWARGS, TaskQueue
from operations.undelete import clear_tombstones
from sync_core.broker import task_id_for
from tasks.run.deletes import BUDGET_KEY, deleting_user
from tests import test_task_sync
from tests.test_task_sync import (
    MACHINE_USER,
    MAPPINGS,
    PLATFORM_ID,
    Stack,
    finished,
    new_committee,
    new_project,
)

# The stack of the sync tests (module-scoped: this module gets one of its own).
stack = test_task_sync.stack
st = test_task_sync.st

SERVICE_PRINCIPAL = "v1_sync_helper@clients"
DELETED_AT = "2025-12-01T10:00:00.400000+00:00"


def synced_project(st: Stack, crowdfunded: bool = True, **changes: Any) -> tuple[str, dict, str]:
    """A project created in V2 (crowdfunded: deletable); its key, record and uid."""
    key, project = new_project(**changes)
    if crowdfunded:
        st.sandbox.add_crowdfunding_slug(project["slug__c"].lower())
    assert st.sync(key, st.put(key, project)) == "created"
    uid = st.mapping(f"project.sfid.{project['sfid']}")
    assert uid is not None
    return key, project, uid


def synced_committee(st: Stack) -> tuple[str, dict, str]:
    _, project, _ = synced_project(st)
    key, committee = new_committee(project["sfid"])
    assert st.sync(key, st.put(key, committee)) == "created"
    uid = st.mapping(f"committee.sfid.{committee['sfid']}")
    assert uid is not None
    return key, committee, uid


def soft_deleted(record: dict[str, Any], shape: str) -> dict[str, Any]:
    if shape == "sdc_deleted_at":
        return {**record, "_sdc_deleted_at": DELETED_AT}
    return {**record, "isdeleted": True}


def delete_as(st: Stack, key: str, shape: str, record: dict[str, Any]) -> str:
    """Delete ``key`` in one of the four shapes and sync it; the outcome."""
    if shape in ("DEL", "PURGE"):
        if shape == "DEL":
            revision = st.delete(key)
        else:
            st.nats.run(st.nats.kv("v1-objects").purge(key))
            info = st.nats.run(st.nats.js.stream_info("KV_v1-objects"))
            revision = int(info.state.last_seq)
        return st.sync(key, revision, shape)
    return st.sync(key, st.put(key, soft_deleted(record, shape)))


SHAPES = ["DEL", "PURGE", "sdc_deleted_at", "isdeleted"]


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_deletes_a_project_and_tombstones_its_mappings(st: Stack, shape: str) -> None:
    key, project, uid = synced_project(st)
    st.sandbox.reset_requests()
    assert delete_as(st, key, shape, project) == "deleted"
    assert uid not in st.sandbox.projects
    # The cost of a delete: one GET for the ETag, one DELETE; nothing else reaches V2.
    assert [(r.method, r.status) for r in st.sandbox.requests] == [("GET", 200), ("DELETE", 204)]
    (delete,) = st.v2_requests("DELETE", f"/projects/{uid}")
    assert delete.status == 204
    assert delete.headers["If-Match"]
    assert st.mapping(f"project.sfid.{project['sfid']}") == "!del"
    assert st.mapping(f"project.uid.{uid}") == "!del"
    line = st.outcomes.of(key)[-1].__dict__
    assert (line["outcome"], line["project_uid"], line["sfid"]) == ("deleted", uid, project["sfid"])


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_deletes_a_committee(st: Stack, shape: str) -> None:
    key, committee, uid = synced_committee(st)
    st.sandbox.reset_requests()
    assert delete_as(st, key, shape, committee) == "deleted"
    assert uid not in st.sandbox.committees
    assert [r.status for r in st.v2_requests("DELETE", f"/committees/{uid}")] == [204]
    assert st.mapping(f"committee.sfid.{committee['sfid']}") == "!del"
    assert st.mapping(f"committee.uid.{uid}") == "!del"


def test_an_object_already_gone_from_v2_counts_as_deleted(st: Stack) -> None:
    key, committee, uid = synced_committee(st)
    identity = st.runtime.identity_for(MACHINE_USER)
    assert st.runtime.committees is not None
    current = st.runtime.committees.get(uid, identity)
    st.runtime.committees.delete(uid, current.etag, identity)
    st.sandbox.reset_requests()
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    assert st.outcomes.of(key)[-1].__dict__["reason"] == "already_gone"
    assert [r.status for r in st.v2_requests("GET", f"/committees/{uid}")] == [404]
    assert st.mapping(f"committee.sfid.{committee['sfid']}") == "!del"


def test_a_stale_project_etag_refetches_and_deletes(st: Stack) -> None:
    key, _, uid = synced_project(st)
    st.sandbox.reset_requests()
    st.sandbox.inject_fault(
        "DELETE", f"/projects/{uid}", status=400, times=1, body={"message": "revision mismatch"}
    )
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    assert [r.status for r in st.v2_requests("DELETE", f"/projects/{uid}")] == [400, 204]
    assert st.sandbox.count("GET", f"/projects/{uid}") == 2


def test_a_stale_committee_etag_refetches_and_deletes(st: Stack) -> None:
    key, _, uid = synced_committee(st)
    st.sandbox.reset_requests()
    st.sandbox.inject_fault("DELETE", f"/committees/{uid}", status=412, times=1)
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    assert [r.status for r in st.v2_requests("DELETE", f"/committees/{uid}")] == [412, 204]


def test_a_transient_failure_of_the_delete_is_retried(st: Stack) -> None:
    key, _, uid = synced_project(st)
    st.sandbox.reset_requests()
    st.sandbox.inject_fault("DELETE", f"/projects/{uid}", status=503, times=1)
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    assert [r.outcome for r in st.outcomes.of(key)][-2:] == ["retrying", "deleted"]
    assert [r.status for r in st.v2_requests("DELETE", f"/projects/{uid}")] == [503, 204]


def test_a_refused_delete_is_a_dead_letter_and_keeps_the_mappings(st: Stack) -> None:
    key, project, uid = synced_project(st, crowdfunded=False)
    revision = st.delete(key)
    assert st.sync(key, revision, "DEL") == "delete_refused"
    assert [r.outcome for r in st.outcomes.of(key)][-1:] == ["delete_refused"]
    letter = st.runtime.dead_letters.get(task_id_for(key, revision))
    assert letter is not None
    assert (letter.error_kind, letter.status, letter.attempts) == ("delete_refused", 400, 1)
    assert "only projects whose funding model is Crowdfunding" in letter.error_message
    assert uid in st.sandbox.projects
    assert st.mapping(f"project.sfid.{project['sfid']}") == uid
    assert st.mapping(f"project.uid.{uid}") == project["sfid"]


def test_a_tombstone_blocks_a_re_put_and_undelete_re_creates(
    st: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    key, project, uid = synced_project(st)
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    st.sandbox.reset_requests()
    caplog.clear()
    again = st.put(key, project)
    assert st.sync(key, again) == "skipped"
    assert st.outcomes.of(key)[-1].__dict__["reason"] == "tombstoned"
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and getattr(r, "key", None) == key
    ]
    assert len(warnings) == 1
    assert st.sandbox.requests == []

    assert clear_tombstones(st.runtime.settings.nats_url, MAPPINGS, [key]) == {key: True}
    st.publish(key, again, force=True)  # what `requeue --undelete` sends
    assert st.wait_final(key, again, count=2) == "created"
    new_uid = st.mapping(f"project.sfid.{project['sfid']}")
    assert new_uid not in (None, "!del", uid)
    assert st.mapping(f"project.uid.{new_uid}") == project["sfid"]
    assert st.mapping(f"project.uid.{uid}") == "!del"
    assert st.sandbox.projects[str(new_uid)]["slug"] == project["slug__c"].lower()


def test_a_delete_of_a_never_synced_record_is_skipped(st: Stack) -> None:
    key, project = new_project()
    st.put(key, project)
    assert st.sync(key, st.delete(key), "DEL") == "skipped"
    assert st.outcomes.of(key)[-1].__dict__["reason"] == "not_in_v2"
    soft_key, soft = new_project(_sdc_deleted_at=DELETED_AT)
    assert st.sync(soft_key, st.put(soft_key, soft)) == "skipped"
    assert st.sandbox.requests == []


@pytest.mark.parametrize(
    ("modified", "principal"),
    [("2025-12-01T10:00:00Z", "jdoe"), ("2025-12-01T09:59:58Z", SERVICE_PRINCIPAL)],
)
def test_a_soft_delete_acts_as_its_user_only_within_one_second(
    st: Stack, modified: str, principal: str
) -> None:
    key, project, uid = synced_project(st)
    st.sandbox.reset_requests()
    deleted = {
        **project,
        "_sdc_deleted_at": DELETED_AT,
        "lastmodifiedbyid": PLATFORM_ID,
        "lastmodifieddate": modified,
    }
    assert st.sync(key, st.put(key, deleted)) == "deleted"
    (delete,) = st.v2_requests("DELETE", f"/projects/{uid}")
    assert delete.claims["principal"] == principal


def test_a_hard_delete_acts_as_the_service(st: Stack) -> None:
    key, _, uid = synced_project(st, lastmodifiedbyid=PLATFORM_ID)
    st.sandbox.reset_requests()
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    (delete,) = st.v2_requests("DELETE", f"/projects/{uid}")
    assert delete.claims["principal"] == SERVICE_PRINCIPAL
    assert "X-On-Behalf-Of" not in delete.headers


def test_the_principal_rule_as_a_function() -> None:
    base = {"lastmodifiedbyid": PLATFORM_ID, "_sdc_deleted_at": DELETED_AT}
    assert deleting_user({**base, "lastmodifieddate": "2025-12-01T10:00:01.400+00:00"})
    assert not deleting_user({**base, "lastmodifieddate": "2025-12-01T10:00:01.500+00:00"})
    assert not deleting_user({**base, "lastmodifieddate": None})
    assert not deleting_user({"lastmodifiedbyid": PLATFORM_ID, "isdeleted": True})
    assert deleting_user(None) is None


def test_a_delete_then_a_re_put_with_concurrent_workers_keeps_the_object(st: Stack) -> None:
    key, project, uid = synced_project(st)
    delete_revision = st.delete(key)
    put_revision = st.put(key, {**project, "name": "Back again"})
    st.publish(key, delete_revision, "DEL")
    st.publish(key, put_revision)
    assert st.wait_final(key, delete_revision) == "superseded"
    assert st.wait_final(key, put_revision) == "updated"
    assert st.sandbox.projects[uid]["name"] == "Back again"
    assert st.mapping(f"project.sfid.{project['sfid']}") == uid


def test_a_put_then_a_delete_with_concurrent_workers_deletes(st: Stack) -> None:
    key, project, uid = synced_project(st)
    put_revision = st.put(key, {**project, "name": "Short-lived"})
    delete_revision = st.delete(key)
    st.publish(key, put_revision)
    st.publish(key, delete_revision, "DEL")
    assert st.wait_final(key, put_revision) == "superseded"
    assert st.wait_final(key, delete_revision) == "deleted"
    assert uid not in st.sandbox.projects
    assert st.sandbox.count("PUT", f"/projects/{uid}") == 0


def test_the_budget_holds_a_burst_back_and_dlq_requeue_releases_it(st: Stack) -> None:
    st.runtime.settings = st.runtime.settings.model_copy(update={"sync_delete_budget": 3})
    st.redis.delete(BUDGET_KEY)
    synced = [synced_project(st) for _ in range(5)]
    st.sandbox.reset_requests()
    revisions = [(key, st.delete(key)) for key, _, _ in synced]
    for key, revision in revisions:
        st.publish(key, revision, "DEL")
    results = [st.wait_final(key, revision) for key, revision in revisions]
    assert sorted(results) == ["dead_lettered"] * 2 + ["deleted"] * 3
    assert st.sandbox.count("DELETE", "/projects/") == 3
    store = st.runtime.dead_letters
    held = [
        letter
        for letter in (store.get(task_id_for(k, r)) for k, r in revisions)
        if letter is not None
    ]
    assert [letter.error_kind for letter in held] == ["delete_budget_exceeded"] * 2

    with TaskQueue(st.runtime.settings.redis_url, "celery", DEAD_LETTER_TASK_KWARGS) as queue:
        requeue_letters(queue, st.runtime.dead_letters, held)
    for letter in held:
        assert st.wait_final(letter.key, letter.revision, count=2) == "deleted"
    assert st.sandbox.count("DELETE", "/projects/") == 5
    assert not any(uid in st.sandbox.projects for _, _, uid in synced)
    st.redis.delete(BUDGET_KEY)


def test_with_deletes_off_nothing_is_called(st: Stack) -> None:
    key, project, uid = synced_project(st)
    st.runtime.settings = st.runtime.settings.model_copy(update={"sync_deletes": False})
    st.sandbox.reset_requests()
    assert st.sync(key, st.delete(key), "DEL") == "skipped"
    assert st.outcomes.of(key)[-1].__dict__["reason"] == "deletes_disabled"
    assert st.sandbox.requests == []
    assert uid in st.sandbox.projects
    assert st.mapping(f"project.sfid.{project['sfid']}") == uid


def test_deletes_are_counted_for_status(st: Stack) -> None:
    from tasks.run.outcomes import recent_outcomes

    before = recent_outcomes(st.redis)
    key, _, _ = synced_project(st)
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    never, record = new_project()
    st.put(never, record)
    assert st.sync(never, st.delete(never), "DEL") == "skipped"
    after = recent_outcomes(st.redis)
    assert after.get("deleted", 0) - before.get("deleted", 0) == 1
    assert after.get("skipped:not_in_v2", 0) - before.get("skipped:not_in_v2", 0) == 1
    assert finished(st.outcomes.of(never), st.outcomes.of(never)[-1].__dict__["revision"])
