"""Hostile V1 input, one rule at a time, without servers (issue 13).

Each test pins one item of "What happens today": before the fix it raised, or
gave the wrong result. The end-to-end versions are in ``test_task_hostile.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgpack
import pytest

from tasks.clients.identity import (
    HEADER_VALUE_MAX_CHARS,
    Identity,
    fallback_identity,
    is_safe_header_name,
    safe_email,
)
from tasks.clients.users import CachedUser, UserDirectory, user_identity
from tasks.errors import InvalidRecord
from tasks.kinds.committees import COMMITTEES
from tasks.kinds.parent_cycles import MAX_PARENT_DEPTH, find_parent_problem
from tasks.kinds.projects import PROJECTS
from tasks.mapping.codec import decode_value, is_soft_delete
from tasks.mapping.committees import map_committee
from tasks.mapping.projects import map_project
from tasks.mapping.record_ids import check_key_id, checked_record, is_v1_id
from tests.v1_examples import COMMITTEE_JSON, PROJECT_JSON, record

SFID = "a0941000002wBz9AAE"
OTHER_SFID = "a0941000002wBz4AAE"
COMMITTEE_ID = "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a"
CLIENT_ID = "v1_sync_helper"
FALLBACK = fallback_identity(CLIENT_ID)


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` levels deep, built without recursion."""
    outer: list[Any] = []
    inner = outer
    for _ in range(depth):
        child: list[Any] = []
        inner.append(child)
        inner = child
    return outer


# --- ids at the edge ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (SFID, True),
        (COMMITTEE_ID, True),
        (COMMITTEE_ID.upper(), True),
        ("a0941000002wBz9", False),  # 15 characters
        ("a0941000002wBz9AAEX", False),
        ("a0941000002wBz9AA-", False),
        ("3f0c2a8e5b1d4c599a0e0b7d8f1e2c3a", False),  # a UUID without hyphens
        ("x" * 5000, False),
        ("", False),
        (12, False),
        (None, False),
        (b"a0941000002wBz9AAE", False),
    ],
)
def test_v1_ids_are_salesforce_ids_or_uuids(value: Any, valid: bool) -> None:
    assert is_v1_id(value) is valid


