"""The V2 edit phase of ``make run`` (``sandbox.v2_edits``), its check (``sandbox.edit_check``)
and the summary's V2 -> V1 lines (``sandbox.v2_to_v1_summary``).

The edits must fit the sample set (every object they touch is in V2 and V1 at
the end of the forward phases), be bodies the V2 services take, and turn the
expectations into what V2 holds after them. The check must name the object
of every way an edit can go wrong in V1: a wrong value, a second row for a
created object, a row written back that the forward path did not skip, a V1
write no edit made (a forward echo), a V2 write after the edits that is not
the person's (an echo of a V1 write). ``tests/test_dev_stack.py`` runs them
on the whole stack.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server
from requests.structures import CaseInsensitiveDict

from sandbox.edit_check import StackView, check_edits, v1_write_counts
from sandbox.sample_check import differences
from sandbox.samples import load_expected, stays_in_v2
from sandbox.servers import free_port
from sandbox.traffic import RecordedRequest
from sandbox.v2_edits import (
    EDITS,
    NEW_COMMITTEE,
    PERSON,
    Action,
    AppliedEdit,
    Edit,
    edits_for,
    expected_after_edits,
    merged,
    sfid_of,
)
from sandbox.v2_to_v1_summary import (
    V2ToV1Counts,
    bridge_v2_echoes_skipped,
    v2_events_skipped_as_echo,
    worker_v2_to_v1_outcomes,
)
from sandbox.validation import validate_committee, validate_member
from sync_core.nats_client import SyncNats
from sync_core.sync_state import DEFAULT_STATE_BUCKET, SyncState
from tasks.stores.id_mappings import MappingStore
from tasks.stores.sync_state import StateStore
from tests.conftest import MAPPINGS_BUCKET, OBJECTS_BUCKET

AUTH0_CLIENT = "dev-v1-sync-helper"
PROJECT_UID = "5d1c7a0e-3b7e-4c55-9d3e-6f2a1b0c9e11"
PROJECT = "a0941000002tFe7AAE"
COMMITTEE_SFID = "dabbdd98-a41f-4bf2-995c-bf94d2b5cbb4"
COMMITTEE_KEY = f"platform-collaboration__c.{COMMITTEE_SFID}"
V1_PATH = f"/project-service/v2/projects/{PROJECT}/committees"
UPDATE = Edit(
    Action.UPDATE_COMMITTEE,
    COMMITTEE_KEY,
    {"description": "Edited."},
    {"description__c": "Edited."},
)
CREATE = Edit(
    Action.CREATE_COMMITTEE,
    PROJECT,
    {"name": "Docs WG", "category": "Working Group"},
    {"mailing_list__c": "Docs WG", "type__c": "Working Group"},
    key="v2-edit.committee.docs",
)


# -- the edits and the sample set ---------------------------------------------------------


def test_every_edit_touches_an_object_the_forward_phases_leave_in_v2() -> None:
    keys = load_expected()["keys"]
    made = {edit.key for edit in EDITS if edit.key is not None}
    for edit in EDITS:
        if edit.action is Action.CREATE_COMMITTEE:
            project = next(v for v in keys.values() if v.get("sfid") == edit.target)
            assert stays_in_v2(project), edit.label
        elif edit.target not in made:
            assert stays_in_v2(keys[edit.target]), edit.label
    # Every kind of edit the brief names, and a few of them.
    assert {edit.action for edit in EDITS} == set(Action)
    assert 8 <= len(EDITS) <= 12


def test_the_edits_are_bodies_the_v2_services_take() -> None:
    keys = load_expected()["keys"]
    for edit in EDITS:
        if edit.action is Action.CREATE_COMMITTEE:
            validate_committee({**edit.v2_fields, "project_uid": PROJECT_UID})
        elif edit.action is Action.UPDATE_COMMITTEE:
            fields = {**keys[edit.target]["fields"], "project_uid": PROJECT_UID}
            validate_committee(merged(fields, edit.v2_fields))
        elif edit.action is Action.ADD_MEMBER:
            validate_member(dict(edit.v2_fields))
        elif edit.action is Action.UPDATE_MEMBER:
            validate_member(merged(keys[edit.target]["fields"], edit.v2_fields))


def test_the_expectations_after_the_edits() -> None:
    before = load_expected()
    pristine = json.dumps(before, sort_keys=True)
    after = expected_after_edits(before)
    assert json.dumps(before, sort_keys=True) == pristine  # a copy: the file's are kept
    counts, was = after["counts"], before["counts"]
    assert counts["phases"] == was["phases"] + 1
    assert counts["committees_in_v2"] == was["committees_in_v2"] + 1
    added = len(edits_for((Action.ADD_MEMBER,)))
    removed = len(edits_for((Action.DELETE_MEMBER,)))
    assert counts["members_in_v2"] == was["members_in_v2"] + added - removed
    assert counts["deleted"] == was["deleted"] + removed
    keys = after["keys"]
    updated = keys["platform-collaboration__c.dabbdd98-a41f-4bf2-995c-bf94d2b5cbb4"]
    assert updated["fields"]["description"].endswith("(edited in V2)."), updated
    assert updated["writer"]["principal"] == PERSON.principal
    member = keys["platform-community__c.6c845c3f-6ff6-4f3a-b92b-c998f61d1124"]
    # An object value is merged: the role's and voting's other fields stay.
    assert member["fields"]["voting"] == {"status": "Voting Rep", "start_date": "2022-11-19"}
    gone = keys["platform-community__c.e6807cd0-34c8-4dd7-b0c5-e17990f355d4"]
    assert not stays_in_v2(gone)
    assert gone["delete"]["deleter"]["principal"] == PERSON.principal
    assert keys[NEW_COMMITTEE]["project_sfid"] == edits_for((Action.CREATE_COMMITTEE,))[0].target


def test_the_sample_check_sees_an_edit_that_did_not_happen() -> None:
    """V2 as the forward phases leave it differs from the expectations after the edits."""
    after = expected_after_edits(load_expected())
    state = _v2_state_of(load_expected())
    found = differences(state, after)
    assert any("Marketing Committee" in p and "description" in p for p in found), found
    assert any("Documentation Working Group" in p and "not in the sandbox" in p for p in found)
    assert any("member26.kim@acme.example.com" in p for p in found), found


def _v2_state_of(expected: dict[str, Any]) -> dict[str, Any]:
    """A sandbox state holding exactly what ``expected`` keeps in V2 (no parents checked)."""
    projects: dict[str, Any] = {"root": {"slug": "ROOT"}}
    committees: dict[str, Any] = {}
    members: dict[str, Any] = {}
    project_uid: dict[str, str] = {}
    committee_uid: dict[str, str] = {}
    keys = expected["keys"]
    for want in keys.values():
        if want.get("type") == "project" and stays_in_v2(want):
            project_uid[want["sfid"]] = "p-" + want["sfid"]
            projects["p-" + want["sfid"]] = {**want["fields"], "_last_write": {}}
    for key, want in keys.items():
        if want.get("type") == "committee" and stays_in_v2(want):
            uid = "c-" + sfid_of(key)
            committee_uid[want["sfid"]] = uid
            fields = {**want["fields"], "project_uid": project_uid[want["project_sfid"]]}
            committees[uid] = fields
    for key, want in keys.items():
        if want.get("type") == "committee_member" and stays_in_v2(want):
            uid = "m-" + sfid_of(key)
            members[uid] = {
                **want["fields"],
                "committee_uid": committee_uid[want["committee_sfid"]],
            }
    return {
        "root_uid": "root",
        "projects": projects,
        "committees": committees,
        "members": members,
        "deleted": {},
    }


# -- the check ----------------------------------------------------------------------------


def _request(method: str, path: str, principal: str | None = None, status: int = 200) -> Any:
    return RecordedRequest(
        method=method,
        path=path,
        query={},
        headers=CaseInsensitiveDict(),
        json_body=None,
        claims={"principal": principal} if principal else None,
        status=status,
    )


def _row(**columns: Any) -> dict[str, Any]:
    return {
        "sfid": COMMITTEE_SFID,
        "project_name__c": PROJECT,
        "mailing_list__c": "Marketing Committee",
        "lastmodifiedbyid": f"{AUTH0_CLIENT}@clients",
        **columns,
    }


def _put(nats: SyncNats, key: str, row: dict[str, Any], skipped: bool = True) -> int:
    revision = nats.kv_put(OBJECTS_BUCKET, key, json.dumps(row).encode())
    if skipped:

        def change(state: SyncState) -> SyncState:
            return replace(state, revision=revision, outcome="skipped")

        StateStore(nats, DEFAULT_STATE_BUCKET).modify(key, change)
    return revision


def _view(nats: SyncNats, requests: list[Any], began: int = 1) -> StackView:
    return StackView(
        nats=nats,
        objects_bucket=OBJECTS_BUCKET,
        state_bucket=DEFAULT_STATE_BUCKET,
        mappings=MappingStore(nats, MAPPINGS_BUCKET),
        requests=requests,
        edits_began=began,
        auth0_client_id=AUTH0_CLIENT,
    )


@pytest.fixture
def updated(sync_nats: SyncNats) -> list[Any]:
    """A committee update as it should arrive: its row, its echo skipped, its one PATCH."""
    _put(sync_nats, COMMITTEE_KEY, _row(description__c="Edited."))
    return [
        _request("GET", "/projects/x", "v1_sync_helper@clients"),
        _request("PUT", "/committees/c1", PERSON.principal),
        _request("PATCH", f"{V1_PATH}/{COMMITTEE_SFID}"),
    ]


def test_an_edit_that_arrived_as_it_should_has_no_problem(
    sync_nats: SyncNats, updated: list[Any]
) -> None:
    check = check_edits([AppliedEdit(UPDATE, "c1")], _view(sync_nats, updated))
    assert check.problems == []
    (result,) = check.results
    assert result.v1_key == COMMITTEE_KEY
    assert result.echo_skipped
    assert check.v1_writes == {"created": 0, "updated": 1, "deleted": 0}


def test_a_wrong_v1_value_names_the_edit_and_the_column(
    sync_nats: SyncNats, updated: list[Any]
) -> None:
    _put(sync_nats, COMMITTEE_KEY, _row(description__c="Not edited."))
    check = check_edits([AppliedEdit(UPDATE, "c1")], _view(sync_nats, updated))
    assert check.problems == [
        f"{UPDATE.label}: V1 row {COMMITTEE_KEY} description__c is 'Not edited.', "
        "expected 'Edited.'"
    ]


def test_a_row_the_forward_path_did_not_skip_is_named(
    sync_nats: SyncNats, updated: list[Any]
) -> None:
    revision = _put(sync_nats, COMMITTEE_KEY, _row(description__c="Edited."), skipped=False)
    check = check_edits([AppliedEdit(UPDATE, "c1")], _view(sync_nats, updated))
    (problem,) = check.problems
    assert problem.startswith(f"{UPDATE.label}: the forward path has not skipped V1 row ")
    assert f"revision {revision}" in problem


def test_v1_writes_no_edit_made_are_forward_echoes(sync_nats: SyncNats, updated: list[Any]) -> None:
    echo = f"{V1_PATH}/0802b023-c984-410e-9d36-4022b15113b3"
    requests = [_request("PATCH", echo), *updated, _request("PATCH", f"{V1_PATH}/{COMMITTEE_SFID}")]
    check = check_edits([AppliedEdit(UPDATE, "c1")], _view(sync_nats, requests, began=2))
    assert check.problems == [
        f"V1 API: PATCH {echo} before the V2 edits (a forward echo that was not skipped)",
        f"V1 API: 1 more PATCH {V1_PATH}/{COMMITTEE_SFID} than the edits made (a duplicate, "
        "or an echo that was not skipped)",
    ]


def test_a_missing_v1_call_and_a_v2_write_after_the_edits_are_named(
    sync_nats: SyncNats, updated: list[Any]
) -> None:
    requests = [*updated[:2], _request("PUT", "/committees/c1", "dev-v1-sync-helper@clients")]
    check = check_edits([AppliedEdit(UPDATE, "c1")], _view(sync_nats, requests))
    assert check.problems == [
        f"{UPDATE.label}: no V1 PATCH {V1_PATH}/{COMMITTEE_SFID}",
        "V2: PUT /committees/c1 by dev-v1-sync-helper@clients after the edits (an echo of a "
        "V1 write that was not skipped)",
    ]


def test_a_created_object_must_be_exactly_one_v1_row(sync_nats: SyncNats) -> None:
    mine, twin = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    row = _row(sfid=mine, mailing_list__c="Docs WG", type__c="Working Group")
    _put(sync_nats, f"platform-collaboration__c.{mine}", row)
    MappingStore(sync_nats, MAPPINGS_BUCKET).record_committee(mine, "c-new")
    requests = [_request("GET", "/x"), _request("POST", V1_PATH)]
    check = check_edits([AppliedEdit(CREATE, "c-new")], _view(sync_nats, requests))
    assert check.problems == []
    assert check.results[0].rows == 1

    _put(sync_nats, f"platform-collaboration__c.{twin}", {**row, "sfid": twin})
    check = check_edits([AppliedEdit(CREATE, "c-new")], _view(sync_nats, requests))
    assert check.problems == [
        f"{CREATE.label}: 2 live V1 rows (platform-collaboration__c.{mine}, "
        f"platform-collaboration__c.{twin}), expected exactly platform-collaboration__c.{mine}"
    ]


def test_a_create_v1_has_not_made_yet_is_named(sync_nats: SyncNats) -> None:
    check = check_edits([AppliedEdit(CREATE, "c-new")], _view(sync_nats, []))
    assert check.problems == [f"{CREATE.label}: not created in V1 yet (no V1 id mapped)"]


def test_v1_write_counts_count_answered_writes_by_what_they_did() -> None:
    requests = [
        _request("POST", V1_PATH),
        _request("POST", V1_PATH, status=500),
        _request("PATCH", f"{V1_PATH}/x"),
        _request("DELETE", f"{V1_PATH}/x/members/y"),
        _request("PUT", "/committees/c1", PERSON.principal),
    ]
    assert v1_write_counts(requests) == {"created": 1, "updated": 1, "deleted": 1}


# -- the summary's lines ------------------------------------------------------------------


def test_the_summary_reads_the_workers_v2_to_v1_outcomes_summed_over_types() -> None:
    registry = CollectorRegistry()
    outcomes = Counter(
        "v1sync_v2_to_v1_outcomes", "runs", ["object_type", "outcome"], registry=registry
    )
    outcomes.labels(object_type="committee", outcome="skipped:echo").inc(3)
    outcomes.labels(object_type="committee_member", outcome="skipped:echo").inc(5)
    outcomes.labels(object_type="committee_member", outcome="created").inc()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        counts = worker_v2_to_v1_outcomes(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert counts == {"skipped:echo": 8, "created": 1}
    # A worker that does not answer (restarting): no counts, and the summary says "?".
    assert worker_v2_to_v1_outcomes(f"http://127.0.0.1:{port}/metrics", timeout=1) == {}


def test_the_summary_counts_the_echoes_the_bridge_settled_with_the_workers() -> None:
    registry = CollectorRegistry()
    echoes = Counter(
        "v1sync_bridge_v2_echoes_skipped", "echoes", ["object_type"], registry=registry
    )
    echoes.labels(object_type="committee").inc(30)
    echoes.labels(object_type="committee_member").inc(50)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        bridge = bridge_v2_echoes_skipped(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert bridge == 80
    assert v2_events_skipped_as_echo({"skipped:echo": 8, "created": 1}, bridge) == 88
    assert v2_events_skipped_as_echo({}, bridge) == 80
    # A bridge that does not answer: the count is unknown ("?"), whatever the worker says.
    assert bridge_v2_echoes_skipped(f"http://127.0.0.1:{port}/metrics", timeout=1) is None
    assert v2_events_skipped_as_echo({"skipped:echo": 8}, None) is None


def test_the_summary_lines_of_the_direction() -> None:
    counts = V2ToV1Counts(
        stream="committee_events",
        captured=391,
        v1_writes={"created": 4, "updated": 4, "deleted": 1},
        v2_events_skipped_as_echo=None,
        v1_rows_skipped_as_echo=8,
        v1_rows_written_back=9,
        dead_letters=2,
    )
    assert counts.lines() == [
        "on: 391 V2 indexer events captured in committee_events",
        "V1 writes: 4 created, 4 updated, 1 deleted",
        "echoes skipped: ? V2 events (this service's own writes), 8/9 V1 rows the V1 API "
        "wrote back (by the forward path)",
        "dead letters: 2",
    ]
    assert V2ToV1Counts("s", None, {}, 0, 0, 0, 0).lines() == [
        "on, but the bridge has not created stream s"
    ]
