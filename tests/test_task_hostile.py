"""Hostile records through the real task (issue 13, "What happens today").

The stack of ``test_task_sync`` (real worker, NATS, valkey, strict sandbox):
each test puts one hostile record and checks its defined outcome, that nothing
of it reached V2 when it must not, that no "unexpected error" was logged, and
that the worker still syncs a valid record afterwards.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from sync_core.broker import task_id_for
from tasks.stores.dead_letters import DeadLetter
from tests.test_task_sync import (  # noqa: F401 - fixtures
    MACHINE_USER,
    Stack,
    new_project,
    new_sfid,
    st,
    stack,
)

FALLBACK_PRINCIPAL = "v1_sync_helper@clients"
UNEXPECTED = "unexpected error in the sync task"


class UnexpectedErrors(logging.Handler):
    """Counts the generic error path of ``tasks.run.sync``."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == UNEXPECTED:
            with self._guard:
                self.messages.append(str(record.__dict__.get("key")))


@pytest.fixture
def hs(st: Stack) -> Iterator[Stack]:  # noqa: F811 - the fixture of test_task_sync
    """The stack; the test fails if any run took the generic ``unexpected_error`` path."""
    handler = UnexpectedErrors()
    logger = logging.getLogger("tasks.run.sync")
    logger.addHandler(handler)
    try:
        yield st
    finally:
        logger.removeHandler(handler)
    assert handler.messages == [], f"unexpected errors for {handler.messages}"


def letter_of(st: Stack, key: str, revision: int) -> DeadLetter:  # noqa: F811
    letter = st.runtime.dead_letters.get(task_id_for(key, revision))
    assert letter is not None, f"no dead letter for {key}@{revision}"
    return letter


def assert_still_syncs(st: Stack) -> None:  # noqa: F811
    """A valid record put now is created: the worker's connections are fine."""
    key, project = new_project()
    assert st.sync(key, st.put(key, project)) == "created"
    assert not st.runtime.nats.nc.is_closed


def posts(st: Stack) -> list[Any]:  # noqa: F811
    return st.v2_requests("POST", "/projects")


# --- 1. one record wedges the worker ---------------------------------------------------


@pytest.mark.parametrize("column", ["sfid", "slug__c"])
def test_a_huge_id_or_slug_is_an_invalid_record_and_the_worker_keeps_working(
    hs: Stack, column: str
) -> None:
    key, project = new_project()
    project[column] = "a" * 5000
    revision = hs.put(key, project)
    assert hs.sync(key, revision) == "dead_lettered"
    letter = letter_of(hs, key, revision)
    assert letter.error_kind == "invalid_record"
    assert column in letter.error_message
    assert len(letter.error_message) < 400
    assert posts(hs) == []  # nothing reached V2
    assert_still_syncs(hs)


# --- 2. a record overwrites another object ---------------------------------------------


def test_a_record_whose_sfid_is_another_keys_id_touches_nothing(hs: Stack) -> None:
    key_b, project_b = new_project()
    assert hs.sync(key_b, hs.put(key_b, project_b)) == "created"
    uid_b = hs.mapping(f"project.sfid.{project_b['sfid']}")
    assert uid_b is not None
    hs.sandbox.reset_requests()

    key_a = f"salesforce-project__c.{new_sfid()}"
    revision = hs.put(key_a, {**project_b, "name": "Hijacked"})
    assert hs.sync(key_a, revision) == "dead_lettered"
    letter = letter_of(hs, key_a, revision)
    assert letter.error_kind == "invalid_record"
    assert project_b["sfid"] in letter.error_message
    assert hs.sandbox.projects[uid_b]["name"] == project_b["name"]
    assert [r for r in hs.sandbox.requests if r.method != "GET"] == []


# --- 4. crashes instead of a defined outcome -------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (12, "json"),
        (["0032M00002XyZabQAB"], "json"),
        ({"id": 1}, "json"),
        (b"0032M00002XyZabQAB", "msgpack"),
        ("用户@clients", "json"),
        ("bot\U0001f600@clients", "json"),
        ("x" * 100_000 + "@clients", "json"),
    ],
    ids=["int", "list", "map", "msgpack-bytes", "cjk-machine", "emoji-machine", "100kb-machine"],
)
def test_an_unusable_lastmodifiedbyid_syncs_as_the_service_identity(
    hs: Stack, value: Any, encoding: str
) -> None:
    key, project = new_project(lastmodifiedbyid=value)
    project["lastmodifiedbyid"] = value
    assert hs.sync(key, hs.put(key, project, encoding)) == "created"
    (post,) = posts(hs)
    assert post.claims["principal"] == FALLBACK_PRINCIPAL
    assert "X-On-Behalf-Of" not in post.headers