@pytest.mark.parametrize("key_id", ["x" * 5000, "a b", "a0941000002wBz9", "..", "a*", "é" * 18])
def test_a_key_whose_id_is_not_a_v1_id_is_an_invalid_record(key_id: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        check_key_id(f"salesforce-project__c.{key_id}")
    assert caught.value.kind == "invalid_record"
    assert "key" in caught.value.message
    assert len(caught.value.message) < 400


def test_a_record_whose_sfid_is_not_the_keys_id_is_an_invalid_record() -> None:
    project = record(PROJECT_JSON, sfid=OTHER_SFID)
    with pytest.raises(InvalidRecord) as caught:
        checked_record(PROJECTS.reference_columns, SFID, project)
    assert caught.value.kind == "invalid_record"
    assert OTHER_SFID in caught.value.message
    assert SFID in caught.value.message


def test_a_huge_sfid_is_an_invalid_record_with_a_short_message() -> None:
    project = record(PROJECT_JSON, sfid="a" * 5000)
    with pytest.raises(InvalidRecord) as caught:
        checked_record(PROJECTS.reference_columns, SFID, project)
    assert "sfid" in caught.value.message
    assert len(caught.value.message) < 400


def test_ids_with_surrounding_spaces_are_trimmed() -> None:
    project = record(PROJECT_JSON, sfid=f"  {SFID}\t", parent_project__c=f" {OTHER_SFID} ")
    checked = checked_record(PROJECTS.reference_columns, SFID, project)
    assert checked["sfid"] == SFID
    assert checked["parent_project__c"] == OTHER_SFID
    assert map_project(checked).parent_sfid == OTHER_SFID
    committee = record(COMMITTEE_JSON, sfid=f" {COMMITTEE_ID} ", project_name__c=f"{SFID} ")
    checked = checked_record(COMMITTEES.reference_columns, COMMITTEE_ID, committee)
    assert map_committee(checked).project_sfid == SFID


@pytest.mark.parametrize("parent", ["x" * 5000, 42, ["a"], "a0941000002wBz9"])
def test_a_parent_that_is_not_a_v1_id_is_an_invalid_record(parent: Any) -> None:
    with pytest.raises(InvalidRecord) as caught:
        checked_record(
            PROJECTS.reference_columns, SFID, record(PROJECT_JSON, parent_project__c=parent)
        )
    assert "parent_project__c" in caught.value.message
    assert len(caught.value.message) < 400


def test_a_huge_slug_is_an_invalid_record() -> None:
    with pytest.raises(InvalidRecord) as caught:
        map_project(record(PROJECT_JSON, slug__c="a" * 5000))
    assert "slug__c" in caught.value.message
    assert len(caught.value.message) < 400


# --- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [2**62, -(2**62), 253402300800, -62135596801])
def test_msgpack_timestamps_outside_the_datetime_range_decode(seconds: int) -> None:
    data = msgpack.packb({"sfid": SFID, "lastmodifieddate": msgpack.Timestamp(seconds)})
    decoded = decode_value(data)
    assert decoded["sfid"] == SFID
    assert not isinstance(decoded["lastmodifieddate"], dt.datetime)


def test_msgpack_timestamps_inside_the_range_are_datetimes() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    data = msgpack.packb({"start_date__c": msgpack.Timestamp.from_datetime(when)})
    assert decode_value(data)["start_date__c"] == when


def test_an_out_of_range_timestamp_in_a_mapped_field_is_dropped_with_a_warning() -> None:
    project = record(PROJECT_JSON, start_date__c=msgpack.Timestamp(2**62))
    fields = map_project(decode_value(msgpack.packb(project)))
    assert "formation_date" not in fields.body
    assert any("formation_date" in warning for warning in fields.warnings)


@pytest.mark.parametrize(
    "value", [0, False, [], {}, "", "   ", None, 1.5, msgpack.Timestamp(2**62)]
)
def test_only_timestamps_mark_a_soft_delete(value: Any) -> None:
    assert is_soft_delete({"_sdc_deleted_at": value}) is False


@pytest.mark.parametrize(
    "value", ["2025-11-19T21:05:00+00:00", "x", dt.datetime(2025, 1, 1, tzinfo=dt.UTC)]
)
def test_a_non_empty_string_or_a_datetime_marks_a_soft_delete(value: Any) -> None:
    assert is_soft_delete({"_sdc_deleted_at": value}) is True


@pytest.mark.parametrize("value", [True])
def test_isdeleted_true_is_a_soft_delete(value: Any) -> None:
    assert is_soft_delete({"isdeleted": value}) is True
    assert is_soft_delete({"isdeleted": "true"}) is False


# --- deep nesting --------------------------------------------------------------------


@pytest.mark.parametrize("column", ["project_status__c", "website__c", "start_date__c"])
def test_a_value_nested_1000_deep_is_warned_about_without_recursion_error(column: str) -> None:
    fields = map_project(record(PROJECT_JSON, **{column: nested(1000)}))
    assert fields.warnings
    assert all(len(warning) < 400 for warning in fields.warnings)


def test_a_required_value_nested_1000_deep_is_an_invalid_record_with_a_short_message() -> None:
    with pytest.raises(InvalidRecord) as caught:
        map_project(record(PROJECT_JSON, name=nested(1000)))
    assert len(caught.value.message) < 400


def test_a_committee_value_nested_1000_deep_is_warned_about() -> None:
    fields = map_committee(record(COMMITTEE_JSON, type__c=nested(1000)))
    assert fields.body["category"] == "Other"
    assert all(len(warning) < 400 for warning in fields.warnings)


def test_a_json_value_nested_deeper_than_the_parser_allows_is_undecodable() -> None:
    data = ('{{"sfid": "{}", "x": {}}}'.format(SFID, "[" * 100000 + "]" * 100000)).encode()
    with pytest.raises(InvalidRecord) as caught:
        decode_value(data)
    assert caught.value.kind == "undecodable"


# --- identities and headers ----------------------------------------------------------


class _NoNats:
    """A NATS facade that must not be used: these identities are decided without a lookup."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the lookup used NATS ({name})")


class _NoFetcher:
    def fetch(self, platform_id: str) -> dict[str, Any]:
        raise AssertionError("the lookup called the user service")


def _directory() -> UserDirectory:
    return UserDirectory(_NoNats(), "v1-mappings", _NoFetcher(), client_id=CLIENT_ID)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        12,
        1.5,
        True,
        ["0032M00002XyZabQAB"],
        {"id": "x"},
        b"0032M00002XyZabQAB",
        msgpack.ExtType(1, b"x"),
        nested(1000),
        "用户@clients",
        "bot😀@clients",
        "x" * 100_000 + "@clients",
        "a\r\nX-Injected: 1@clients",
        "two@at@clients",
    ],
)
def test_unusable_lastmodifiedbyid_syncs_as_the_service_identity(value: Any) -> None:
    directory = _directory()
    try:
        assert directory.identity_for(value) == FALLBACK
    finally:
        directory.close()


def test_none_and_blank_lastmodifiedbyid_are_the_service_identity() -> None:
    directory = _directory()
    try:
        assert directory.identity_for(None) == FALLBACK
        assert directory.identity_for("  ") == FALLBACK
        assert directory.identity_for(" bot@clients ").principal == "bot@clients"
    finally:
        directory.close()


@pytest.mark.parametrize("username", ["用户", "josé", "😀", "x" * (HEADER_VALUE_MAX_CHARS + 1)])
def test_usernames_headers_cannot_carry_fall_back(username: str) -> None:
    user = CachedUser("0032M00002XyZabQAB", username, "", "", "", 1000.0)
    assert user_identity(user) is None
    assert is_safe_header_name(username) is False


def test_an_unusable_email_is_left_out_but_the_user_is_kept() -> None:
    user = CachedUser("0032M00002XyZabQAB", "jdoe", "j" * 10_000 + "@example.com", "", "", 1.0)
    assert user_identity(user) == Identity("jdoe", "jdoe", None, "jdoe")
    assert safe_email("jane\n@example.com") is None
    assert safe_email(" jane@example.com ") == "jane@example.com"


def test_every_identity_fits_in_a_latin1_header() -> None:
    for identity in (FALLBACK, Identity("jdoe", "jdoe", None, "jdoe")):
        for value in (identity.principal, identity.sub, identity.on_behalf_of or "x"):
            value.encode("latin-1")
            assert len(value) <= HEADER_VALUE_MAX_CHARS + len("@clients")


# --- parent cycles -------------------------------------------------------------------

ROOT = "root"


def _chain(parents: dict[str, str | None]) -> Any:
    def parent_of(uid: str) -> str | None:
        return parents[uid]

    return parent_of


def test_a_parent_that_is_the_project_itself_is_a_cycle() -> None:
    problem = find_parent_problem("p", "p", _chain({}), ROOT)
    assert problem is not None
    assert problem.kind == "parent_cycle"
    assert "itself" in problem.message


def test_a_parent_below_the_project_is_a_cycle() -> None:
    # root <- p <- c <- g: moving p under g would make p its own ancestor.
    parents = {"g": "c", "c": "p", "p": ROOT}
    problem = find_parent_problem("p", "g", _chain(parents), ROOT)
    assert problem is not None
    assert problem.kind == "parent_cycle"
    assert "g" in problem.message


def test_a_parent_in_another_branch_is_fine() -> None:
    parents = {"q": "r", "r": ROOT, "p": ROOT}
    assert find_parent_problem("p", "q", _chain(parents), ROOT) is None
    assert find_parent_problem("p", ROOT, _chain(parents), ROOT) is None


def test_a_loop_above_the_parent_is_reported() -> None:
    parents = {"a": "b", "b": "a"}
    problem = find_parent_problem("p", "a", _chain(parents), ROOT)
    assert problem is not None
    assert problem.kind == "parent_cycle"


def test_the_walk_is_bounded() -> None:
    calls: list[str] = []

    def parent_of(uid: str) -> str:
        calls.append(uid)
        return f"{uid}x"

    problem = find_parent_problem("p", "a", parent_of, ROOT)
    assert problem is not None
    assert problem.kind == "parent_chain_too_deep"
    assert len(calls) <= MAX_PARENT_DEPTH


def test_decoded_values_round_trip_through_json_logs() -> None:
    # A lone surrogate decodes from JSON; our warnings must still serialise.
    fields = map_project(
        decode_value(
            b'{"sfid": "%s", "name": "n", "slug__c": "s1",'
            b' "project_status__c": "\\ud800"}' % SFID.encode()
        )
    )
    json.dumps(list(fields.warnings))


@pytest.mark.parametrize(
    "identity",
    [
        Identity("用户", "用户", None, "用户"),
        Identity("x" * 100_000 + "@clients", "x" * 100_000, None, "x" * 100_000),
        Identity("jdoe", "jdoe", None, "j\r\nX: 1"),
    ],
)
def test_the_minter_refuses_an_identity_headers_cannot_carry(
    identity: Identity, heimdall_key: Any
) -> None:
    from tasks.clients.tokens import TokenMinter
    from tasks.errors import PermanentError
    from tasks.kinds.projects import PROJECT_AUDIENCE

    minter = TokenMinter(heimdall_key, key_id="kid", jwks_url="http://127.0.0.1:9/jwks")
    with pytest.raises(PermanentError) as caught:
        minter.token(PROJECT_AUDIENCE, identity)
    assert caught.value.kind == "unsafe_identity"
    assert minter.token(PROJECT_AUDIENCE, FALLBACK)