@pytest.mark.parametrize("username", ["用户", "jos\u00e9", "\U0001f600", "u" * 300])
def test_a_username_headers_cannot_carry_syncs_as_the_service_identity(
    hs: Stack, username: str
) -> None:
    platform_id = "0032M0000" + new_sfid()[9:]
    hs.sandbox.add_user(
        platform_id, {"ID": platform_id, "Username": username, "Email": "u@example.com"}
    )
    key, project = new_project()
    project["lastmodifiedbyid"] = platform_id
    assert hs.sync(key, hs.put(key, project)) == "created"
    (post,) = posts(hs)
    assert post.claims["principal"] == FALLBACK_PRINCIPAL


def test_a_msgpack_timestamp_out_of_range_in_any_field_syncs(hs: Stack) -> None:
    key, project = new_project()
    project["systemmodstamp"] = msgpack.Timestamp(2**62)
    project["start_date__c"] = msgpack.Timestamp(-(2**62))
    assert hs.sync(key, hs.put(key, project, "msgpack")) == "created"
    (post,) = posts(hs)
    assert "formation_date" not in post.json_body


def test_a_value_nested_1000_deep_is_dropped_with_a_warning(hs: Stack) -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(1000):
        inner.append([])
        inner = inner[0]
    key, project = new_project()
    project["project_status__c"] = deep
    project["unmapped"] = deep
    assert hs.sync(key, hs.put(key, project, "msgpack")) == "created"
    assert "stage" not in posts(hs)[0].json_body


# --- 5. smaller ones -------------------------------------------------------------------


@pytest.mark.parametrize("deleted_at", [0, False, []])
def test_a_falsy_sdc_deleted_at_is_not_a_soft_delete(hs: Stack, deleted_at: Any) -> None:
    key, project = new_project(_sdc_deleted_at=deleted_at)
    assert hs.sync(key, hs.put(key, project)) == "created"


def test_ids_with_surrounding_spaces_are_trimmed(hs: Stack) -> None:
    parent_key, parent = new_project()
    assert hs.sync(parent_key, hs.put(parent_key, parent)) == "created"
    key, project = new_project(parent=f" {parent['sfid']}\t")
    sfid = project["sfid"]
    project["sfid"] = f"  {sfid} "
    assert hs.sync(key, hs.put(key, project)) == "created"
    uid = hs.mapping(f"project.sfid.{sfid}")
    assert uid is not None
    assert hs.sandbox.projects[uid]["parent_uid"] == hs.mapping(f"project.sfid.{parent['sfid']}")


@pytest.mark.parametrize(
    "key",
    [
        "salesforce-project__c.a b",
        "salesforce-project__c.a0941000002wBz9AA*",
        "salesforce-project__c.a0941000002wBz9\u00e9AE",
        "salesforce-project__c." + "a" * 5000,
        "platform-collaboration__c.not-a-uuid",
    ],
    ids=["space", "wildcard", "non-ascii", "huge", "committee"],
)
def test_a_key_outside_the_kv_alphabet_is_dead_lettered(hs: Stack, key: str) -> None:
    # As if published raw to the stream: the bridge turns any subject into a task.
    hs.publish(key, 7)
    assert hs.wait_final(key, 7) == "dead_lettered"
    letter = letter_of(hs, key, 7)
    assert letter.error_kind == "invalid_record"
    assert "key" in letter.error_message
    assert len(letter.error_message) < 400
    assert_still_syncs(hs)


# --- 3. a parent cycle reaches V2 ------------------------------------------------------


def _synced(st: Stack, parent: str | None = None) -> tuple[str, dict[str, Any], str]:  # noqa: F811
    key, project = new_project(parent=parent)
    assert st.sync(key, st.put(key, project)) == "created"
    uid = st.mapping(f"project.sfid.{project['sfid']}")
    assert uid is not None
    return key, project, uid


@pytest.mark.parametrize("depth", [1, 2])
def test_reparenting_under_a_descendant_is_a_parent_cycle(hs: Stack, depth: int) -> None:
    key, top, top_uid = _synced(hs)
    _, child, _ = _synced(hs, parent=top["sfid"])
    _, grandchild, _ = _synced(hs, parent=child["sfid"])
    below = child if depth == 1 else grandchild
    hs.sandbox.reset_requests()
    revision = hs.put(key, {**top, "parent_project__c": below["sfid"]})
    assert hs.sync(key, revision) == "dead_lettered"
    letter = letter_of(hs, key, revision)
    assert letter.error_kind == "parent_cycle"
    assert "descendant" in letter.error_message
    assert hs.v2_requests("PUT", f"/projects/{top_uid}") == []
    assert hs.sandbox.projects[top_uid]["parent_uid"] == hs.sandbox.root_uid


def test_reparenting_into_another_branch_is_fine(hs: Stack) -> None:
    _, top, _ = _synced(hs)
    key, child, child_uid = _synced(hs, parent=top["sfid"])
    _, other, other_uid = _synced(hs)
    revision = hs.put(key, {**child, "parent_project__c": other["sfid"]})
    assert hs.sync(key, revision) == "updated"
    assert hs.sandbox.projects[child_uid]["parent_uid"] == other_uid
